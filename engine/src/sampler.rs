//! Picks the next token from the logits: repetition penalty, then top-k, top-p, min-p and
//! temperature (llama.cpp's default order), then a draw from a seeded generator.
//! A temperature of 0 (or below) is greedy: the highest logit after the penalty wins.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1.0 disables.
    pub top_p: f32,
    /// 0.0 disables.
    pub min_p: f32,
    /// 1.0 disables.
    pub repeat_penalty: f32,
    /// How many of the last tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerParams {
    /// llama.cpp's defaults.
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerParams {
    pub fn greedy() -> Self {
        SamplerParams {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

pub struct Sampler {
    params: SamplerParams,
    rng: ChaCha20Rng,
    /// Reused between calls: (token, logit) candidates.
    cand: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Sampler {
        let rng = ChaCha20Rng::seed_from_u64(params.seed);
        Sampler {
            params,
            rng,
            cand: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// The next token given `logits` (one per vocabulary entry) and the tokens so far
    /// (prompt and generated), whose tail the repetition penalty looks at.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        self.cand.clear();
        self.cand
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let tail = &history[history.len().saturating_sub(p.repeat_last_n)..];
            // Each distinct token is penalised once, however often it occurs.
            let mut seen: Vec<u32> = tail.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(c) = self.cand.get_mut(t as usize) {
                    c.1 = if c.1 > 0.0 {
                        c.1 / p.repeat_penalty
                    } else {
                        c.1 * p.repeat_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&self.cand);
        }

        // Candidates sorted by logit, highest first, ties by lower id (deterministic).
        let by_logit =
            |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < self.cand.len() {
            self.cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            self.cand.truncate(p.top_k);
        }
        self.cand.sort_unstable_by(by_logit);

        // Probabilities at temperature 1 decide top-p and min-p (as llama.cpp does).
        let max = self.cand[0].1;
        let mut probs: Vec<f32> = self.cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= sum);

        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, q) in probs.iter().enumerate() {
                cum += q;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = p.min_p * probs[0];
            keep = keep.min(probs.iter().take_while(|&&q| q >= floor).count().max(1));
        }
        self.cand.truncate(keep);

        let inv_t = 1.0 / p.temperature;
        let mut weights: Vec<f32> = self
            .cand
            .iter()
            .map(|c| ((c.1 - max) * inv_t).exp())
            .collect();
        let total: f32 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let r: f32 = self.rng.random();
        let mut acc = 0.0;
        for (c, w) in self.cand.iter().zip(&weights) {
            acc += w;
            if r < acc {
                return c.0;
            }
        }
        self.cand[self.cand.len() - 1].0
    }
}

/// The highest logit; the lowest id among equals.
fn argmax(cand: &[(u32, f32)]) -> u32 {
    let mut best = cand[0];
    for &c in &cand[1..] {
        if c.1 > best.1 {
            best = c;
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        (0..100).map(|i| ((i * 37 % 100) as f32) * 0.05).collect()
    }

    #[test]
    fn greedy_takes_the_max() {
        let l = logits();
        let best = l
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        assert_eq!(Sampler::new(SamplerParams::greedy()).sample(&l, &[]), best);
    }

    #[test]
    fn repeat_penalty_moves_greedy_off_a_repeated_token() {
        let mut l = vec![0.0f32; 10];
        l[3] = 2.0;
        l[5] = 1.9;
        let p = SamplerParams {
            repeat_penalty: 1.1,
            ..SamplerParams::greedy()
        };
        assert_eq!(Sampler::new(p.clone()).sample(&l, &[]), 3);
        // 2.0 / 1.1 < 1.9
        assert_eq!(Sampler::new(p).sample(&l, &[3, 3]), 5);
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let l = logits();
        let params = |seed| SamplerParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(params(seed));
            (0..50).map(|_| s.sample(&l, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_one_is_greedy_and_min_p_cuts_the_tail() {
        let l = logits();
        let best = Sampler::new(SamplerParams::greedy()).sample(&l, &[]);
        let mut s = Sampler::new(SamplerParams {
            top_k: 1,
            temperature: 1.0,
            ..Default::default()
        });
        assert!((0..20).all(|_| s.sample(&l, &[]) == best));
        // min_p = 1: only tokens as likely as the best survive.
        let mut s = Sampler::new(SamplerParams {
            top_k: 0,
            min_p: 1.0,
            temperature: 1.0,
            ..Default::default()
        });
        assert!((0..20).all(|_| s.sample(&l, &[]) == best));
    }

    #[test]
    fn top_p_keeps_only_the_head() {
        // Two tokens hold ~all the mass; top_p 0.5 keeps only the first.
        let mut l = vec![-30.0f32; 50];
        l[10] = 5.0;
        l[20] = 4.0;
        let mut s = Sampler::new(SamplerParams {
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            temperature: 1.0,
            ..Default::default()
        });
        assert!((0..50).all(|_| s.sample(&l, &[]) == 10));
        let mut s = Sampler::new(SamplerParams {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temperature: 1.0,
            seed: 3,
            ..Default::default()
        });
        let draws: Vec<u32> = (0..200).map(|_| s.sample(&l, &[])).collect();
        assert!(draws.contains(&10) && draws.contains(&20));
    }
}
