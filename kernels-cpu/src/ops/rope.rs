//! Rotary position embedding, as ggml computes it (`ggml_rope_ext` with attention factor 1).
//!
//! Pair i (0 ≤ i < n_rot/2) of each head is rotated by θᵢ = freq_scale · pos · base^(−2i/n_rot),
//! with θ computed the way ggml does: `theta_scale = base^(−2/n_rot)` in f32 and
//! `θ ← θ · theta_scale` once per pair, so angles match ggml's to the last bit of that product.
//! With [`Yarn`], θᵢ mixes that interpolated angle with the unscaled one by a ramp over the
//! pairs (ggml's `rope_yarn`), and the rotation scales the pair by `mscale` (ggml's
//! `attn_factor · (1 + 0.1·ln(1/freq_scale))`, which the caller works out per model).
//! - normal mode (llama; the GGUF converter permutes q/k so adjacent pairs are right):
//!   pair i is elements (2i, 2i+1);
//! - NeoX mode (qwen2, gpt-neox, …): pair i is elements (i, i + n_rot/2).
//!
//! Elements from n_rot to head_dim are left as they are.

use super::{Path, PARALLEL_MIN_WORK};
use crate::isa::{self, Isa};
use rayon::prelude::*;
use std::cell::RefCell;

/// A model's RoPE parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// Number of leading dimensions of each head that rotate (even, ≤ head_dim).
    pub n_rot: usize,
    /// `rope.freq_base` (10000 for llama).
    pub freq_base: f32,
    /// `1 / rope.scaling.factor` for linear scaling, else 1.
    pub freq_scale: f32,
    /// NeoX pairs (i, i + n_rot/2) instead of adjacent pairs (2i, 2i+1).
    pub neox: bool,
    /// YaRN context extension (`rope.scaling.type = yarn`), else plain linear scaling.
    pub yarn: Option<Yarn>,
}

/// YaRN's correction range: pairs below `low` keep the unscaled angle, pairs above `high`
/// the interpolated one, and a linear ramp mixes them in between (times `ext_factor`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    pub ext_factor: f32,
    pub low: f32,
    pub high: f32,
    /// Multiplies cos and sin.
    pub mscale: f32,
}

impl Yarn {
    /// ggml's `ggml_rope_yarn_corr_dims` for `n_rot` rotated dims, the training context
    /// `n_ctx_orig` and the usual β_fast = 32, β_slow = 1, with extrapolation factor 1.
    pub fn new(n_rot: usize, n_ctx_orig: usize, freq_base: f32, mscale: f32) -> Yarn {
        let dim = |n_turns: f32| {
            n_rot as f32 * (n_ctx_orig as f32 / (n_turns * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * freq_base.ln())
        };
        Yarn {
            ext_factor: 1.0,
            low: dim(32.0).floor().max(0.0),
            high: dim(1.0).ceil().min(n_rot as f32 - 1.0),
            mscale,
        }
    }

    /// How much of the unscaled angle pair `i` keeps.
    fn mix(&self, i: usize) -> f32 {
        let y = (i as f32 - self.low) / (self.high - self.low).max(0.001);
        (1.0 - y.clamp(0.0, 1.0)) * self.ext_factor
    }
}

impl Rope {
    /// What cos and sin are multiplied by.
    fn magnitude(&self) -> f32 {
        self.yarn.map_or(1.0, |y| y.mscale)
    }

    /// θᵢ for i < n_rot/2 at `pos`, in ggml's order of f32 operations.
    fn angles(&self, pos: usize) -> impl Iterator<Item = f32> + '_ {
        let theta_scale = self.freq_base.powf(-2.0 / self.n_rot as f32);
        let (freq_scale, yarn) = (self.freq_scale, self.yarn);
        let mut theta = pos as f32;
        (0..self.n_rot / 2).map(move |i| {
            let interp = freq_scale * theta;
            let t = match yarn {
                Some(y) => {
                    let mix = y.mix(i);
                    interp * (1.0 - mix) + theta * mix
                }
                None => interp,
            };
            theta *= theta_scale;
            t
        })
    }
}

/// The cos/sin tables of one position, shared by every head of q and of k. In normal mode
/// they are laid out as the rotation reads them: cos = [c₀, c₀, c₁, c₁, …], sin = [−s₀, s₀, …].
struct RopeAngles {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeAngles {
    fn new(rope: &Rope, pos: usize) -> RopeAngles {
        let half = rope.n_rot / 2;
        let (mut cos, mut sin) = (
            Vec::with_capacity(rope.n_rot),
            Vec::with_capacity(rope.n_rot),
        );
        let mag = rope.magnitude();
        for theta in rope.angles(pos) {
            let (s, c) = theta.sin_cos();
            let (s, c) = (s * mag, c * mag);
            if rope.neox {
                cos.push(c);
                sin.push(s);
            } else {
                cos.extend([c, c]);
                sin.extend([-s, s]);
            }
        }
        debug_assert_eq!(cos.len(), if rope.neox { half } else { rope.n_rot });
        RopeAngles { cos, sin }
    }
}

/// Rotates the `n_heads` heads of one token (`x` is `n_heads × head_dim`) at position `pos`.
pub fn rope(x: &mut [f32], n_heads: usize, head_dim: usize, pos: usize, rope: &Rope) {
    rope_isa(isa::active(), x, n_heads, head_dim, pos, rope)
}

pub fn rope_isa(isa: Isa, x: &mut [f32], n_heads: usize, head_dim: usize, pos: usize, rope: &Rope) {
    check(x.len(), 1, n_heads, head_dim, rope);
    match Path::of(isa) {
        Path::Reference => rope_ref(x, n_heads, head_dim, pos, rope),
        Path::Simd(level) => with_angles(rope, pos, |angles| {
            for head in x.chunks_exact_mut(head_dim) {
                let rot = &mut head[..rope.n_rot];
                if rope.neox {
                    let (x0, x1) = rot.split_at_mut(rope.n_rot / 2);
                    level.rotate_halves(x0, x1, &angles.cos, &angles.sin);
                } else {
                    level.rotate_adjacent(rot, &angles.cos, &angles.sin);
                }
            }
        }),
    }
}

/// Runs `f` with the angle table of (`rope`, `pos`). The table of the last position used on
/// this thread is kept: a decode step rotates q and k of every layer at one position, so
/// the sin/cos are computed once per token instead of twice per layer.
fn with_angles(rope: &Rope, pos: usize, f: impl FnOnce(&RopeAngles)) {
    thread_local! {
        static LAST: RefCell<Option<(Rope, usize, RopeAngles)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((r, p, angles)) if r == rope && *p == pos => f(angles),
            _ => {
                let angles = RopeAngles::new(rope, pos);
                f(&angles);
                *last = Some((*rope, pos, angles));
            }
        }
    })
}

/// Rotates a batch: `x` is `n_tokens × n_heads × head_dim`, token t at `start_pos + t`.
pub fn rope_rows(
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    start_pos: usize,
    rope: &Rope,
) {
    rope_rows_isa(
        isa::active(),
        x,
        n_tokens,
        n_heads,
        head_dim,
        start_pos,
        rope,
    )
}

pub fn rope_rows_isa(
    isa: Isa,
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    start_pos: usize,
    rope: &Rope,
) {
    check(x.len(), n_tokens, n_heads, head_dim, rope);
    let token = n_heads * head_dim;
    let one =
        |(t, x): (usize, &mut [f32])| rope_isa(isa, x, n_heads, head_dim, start_pos + t, rope);
    if x.len() >= PARALLEL_MIN_WORK && n_tokens > 1 {
        x.par_chunks_mut(token).enumerate().for_each(one);
    } else {
        x.chunks_mut(token).enumerate().for_each(one);
    }
}

/// The reference twin: one pair at a time, straight from the definition above.
pub fn rope_ref(x: &mut [f32], n_heads: usize, head_dim: usize, pos: usize, rope: &Rope) {
    check(x.len(), 1, n_heads, head_dim, rope);
    let (half, mag) = (rope.n_rot / 2, rope.magnitude());
    for head in x.chunks_exact_mut(head_dim) {
        for (i, theta) in rope.angles(pos).enumerate() {
            let (a, b) = if rope.neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (head[a], head[b]);
            let (cos, sin) = (theta.cos() * mag, theta.sin() * mag);
            head[a] = x0 * cos - x1 * sin;
            head[b] = x0 * sin + x1 * cos;
        }
    }
}

fn check(len: usize, n_tokens: usize, n_heads: usize, head_dim: usize, rope: &Rope) {
    assert!(
        rope.n_rot.is_multiple_of(2) && rope.n_rot <= head_dim,
        "rope: n_rot {} must be even and at most head_dim {head_dim}",
        rope.n_rot
    );
    assert!(
        head_dim > 0 && len == n_tokens * n_heads * head_dim,
        "rope: x has {len} elements, expected {n_tokens} tokens × {n_heads} heads × {head_dim}"
    );
}
