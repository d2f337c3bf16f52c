//! The arithmetic of `perplexity`, apart from the model: negative log-likelihoods and their
//! running perplexity with its ± estimate (computed as llama.cpp's `llama-perplexity`
//! does), log-probabilities stored in 16 bits for a later comparison, and the comparison
//! itself (KL divergence, top-1 agreement, Δp).

/// `log Σ exp(logits)`, in f64, shifted by the largest logit so that nothing overflows.
fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln()
}

/// `log p(token)` under the softmax of `logits`, in f64.
pub fn log_prob(logits: &[f32], token: usize) -> f64 {
    logits[token] as f64 - log_sum_exp(logits)
}

/// Every `log p` of the softmax of `logits`, into `out`: [`log_prob`] of each token.
pub fn log_probs(logits: &[f32], out: &mut [f64]) {
    let log_z = log_sum_exp(logits);
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = l as f64 - log_z;
    }
}

/// Sums of the negative log-likelihoods of the scored tokens and of their squares.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Nll {
    pub sum: f64,
    pub sum_sq: f64,
    pub count: usize,
}

impl Nll {
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum_sq += nll * nll;
        self.count += 1;
    }

    pub fn ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    /// The ± of [`Nll::ppl`]: the standard error of the mean NLL carried through `exp`
    /// (PPL · σ/√(n−1)), as llama.cpp prints it; 0 with fewer than two tokens.
    pub fn ppl_error(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.sum / n;
        let var = self.sum_sq / n - mean * mean;
        if var <= 0.0 {
            return 0.0;
        }
        self.ppl() * (var / (n - 1.0)).sqrt()
    }
}

/// Log-probabilities below this are stored as it: their probabilities (< 1e-13) weigh
/// nothing in a KL divergence, and the floor bounds the 16-bit step.
pub const LOG_PROB_FLOOR: f64 = -30.0;

/// One position's log-probabilities in 16 bits: `lp ≈ min + q · step` with `min` the
/// smallest (floored) value, so the error is at most `step / 2 = |min| / 131070` nats.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed16 {
    pub min: f32,
    pub step: f32,
    pub q: Vec<u16>,
}

impl Packed16 {
    pub fn pack(lp: &[f64]) -> Packed16 {
        let min = lp.iter().fold(0.0f64, |m, &v| m.min(v)).max(LOG_PROB_FLOOR);
        let step = if min < 0.0 { -min / 65535.0 } else { 1.0 };
        let q = lp
            .iter()
            .map(|&v| ((v.max(min) - min) / step).round().clamp(0.0, 65535.0) as u16)
            .collect();
        Packed16 {
            min: min as f32,
            step: step as f32,
            q,
        }
    }

    pub fn unpack(&self, out: &mut [f64]) {
        for (o, &q) in out.iter_mut().zip(&self.q) {
            *o = self.min as f64 + q as f64 * self.step as f64;
        }
    }
}

/// KL divergence `Σ p·(log p − log q)` of the distribution `base` (log-probabilities,
/// as stored) from `this` (log-probabilities of the model being judged).
pub fn kl_divergence(base: &[f64], this: &[f64]) -> f64 {
    base.iter()
        .zip(this)
        .map(|(&b, &t)| b.exp() * (b - t))
        .sum::<f64>()
        .max(0.0)
}

/// Index of the largest value (the first, on ties).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Mean and its standard error.
pub fn mean_and_error(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The value at quantile `q` (0..=1) of `sorted` (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prob_is_the_log_softmax() {
        // softmax([1, 2, 3]) = e^k / (e + e² + e³), written out from the definition.
        let z = 1f64.exp() + 2f64.exp() + 3f64.exp();
        let logits = [1.0f32, 2.0, 3.0];
        for k in 0..3 {
            let want = ((k + 1) as f64).exp().ln() - z.ln();
            assert!((log_prob(&logits, k) - want).abs() < 1e-12);
        }
        let mut all = [0.0; 3];
        log_probs(&logits, &mut all);
        assert!((all.iter().map(|l| l.exp()).sum::<f64>() - 1.0).abs() < 1e-12);
        // Large logits do not overflow.
        assert!((log_prob(&[1000.0, 1000.0], 0) - 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn ppl_and_its_error_follow_the_definitions() {
        let nlls = [2.0, 2.5, 1.5, 3.0];
        let mut s = Nll::default();
        nlls.iter().for_each(|&x| s.add(x));
        let mean: f64 = nlls.iter().sum::<f64>() / 4.0;
        assert!((s.ppl() - mean.exp()).abs() < 1e-12);
        // Population variance over n − 1, as llama.cpp divides.
        let var = nlls.iter().map(|x| x * x).sum::<f64>() / 4.0 - mean * mean;
        let want = mean.exp() * (var / 3.0).sqrt();
        assert!((s.ppl_error() - want).abs() < 1e-12);
        let mut one = Nll::default();
        one.add(1.0);
        assert_eq!(one.ppl_error(), 0.0);
    }

    #[test]
    fn sixteen_bits_hold_log_probs_to_half_a_step() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 * 0.3).collect();
        let mut lp = vec![0.0; logits.len()];
        log_probs(&logits, &mut lp);
        let p = Packed16::pack(&lp);
        let mut back = vec![0.0; lp.len()];
        p.unpack(&mut back);
        let half_step = p.step as f64 / 2.0 + 1e-6;
        for (a, b) in lp.iter().zip(&back) {
            assert!((a.max(LOG_PROB_FLOOR) - b).abs() <= half_step, "{a} {b}");
        }
    }

    #[test]
    fn kl_divergence_from_the_definition() {
        let p = [0.5f64, 0.25, 0.25];
        let q = [0.25f64, 0.5, 0.25];
        let (lp, lq): (Vec<f64>, Vec<f64>) = (
            p.iter().map(|x| x.ln()).collect(),
            q.iter().map(|x| x.ln()).collect(),
        );
        let want = 0.5 * (0.5f64 / 0.25).ln() + 0.25 * (0.25f64 / 0.5).ln();
        assert!((kl_divergence(&lp, &lq) - want).abs() < 1e-12);
        assert_eq!(kl_divergence(&lp, &lp), 0.0);
        assert_eq!(argmax(&lq), 1);
        let (m, e) = mean_and_error(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((e - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
    }
}
