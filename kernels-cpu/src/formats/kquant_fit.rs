//! Choosing K-quant scales: our own search, written from the format definitions.
//!
//! A K-quant super-block of 256 holds sub-blocks (8 of 32 or 16 of 16), each with an integer
//! scale (and for Q2_K/Q4_K/Q5_K an integer min) that multiplies one f16 super-scale `d`
//! (and `dmin`). We fit in two levels:
//!
//! 1. Per sub-block, the real scale (and offset) minimising the squared error: scan a
//!    handful of candidate scales around the one that spans the range, round each element
//!    to the grid, solve the least-squares scale (and offset) for those integers, keep the
//!    best; then alternate re-rounding and re-solving (each step cannot raise the error).
//! 2. Per super-block, quantize those scales against `d = largest / levels`, round `d` to
//!    f16, re-round every element against the scales the decoder will really compute, then
//!    refine `d` (and `dmin`) by least squares over the whole super-block while that lowers
//!    the error.
//!
//! The error is plain squared error: the quantity the round-trip tests measure.

use half::f16;

use super::blocks::QK_K;

/// Candidate grid spans, in steps of a level, tried around the nominal span.
const SPAN_STEPS: [f32; 9] = [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0];
/// Re-round / re-solve rounds after the scan.
const REFINE_ROUNDS: usize = 3;

/// Solve / re-round rounds of the last, projection-preserving step. Why that step: the
/// least-squares fit leaves an error e orthogonal to the quantized block y, so
/// Σ e·x = −Σ e²: the block shrinks toward zero by the share of its energy it loses
/// (about 4 % at Q2_K, 0.2 % at Q4_K). Every dot product with activations that correlate
/// with the weights then comes out small by that share — on ggml's test data Q2_K's dot
/// error was 0.046, over ggml's limit. Choosing the super-scales so that Σ e·x = 0 (and,
/// with mins, Σ e·m = 0) removes that bias for a slightly larger squared error
/// (√(1/(1 − 4 %)) ≈ 2 % more at Q2_K).
const PRESERVE_ROUNDS: usize = 2;

/// `x ≈ scale·q − offset`, q in 0..=nmax, scale ≥ 0, offset ≥ 0.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Affine {
    scale: f32,
    offset: f32,
}

/// The integer nearest `t` within `lo..=hi` (integral bounds; halves round up; NaN → `lo`).
///
/// Clamping first makes `t − lo + 0.5` non-negative, so truncation rounds it, and avoids
/// the library call `f32::round` costs on baseline x86-64: this is the quantizer's hot loop.
#[inline]
fn nearest_in(t: f32, lo: f32, hi: f32) -> i32 {
    (t.max(lo).min(hi) - lo + 0.5) as i32 + lo as i32
}

/// Lanes of independent partial sums: lets the compiler keep a whole SIMD register of
/// accumulators (sub-blocks are 16 or 32 long, multiples of this).
const LANES: usize = 8;

fn round_affine(x: &[f32], a: Affine, nmax: u8, q: &mut [u8]) {
    let inv = if a.scale > 0.0 { 1.0 / a.scale } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = nearest_in((v + a.offset) * inv, 0.0, f32::from(nmax)) as u8;
    }
}

fn affine_error(x: &[f32], a: Affine, q: &[u8]) -> f32 {
    x.iter()
        .zip(q)
        .map(|(&v, &q)| {
            let e = a.scale * f32::from(q) - a.offset - v;
            e * e
        })
        .sum()
}

/// n, Σx and Σx² of one sub-block.
struct DataSums {
    n: f32,
    x: f32,
    xx: f32,
}

impl DataSums {
    fn of(x: &[f32]) -> Self {
        DataSums {
            n: x.len() as f32,
            x: x.iter().sum(),
            xx: x.iter().map(|v| v * v).sum(),
        }
    }
}

/// Σq, Σq² and Σq·x of one rounding of a sub-block: all a least-squares fit needs, so a
/// candidate costs one pass and stores nothing.
#[derive(Default)]
struct QuantSums {
    q: f32,
    qq: f32,
    qx: f32,
}

fn affine_sums(x: &[f32], a: Affine, nmax: u8) -> QuantSums {
    let inv = if a.scale > 0.0 { 1.0 / a.scale } else { 0.0 };
    let (mut sq, mut sqq, mut sqx) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
    for chunk in x.chunks_exact(LANES) {
        for l in 0..LANES {
            let v = chunk[l];
            let q = nearest_in((v + a.offset) * inv, 0.0, f32::from(nmax)) as f32;
            sq[l] += q;
            sqq[l] += q * q;
            sqx[l] += q * v;
        }
    }
    QuantSums {
        q: sq.iter().sum(),
        qq: sqq.iter().sum(),
        qx: sqx.iter().sum(),
    }
}

/// Least-squares scale and offset for the integers behind `s`, the offset kept ≥ 0 (the
/// formats subtract a non-negative min), with the squared error. At the optimum the error
/// e = y − x is orthogonal to q and to 1, so Σe² = −Σe·x = Σx² − scale·Σqx + offset·Σx.
fn solve_affine(d: &DataSums, s: &QuantSums) -> Option<(Affine, f32)> {
    let det = d.n * s.qq - s.q * s.q;
    if det > 0.0 {
        let scale = (d.n * s.qx - s.q * d.x) / det;
        let offset = (s.q * s.qx - s.qq * d.x) / det;
        if scale > 0.0 && offset >= 0.0 {
            let err = d.xx - scale * s.qx + offset * d.x;
            return Some((Affine { scale, offset }, err.max(0.0)));
        }
    }
    // The offset wants to be negative (or all q are equal): pin it at 0.
    (s.qq > 0.0 && s.qx > 0.0).then(|| {
        let scale = s.qx / s.qq;
        let a = Affine { scale, offset: 0.0 };
        (a, (d.xx - scale * s.qx).max(0.0))
    })
}

/// The best `x ≈ scale·q − offset` for one sub-block.
fn fit_affine(x: &[f32], nmax: u8) -> Affine {
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(lo, |m, &v| m.max(v));
    let mut best = Affine {
        scale: (hi - lo) / f32::from(nmax),
        offset: -lo,
    };
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return best; // all equal and ≤ 0 (or NaN): the offset alone is exact
    }
    let data = DataSums::of(x);
    let mut best_err = f32::INFINITY;
    for step in SPAN_STEPS {
        let cand = Affine {
            scale: (hi - lo) / (f32::from(nmax) + step),
            offset: -lo,
        };
        if let Some((a, err)) = solve_affine(&data, &affine_sums(x, cand, nmax)) {
            if err < best_err {
                (best, best_err) = (a, err);
            }
        }
    }
    for _ in 0..REFINE_ROUNDS {
        match solve_affine(&data, &affine_sums(x, best, nmax)) {
            Some((a, err)) if err < best_err => (best, best_err) = (a, err),
            _ => break,
        }
    }
    best
}

fn round_signed(x: &[f32], scale: f32, qlo: i8, qhi: i8, q: &mut [i8]) {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = nearest_in(v * inv, f32::from(qlo), f32::from(qhi)) as i8;
    }
}

fn signed_sums(x: &[f32], scale: f32, qlo: i8, qhi: i8) -> QuantSums {
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let (mut sqq, mut sqx) = ([0.0f32; LANES], [0.0f32; LANES]);
    for chunk in x.chunks_exact(LANES) {
        for l in 0..LANES {
            let v = chunk[l];
            let q = nearest_in(v * inv, f32::from(qlo), f32::from(qhi)) as f32;
            sqq[l] += q * q;
            sqx[l] += q * v;
        }
    }
    QuantSums {
        q: 0.0,
        qq: sqq.iter().sum(),
        qx: sqx.iter().sum(),
    }
}

/// Least-squares scale for the integers behind `s` and its squared error
/// (Σe² = Σx² − scale·Σqx at the optimum).
fn solve_signed(d: &DataSums, s: &QuantSums) -> Option<(f32, f32)> {
    (s.qq > 0.0).then(|| {
        let scale = s.qx / s.qq;
        (scale, (d.xx - scale * s.qx).max(0.0))
    })
}

/// The best `x ≈ scale·q` for one sub-block, q in qlo..=qhi (qlo < 0 < qhi).
fn fit_signed(x: &[f32], qlo: i8, qhi: i8) -> f32 {
    let max = signed_extreme(x);
    if max == 0.0 || max.is_nan() {
        return 0.0;
    }
    let data = DataSums::of(x);
    let (mut best, mut best_err) = (0.0f32, data.xx);
    // Map the extreme element to either end of the (asymmetric) integer range.
    for end in [f32::from(qlo), f32::from(qhi)] {
        for step in SPAN_STEPS {
            let levels = end + end.signum() * step;
            if let Some((s, err)) = solve_signed(&data, &signed_sums(x, max / levels, qlo, qhi)) {
                if err < best_err {
                    (best, best_err) = (s, err);
                }
            }
        }
    }
    for _ in 0..REFINE_ROUNDS {
        match solve_signed(&data, &signed_sums(x, best, qlo, qhi)) {
            Some((s, err)) if err < best_err => (best, best_err) = (s, err),
            _ => break,
        }
    }
    best
}

/// The element of largest magnitude with its sign (the first on ties).
fn signed_extreme(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m })
}

/// A quantized super-block of a format with scales and mins (Q2_K, Q4_K, Q5_K):
/// y = (d·sc_j)·q − (dmin·m_j).
pub(crate) struct AffineBlock<const S: usize> {
    pub d: f16,
    pub dmin: f16,
    pub sc: [u8; S],
    pub m: [u8; S],
    pub q: [u8; QK_K],
}

impl<const S: usize> AffineBlock<S> {
    /// Quantizes 256 values with q in 0..=nmax and scales/mins in 0..=nsc.
    pub fn quantize(x: &[f32], nmax: u8, nsc: u8) -> Self {
        let len = QK_K / S;
        let mut fits = [Affine {
            scale: 0.0,
            offset: 0.0,
        }; S];
        for (fit, x) in fits.iter_mut().zip(x.chunks_exact(len)) {
            *fit = fit_affine(x, nmax);
        }
        let max_scale = fits.iter().fold(0.0f32, |m, f| m.max(f.scale));
        let max_offset = fits.iter().fold(0.0f32, |m, f| m.max(f.offset));
        let levels = f32::from(nsc);
        let to_int = |v: f32, step: f32| {
            if step > 0.0 {
                (v / step).round().clamp(0.0, levels) as u8
            } else {
                0
            }
        };
        let (d, dmin) = (max_scale / levels, max_offset / levels);
        let mut block = AffineBlock {
            d: f16::from_f32(d),
            dmin: f16::from_f32(dmin),
            sc: fits.map(|f| to_int(f.scale, d)),
            m: fits.map(|f| to_int(f.offset, dmin)),
            q: [0; QK_K],
        };
        let mut err = block.round_all(x, nmax);
        for _ in 0..REFINE_ROUNDS {
            let Some((d, dmin)) = block.solve_super_scales(x) else {
                break;
            };
            let mut next = AffineBlock {
                d: f16::from_f32(d),
                dmin: f16::from_f32(dmin),
                ..block
            };
            let next_err = next.round_all(x, nmax);
            if next_err >= err {
                break;
            }
            (block, err) = (next, next_err);
        }
        for round in 0..PRESERVE_ROUNDS {
            let Some((d, dmin)) = block.solve_projection_preserving(x) else {
                break;
            };
            (block.d, block.dmin) = (f16::from_f32(d), f16::from_f32(dmin));
            if round + 1 < PRESERVE_ROUNDS {
                block.round_all(x, nmax);
            }
        }
        block
    }

    /// Re-rounds every element against the scales the decoder computes; the squared error.
    fn round_all(&mut self, x: &[f32], nmax: u8) -> f32 {
        let len = QK_K / S;
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        let mut err = 0.0;
        for j in 0..S {
            let a = Affine {
                scale: d * f32::from(self.sc[j]),
                offset: dmin * f32::from(self.m[j]),
            };
            let (x, q) = (&x[j * len..][..len], &mut self.q[j * len..][..len]);
            round_affine(x, a, nmax, q);
            err += affine_error(x, a, q);
        }
        err
    }

    /// Sums over the super-block for x ≈ d·u − dmin·w, u = sc_j·q, w = m_j.
    fn sums(&self, x: &[f32]) -> AffineSums {
        let len = QK_K / S;
        let mut s = AffineSums::default();
        for (i, &v) in x.iter().enumerate() {
            let j = i / len;
            let u = f64::from(self.sc[j]) * f64::from(self.q[i]);
            let w = f64::from(self.m[j]);
            let v = f64::from(v);
            s.uu += u * u;
            s.uw += u * w;
            s.ww += w * w;
            s.ux += u * v;
            s.wx += w * v;
            s.xx += v * v;
        }
        s
    }

    /// Least-squares (d, dmin) for the fixed integer scales, mins and quants.
    fn solve_super_scales(&self, x: &[f32]) -> Option<(f32, f32)> {
        let s = self.sums(x);
        // Minimise Σ(d·u − dmin·w − x)²: [uu −uw; uw −ww]·[d; dmin] = [ux; wx].
        let det = s.uw * s.uw - s.uu * s.ww;
        if det != 0.0 {
            let d = (s.uw * s.wx - s.ux * s.ww) / det;
            let dmin = (s.uu * s.wx - s.uw * s.ux) / det;
            if d > 0.0 && dmin >= 0.0 {
                return Some((d as f32, dmin as f32));
            }
        }
        (s.uu > 0.0 && s.ux > 0.0).then(|| ((s.ux / s.uu) as f32, 0.0))
    }

    /// (d, dmin) for the fixed integers that keep the block's projection on x and on the
    /// min pattern: Σ e·x = 0 and Σ e·w = 0 for e = y − x (see [`PRESERVE_ROUNDS`]).
    fn solve_projection_preserving(&self, x: &[f32]) -> Option<(f32, f32)> {
        let s = self.sums(x);
        // d·ux − dmin·wx = xx and d·uw − dmin·ww = wx.
        let det = s.uw * s.wx - s.ux * s.ww;
        if det != 0.0 {
            let d = (s.wx * s.wx - s.xx * s.ww) / det;
            let dmin = (s.ux * s.wx - s.uw * s.xx) / det;
            if d > 0.0 && dmin >= 0.0 {
                return Some((d as f32, dmin as f32));
            }
        }
        (s.ux > 0.0 && s.ww == 0.0).then(|| ((s.xx / s.ux) as f32, 0.0))
    }
}

#[derive(Default)]
struct AffineSums {
    uu: f64,
    uw: f64,
    ww: f64,
    ux: f64,
    wx: f64,
    xx: f64,
}

/// A quantized super-block of a format with signed scales only (Q3_K, Q6_K):
/// y = (d·sc_j)·q.
pub(crate) struct SignedBlock<const S: usize> {
    pub d: f16,
    pub sc: [i8; S],
    pub q: [i8; QK_K],
}

impl<const S: usize> SignedBlock<S> {
    /// Quantizes 256 values with q in qlo..=qhi and scales in sclo..=schi (both ranges
    /// asymmetric, one more level on the negative side).
    pub fn quantize(x: &[f32], (qlo, qhi): (i8, i8), (sclo, schi): (i8, i8)) -> Self {
        let len = QK_K / S;
        let mut fits = [0.0f32; S];
        for (fit, x) in fits.iter_mut().zip(x.chunks_exact(len)) {
            *fit = fit_signed(x, qlo, qhi);
        }
        // The largest scale maps to the negative end, which has one more level.
        let d = signed_extreme(&fits) / f32::from(sclo);
        let mut block = SignedBlock {
            d: f16::from_f32(d),
            sc: fits.map(|s| {
                if d != 0.0 {
                    (s / d).round().clamp(f32::from(sclo), f32::from(schi)) as i8
                } else {
                    0
                }
            }),
            q: [0; QK_K],
        };
        let mut err = block.round_all(x, qlo, qhi);
        for _ in 0..REFINE_ROUNDS {
            let Some(d) = block.solve_super_scale(x) else {
                break;
            };
            let mut next = SignedBlock {
                d: f16::from_f32(d),
                ..block
            };
            let next_err = next.round_all(x, qlo, qhi);
            if next_err >= err {
                break;
            }
            (block, err) = (next, next_err);
        }
        for round in 0..PRESERVE_ROUNDS {
            let Some(d) = block.solve_projection_preserving(x) else {
                break;
            };
            block.d = f16::from_f32(d);
            if round + 1 < PRESERVE_ROUNDS {
                block.round_all(x, qlo, qhi);
            }
        }
        block
    }

    fn round_all(&mut self, x: &[f32], qlo: i8, qhi: i8) -> f32 {
        let len = QK_K / S;
        let d = self.d.to_f32();
        let mut err = 0.0;
        for j in 0..S {
            let scale = d * f32::from(self.sc[j]);
            let (x, q) = (&x[j * len..][..len], &mut self.q[j * len..][..len]);
            round_signed(x, scale, qlo, qhi, q);
            err += x
                .iter()
                .zip(q.iter())
                .map(|(&v, &q)| (scale * f32::from(q) - v).powi(2))
                .sum::<f32>();
        }
        err
    }

    /// Least-squares d for fixed integers: x ≈ d·u with u = sc_j·q.
    fn solve_super_scale(&self, x: &[f32]) -> Option<f32> {
        let len = QK_K / S;
        let (mut suu, mut sux) = (0.0f64, 0.0f64);
        for (i, &v) in x.iter().enumerate() {
            let u = f64::from(self.sc[i / len]) * f64::from(self.q[i]);
            suu += u * u;
            sux += u * f64::from(v);
        }
        (suu > 0.0).then(|| (sux / suu) as f32)
    }

    /// d for the fixed integers with Σ e·x = 0 (see [`PRESERVE_ROUNDS`]).
    fn solve_projection_preserving(&self, x: &[f32]) -> Option<f32> {
        let len = QK_K / S;
        let (mut sux, mut sxx) = (0.0f64, 0.0f64);
        for (i, &v) in x.iter().enumerate() {
            let u = f64::from(self.sc[i / len]) * f64::from(self.q[i]);
            sux += u * f64::from(v);
            sxx += f64::from(v) * f64::from(v);
        }
        (sux > 0.0).then(|| (sxx / sux) as f32)
    }
}
