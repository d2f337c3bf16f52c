//! A mixture-of-experts router's choice for one token, as llama.cpp's `build_moe_ffn`
//! makes it: the router's logits become probabilities (softmax or sigmoid); a selection
//! bias, if the model has one (DeepSeek-V3), is added to choose experts but not to weight
//! them; with expert groups only the best groups (each scored by the sum of its two best
//! experts) stay eligible; the `k` best experts are chosen, ties to the lower index; their
//! weights are their probabilities, normalised to sum 1 if the model says so (the sum
//! clamped below at 2⁻¹⁴, as llama.cpp does) and multiplied by a scale.

use super::Path;
use crate::isa::{self, Isa};

/// How logits become probabilities (`expert_gating_func`: 1 softmax, 2 sigmoid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    Softmax,
    Sigmoid,
}

/// A model's routing rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Router {
    pub n_expert: usize,
    /// Experts chosen per token (`k`).
    pub n_used: usize,
    pub gating: Gating,
    /// Normalise the chosen weights to sum 1 (`expert_weights_norm`).
    pub norm: bool,
    /// Multiplies the weights (`expert_weights_scale`; 0 or 1 leave them).
    pub scale: f32,
    /// `(groups, groups used)`: experts in `groups` equal groups, only the best `groups
    /// used` of them eligible (DeepSeek-V3's `expert_group_count`, `…_used_count`).
    pub groups: Option<(usize, usize)>,
}

/// The smallest sum a normalisation divides by (f16's smallest normal number, 2⁻¹⁴: exact
/// in f32, written as llama.cpp writes it).
#[allow(clippy::excessive_precision)]
const MIN_WEIGHT_SUM: f32 = 6.103515625e-5;

/// Chooses `r.n_used` experts for one token from its router `logits` (`r.n_expert`,
/// overwritten with the probabilities) and the selection `bias` if any: `ids` gets the
/// experts in order of choice, `weights` their weights.
pub fn route(
    logits: &mut [f32],
    bias: Option<&[f32]>,
    r: &Router,
    ids: &mut [u32],
    weights: &mut [f32],
) {
    route_isa(isa::active(), logits, bias, r, ids, weights)
}

pub fn route_isa(
    isa: Isa,
    logits: &mut [f32],
    bias: Option<&[f32]>,
    r: &Router,
    ids: &mut [u32],
    weights: &mut [f32],
) {
    check(logits.len(), bias, r, ids.len(), weights.len());
    match Path::of(isa) {
        Path::Reference => route_ref(logits, bias, r, ids, weights),
        Path::Simd(_) => {
            match r.gating {
                Gating::Softmax => super::softmax_isa(isa, logits),
                Gating::Sigmoid => logits.iter_mut().for_each(|x| *x = sigmoid(*x)),
            }
            let mut sel: Vec<f32> = match bias {
                Some(b) => logits.iter().zip(b).map(|(p, b)| p + b).collect(),
                None => logits.to_vec(),
            };
            if let Some((g, used)) = r.groups {
                mask_groups(&mut sel, g, used);
            }
            // k passes of a first-maximum scan: k · n compares, for k ≤ 8 and n ≤ 256 less
            // than sorting.
            for id in ids.iter_mut() {
                let mut best = 0;
                for (e, &v) in sel.iter().enumerate() {
                    if v > sel[best] {
                        best = e;
                    }
                }
                *id = best as u32;
                sel[best] = f32::NEG_INFINITY;
            }
            finish(logits, r, ids, weights);
        }
    }
}

/// The reference twin: probabilities with [`super::softmax_ref`], a stable sort of all
/// experts by selection score, groups by sorting too.
pub fn route_ref(
    logits: &mut [f32],
    bias: Option<&[f32]>,
    r: &Router,
    ids: &mut [u32],
    weights: &mut [f32],
) {
    check(logits.len(), bias, r, ids.len(), weights.len());
    match r.gating {
        Gating::Softmax => super::softmax_ref(logits),
        Gating::Sigmoid => logits.iter_mut().for_each(|x| *x = sigmoid(*x)),
    }
    let sel: Vec<f32> = (0..r.n_expert)
        .map(|e| logits[e] + bias.map_or(0.0, |b| b[e]))
        .collect();
    let mut eligible = vec![true; r.n_expert];
    if let Some((g, used)) = r.groups {
        let per = r.n_expert / g;
        let score = |grp: usize| {
            let mut v = sel[grp * per..(grp + 1) * per].to_vec();
            v.sort_by(|a, b| b.total_cmp(a));
            v[0] + v.get(1).copied().unwrap_or(0.0)
        };
        let mut order: Vec<usize> = (0..g).collect();
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
        for &grp in &order[used..] {
            eligible[grp * per..(grp + 1) * per].fill(false);
        }
    }
    let mut order: Vec<usize> = (0..r.n_expert).filter(|&e| eligible[e]).collect();
    order.sort_by(|&a, &b| sel[b].total_cmp(&sel[a]));
    for (id, &e) in ids.iter_mut().zip(&order) {
        *id = e as u32;
    }
    finish(logits, r, ids, weights);
}

/// Leaves only the best `used` of `groups` groups eligible (the rest at −∞).
fn mask_groups(sel: &mut [f32], groups: usize, used: usize) {
    let per = sel.len() / groups;
    let score = |s: &[f32]| {
        let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &v in s {
            if v > a {
                (a, b) = (v, a);
            } else if v > b {
                b = v;
            }
        }
        if per == 1 {
            a
        } else {
            a + b
        }
    };
    let scores: Vec<f32> = sel.chunks(per).map(score).collect();
    let mut kept = vec![false; groups];
    for _ in 0..used {
        let best = (0..groups)
            .filter(|&g| !kept[g])
            .fold(None, |b: Option<usize>, g| match b {
                Some(b) if scores[b] >= scores[g] => Some(b),
                _ => Some(g),
            });
        if let Some(b) = best {
            kept[b] = true;
        }
    }
    for (g, chunk) in sel.chunks_mut(per).enumerate() {
        if !kept[g] {
            chunk.fill(f32::NEG_INFINITY);
        }
    }
}

/// The chosen experts' weights from the probabilities `p`.
fn finish(p: &[f32], r: &Router, ids: &[u32], weights: &mut [f32]) {
    for (w, &id) in weights.iter_mut().zip(ids) {
        *w = p[id as usize];
    }
    if r.norm {
        let sum: f32 = weights.iter().sum();
        let sum = sum.max(MIN_WEIGHT_SUM);
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    if r.scale != 0.0 && r.scale != 1.0 {
        weights.iter_mut().for_each(|w| *w *= r.scale);
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn check(n: usize, bias: Option<&[f32]>, r: &Router, ids: usize, weights: usize) {
    assert!(
        n == r.n_expert && bias.is_none_or(|b| b.len() == n),
        "route: {n} logits (and bias) for a router of {} experts",
        r.n_expert
    );
    assert!(
        ids == r.n_used && weights == r.n_used && r.n_used <= r.n_expert,
        "route: {ids} ids and {weights} weights for {} chosen of {}",
        r.n_used,
        r.n_expert
    );
    if let Some((g, used)) = r.groups {
        assert!(
            g > 0 && n.is_multiple_of(g) && used > 0 && used <= g && used * (n / g) >= r.n_used,
            "route: {used} of {g} groups of {n} experts cannot hold {} choices",
            r.n_used
        );
    }
}
