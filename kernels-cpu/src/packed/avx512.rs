//! The packed kernels: one group (16 rows) times `NT` tokens, AVX-512 (VNNI for the
//! integer formats).
//!
//! Per block, the group's weight registers are loaded once and serve every token of the
//! tile; each token keeps its own accumulator and sees the same operations whatever `NT`
//! is. The integer dot of a block is exact (it starts at the token's −o·Σq, see
//! `layout::Tokens`), so only the float sums round, once per block.

use std::arch::x86_64::*;

use super::layout::{legacy_units, Tokens, Units};
use super::{GROUP_ROWS, TILE_TOKENS};
use crate::formats::GgmlType;

/// A tile's results: `out[t][r]`, token t, row r of the group.
pub(super) type Out = [[f32; GROUP_ROWS]; TILE_TOKENS];

/// Runs `$body` with `$t` = 0, 1, … NT − 1 (constants), unrolled by hand: LLVM does not
/// unroll a block's 8-token loop (its body is large) and then keeps the 8 accumulators in
/// memory, a load and a store around every token's FMA.
macro_rules! each_token {
    ($nt:expr, $t:ident, $body:block) => {
        each_token!(@ $nt, $t, $body, 0 1 2 3 4 5 6 7)
    };
    (@ $nt:expr, $t:ident, $body:block, $($i:literal)*) => {
        const { assert!($nt <= TILE_TOKENS) };
        $(if $i < $nt {
            let $t: usize = $i;
            $body
        })*
    };
}

/// A block's dot steps (`$step(j)` for j < `$n`) as the tile's tokens take them: decode
/// (`$nt` 1) loads each step's registers at its dot, so the first touch of each line comes
/// with the work on it (Q4_K read 16.9–17.2 GB/s from memory so against 15.8–16.0 with
/// the registers loaded ahead of the dots; the legacy formats the same within noise); a
/// prefill tile loads them once for all its tokens. A macro, so that the closures are the
/// kernel's own (with its target features).
macro_rules! steps {
    ($nt:expr, $n:literal, $step:expr, $zero:expr) => {{
        let step = $step;
        let shared: [_; $n] = if $nt > 1 {
            std::array::from_fn(&step)
        } else {
            [$zero; $n]
        };
        move |j: usize| if $nt > 1 { shared[j] } else { step(j) }
    }};
}
pub(super) use steps;

/// Runs `$body` for each block `$b` of a legacy group at `$gp` (`$nb` blocks in the units
/// `$u`, `layout::Units`), in memory order, with `$q` pointing at its quant registers,
/// `$h` at its heads and `$s` its [`Share`] of its unit's lines (a group is one stream),
/// which the body asks for a part at each step of its first token's dot.
macro_rules! each_block {
    ($gp:expr, $nb:expr, $u:expr, |$q:ident, $h:ident, $b:ident, $s:ident| $body:block) => {{
        let (gp, nb, u): (*const u8, usize, Units) = ($gp, $nb, $u);
        debug_assert!(u.per == 1 || u.per == 2);
        let full = nb / u.per;
        for n in 0..full {
            let base = gp.add(u.bytes(n * u.per));
            let unit = Share {
                at: base,
                lines: u.bytes(u.per) / 64,
            };
            for i in 0..u.per {
                // Block i's share of the unit's lines, each line once.
                let ($q, $h, $b, $s) = (
                    base.add(i * u.region),
                    base.add(u.per * u.region + i * u.heads),
                    n * u.per + i,
                    unit.part(i, u.per),
                );
                $body
            }
        }
        if full * u.per < nb {
            // The last unit, one block short.
            let base = gp.add(u.bytes(full * u.per));
            let lines = u.bytes(1).div_ceil(64);
            let ($q, $h, $b, $s) = (base, base.add(u.region), nb - 1, Share { at: base, lines });
            $body
        }
    }};
}

/// A block's share of its unit's lines: `lines` lines at `at`.
#[derive(Clone, Copy)]
struct Share {
    at: *const u8,
    lines: usize,
}

impl Share {
    /// Part i of `parts`: lines i·n / parts..(i + 1)·n / parts, each line in one part.
    #[inline(always)]
    fn part(self, i: usize, parts: usize) -> Share {
        let (from, to) = (i * self.lines / parts, (i + 1) * self.lines / parts);
        Share {
            at: self.at.wrapping_add(64 * from),
            lines: to - from,
        }
    }

    /// Asks for part `k` of `steps` (`prefetch`).
    /// With a block's lines asked for at once as it started, Q4_1/Q5_1 packed read 16.0-16.2
    /// GB/s from memory at 1 thread where one part a step of the dot reads 16.4-16.8 (Q8_0
    /// +1-2%, Q4_0/Q5_0 the same).
    #[inline(always)]
    fn step(self, k: usize, steps: usize) {
        let part = self.part(k, steps);
        prefetch(part.at, 64 * part.lines);
    }
}

/// Group `g` (one packed group of `ty`, `cols` columns) times tokens `t0..t0 + nt` into
/// `out[t]` (the group's 16 rows).
///
/// # Safety
/// The CPU must have AVX-512 F/BW and F16C (F16), and VNNI (the integer formats);
/// `g` is a whole group of a matrix of `cols` columns; `tokens` has rows `t0..t0 + nt`
/// of `cols` activations in `ty`'s vec_dot format; `nt` is 1, 4 or 8.
pub(super) unsafe fn group(
    ty: GgmlType,
    cols: usize,
    g: &[u8],
    tokens: &Tokens,
    t0: usize,
    nt: usize,
    out: &mut Out,
) {
    debug_assert!(t0 + nt <= tokens.rows.len());
    macro_rules! by_tokens {
        ($($f:ident)::+ $(, $flag:literal)*) => {
            match nt {
                8 => $($f)::+::<8 $(, $flag)*>(g, cols, tokens, t0, out),
                4 => $($f)::+::<4 $(, $flag)*>(g, cols, tokens, t0, out),
                1 => $($f)::+::<1 $(, $flag)*>(g, cols, tokens, t0, out),
                _ => unreachable!("tile of {nt} tokens"),
            }
        };
    }
    match ty {
        GgmlType::Q8_0 => by_tokens!(q8_0),
        GgmlType::Q4_0 => by_tokens!(nibble_blocks, false, false),
        GgmlType::Q5_0 => by_tokens!(nibble_blocks, false, true),
        GgmlType::Q4_1 => by_tokens!(nibble_blocks, true, false),
        GgmlType::Q5_1 => by_tokens!(nibble_blocks, true, true),
        GgmlType::F16 => by_tokens!(halves16, false),
        GgmlType::BF16 => by_tokens!(halves16, true),
        GgmlType::Q4_K => by_tokens!(super::kquant512::q4_k),
        GgmlType::Q6_K => by_tokens!(super::kquant512::q6_k),
        GgmlType::Q5_K => by_tokens!(super::kquant_q5_512::q5_k),
        GgmlType::Q3_K => by_tokens!(super::kquant_q3::q3_k),
        GgmlType::Q2_K => by_tokens!(super::kquant_q2::q2_k),
        _ => unreachable!("{ty} is not packed"),
    }
}

/// Prefetches the lines of `bytes` at `p`, into L2 3 KB and into L1 1 KB before they are
/// read (`prefetch::ahead`): the groups are contiguous, so near a group's end this fetches
/// the next group's start.
pub(super) use crate::prefetch::ahead as prefetch;

// The small helpers every packed kernel (here and in the K-quant files) uses.

/// The 16 rows' f16 values (scales, mins, d's) at `p`, as f32.
#[inline(always)]
pub(super) unsafe fn halves(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
}

/// The 64-byte register at `p` (any alignment).
#[inline(always)]
pub(super) unsafe fn load(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p.cast())
}

/// The i32 at `p` (4 activation bytes, or a precomputed sum) in every lane.
#[inline(always)]
pub(super) unsafe fn splat(p: *const u8) -> __m512i {
    _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
}

/// One super-block of a K-quant with mins (Q2_K, Q4_K, Q5_K) added to a token's
/// accumulator: acc + isum·(dw·da) − (Σ_j m_j·p_j)·(mw·da), `isum` the super-block's exact
/// scaled integer dot, `mins` the rows' mins as i16 pairs, `p` the token's matching
/// activation-sum pairs (4 bytes a register, `kquant::token_bias`), `dw`/`mw` the rows' d
/// and dmin in f32, `da` the token's d. Σ m_j·p_j is exact in i32 (each format's bound at
/// its kernel); the float part is the reference's two terms, each added by an FMA.
#[inline(always)]
pub(super) unsafe fn add_super_block<const M: usize>(
    acc: __m512,
    isum: __m512i,
    mins: &[__m512i; M],
    p: *const u8,
    dw: __m512,
    mw: __m512,
    da: f32,
) -> __m512 {
    let da = _mm512_set1_ps(da);
    let mut m = _mm512_setzero_si512();
    for (i, mins) in mins.iter().enumerate() {
        m = _mm512_dpwssd_epi32(m, *mins, splat(p.add(4 * i)));
    }
    let acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, da), acc);
    _mm512_fnmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(mw, da), acc)
}

/// Token activation bytes 4i..4i + 4 of the block at `qs`, in every lane.
#[inline(always)]
unsafe fn word(qs: *const i8, i: usize) -> __m512i {
    splat(qs.add(4 * i).cast())
}

/// A tile's per-token activation pointers, taken once a group (the block loop then reads
/// them without bounds checks): quants, block d's, block sums (Q8_1 s), integer biases.
struct TileActs<const NT: usize> {
    qs: [*const i8; NT],
    d: [*const f32; NT],
    dsum: [*const f32; NT],
    bias: [*const i32; NT],
}

impl<const NT: usize> TileActs<NT> {
    fn new(tk: &Tokens, t0: usize, nb: usize) -> Self {
        let rows = &tk.rows[t0..t0 + NT];
        TileActs {
            qs: std::array::from_fn(|t| rows[t].qs.as_ptr()),
            d: std::array::from_fn(|t| rows[t].d.as_ptr()),
            dsum: std::array::from_fn(|t| rows[t].dsum.as_ptr()),
            bias: std::array::from_fn(|t| tk.bias.as_ptr().wrapping_add((t0 + t) * nb)),
        }
    }
}

/// One token's Q8_0 block dot into `acc`: `w(j)` the block's register j, `dw` the rows'
/// scales, `qs` the token's block quants, `bias` its −128·Σq, `da` its block d; asks for
/// the block's `share` (the first token's) a part a step.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn q8_0_token(
    acc: __m512,
    w: &impl Fn(usize) -> __m512i,
    dw: __m512,
    qs: *const i8,
    bias: i32,
    da: f32,
    share: Option<Share>,
) -> __m512 {
    // Two chains halve the dependent `vpdpbusd` latency; integer, so exact.
    let mut s0 = _mm512_set1_epi32(bias);
    let mut s1 = _mm512_setzero_si512();
    for j in (0..8).step_by(2) {
        if let Some(share) = share {
            share.step(j / 2, 4);
        }
        s0 = _mm512_dpbusd_epi32(s0, w(j), word(qs, j));
        s1 = _mm512_dpbusd_epi32(s1, w(j + 1), word(qs, j + 1));
    }
    let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
    _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), d, acc)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn q8_0<const NT: usize>(g: &[u8], cols: usize, tk: &Tokens, t0: usize, out: &mut Out) {
    let nb = cols / 32;
    let units = const { legacy_units(GgmlType::Q8_0) };
    debug_assert!(g.len() >= units.bytes(nb));
    let a = TileActs::<NT>::new(tk, t0, nb);
    let mut acc = [_mm512_setzero_ps(); NT];
    each_block!(g.as_ptr(), nb, units, |q, h, b, share| {
        let w = steps!(NT, 8, |j| load(q.add(64 * j)), _mm512_setzero_si512());
        let dw = halves(h);
        each_token!(NT, t, {
            let (qs, bias, da) = (a.qs[t].add(32 * b), *a.bias[t].add(b), *a.d[t].add(b));
            let share = (t == 0).then_some(share);
            acc[t] = q8_0_token(acc[t], &w, dw, qs, bias, da, share);
        });
    });
    for (o, a) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// Step j of a Q4 block's dot (its 4 registers at `q`): the low nibbles of register j
/// (lane r: elements 4j..4j + 4 of row r) and its high nibbles (elements 16 + 4j..).
#[inline(always)]
unsafe fn nibbles(q: *const u8, j: usize) -> (__m512i, __m512i) {
    let m = _mm512_set1_epi8(0x0F);
    let r = load(q.add(64 * j));
    (
        _mm512_and_si512(r, m),
        _mm512_and_si512(_mm512_srli_epi16::<4>(r), m),
    )
}

/// Step j of a Q5_0/Q5_1 block's dot: the quants u = nibble + 16·h of its nibble
/// register j at `q`, laid out as [`nibbles`], each byte's fifth bit h taken from the
/// fifth register (`q + 256`, `layout::spread_qh`: bit K of a byte belongs to nibble
/// register K, low nibbles' K = 0..4, high nibbles' 4..8), moved to 0x10 by one 16-bit
/// shift (bit K of each byte to bit 4 of the same byte).
#[inline(always)]
unsafe fn nibbles5(q: *const u8, j: usize) -> (__m512i, __m512i) {
    let (m, bit) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x10));
    let (r, h) = (load(q.add(64 * j)), load(q.add(256)));
    let (low, high) = match j {
        0 => (_mm512_slli_epi16::<4>(h), h),
        1 => (_mm512_slli_epi16::<3>(h), _mm512_srli_epi16::<1>(h)),
        2 => (_mm512_slli_epi16::<2>(h), _mm512_srli_epi16::<2>(h)),
        _ => (_mm512_slli_epi16::<1>(h), _mm512_srli_epi16::<3>(h)),
    };
    // (a & 0x0F) | (b & 0x10): 0xEC is a & c | b over (a, b & 0x10, c = 0x0F).
    let join = |a, b| _mm512_ternarylogic_epi32::<0xEC>(a, _mm512_and_si512(b, bit), m);
    (join(r, low), join(_mm512_srli_epi16::<4>(r), high))
}

/// Σ nibble·activation of one block for one token (its block quants at `qs`), starting at
/// `start`: step j takes `quants(j)`, elements 4j..4j + 4 and 16 + 4j..; asks for the
/// block's `share` (the first token's) a part a step.
#[inline(always)]
unsafe fn nibble_dot(
    start: i32,
    quants: &impl Fn(usize) -> (__m512i, __m512i),
    qs: *const i8,
    share: Option<Share>,
) -> __m512i {
    let mut s0 = _mm512_set1_epi32(start);
    let mut s1 = _mm512_setzero_si512();
    for j in 0..4 {
        if let Some(share) = share {
            share.step(j, 4);
        }
        let (lo, hi) = quants(j);
        s0 = _mm512_dpbusd_epi32(s0, lo, word(qs, j));
        s1 = _mm512_dpbusd_epi32(s1, hi, word(qs, 4 + j));
    }
    _mm512_add_epi32(s0, s1)
}

/// Q4_0, Q5_0 (`MINS` false): w = d·(u − o), the −o·Σq in the token's bias; Q4_1, Q5_1
/// (true): w = d·u + m, so Σ w·x = d·d_a·Σ u·q + m·s (s = d_a·Σq, the Q8_1 block's sum).
/// Q4_0 a pair at a time (`Units::paired`), an odd last block alone; the others a block at
/// a time.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,f16c")]
unsafe fn nibble_blocks<const NT: usize, const MINS: bool, const FIFTH: bool>(
    g: &[u8],
    cols: usize,
    tk: &Tokens,
    t0: usize,
    out: &mut Out,
) {
    let nb = cols / 32;
    let units = const {
        legacy_units(match (MINS, FIFTH) {
            (false, false) => GgmlType::Q4_0,
            (true, false) => GgmlType::Q4_1,
            (false, true) => GgmlType::Q5_0,
            (true, true) => GgmlType::Q5_1,
        })
    };
    debug_assert!(g.len() >= units.bytes(nb));
    let a = TileActs::<NT>::new(tk, t0, nb);
    let mut acc = [_mm512_setzero_ps(); NT];
    let zero = (_mm512_setzero_si512(), _mm512_setzero_si512());
    if !units.paired() {
        each_block!(g.as_ptr(), nb, units, |q, h, b, share| {
            let step = |j| if FIFTH { nibbles5(q, j) } else { nibbles(q, j) };
            let quants = steps!(NT, 4, step, zero);
            block_tokens::<NT, MINS>(&mut acc, &a, quants, (h, 1.0), b, Some(share));
        });
    } else {
        let gp = g.as_ptr();
        let (low4, high4) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0xF0u8 as i8));
        for n in 0..nb / 2 {
            let (q, b) = (gp.add(units.bytes(2 * n)), 2 * n);
            let h = q.add(2 * units.region);
            // Each block asks for half of the pair's lines.
            let unit = Share {
                at: q,
                lines: units.bytes(2) / 64,
            };
            // Block A's quants masked, B's in place (16·u, `Units::paired`): B's sum is 16
            // times its dot, and its d's carry 1/16 (exact: powers of two). Step j takes
            // registers j and 4 + j (elements 4j.. and 16 + 4j..).
            let pair = |m| {
                move |j: usize| {
                    let (r0, r1) = (load(q.add(64 * j)), load(q.add(64 * (4 + j))));
                    (_mm512_and_si512(r0, m), _mm512_and_si512(r1, m))
                }
            };
            let quants = steps!(NT, 4, pair(low4), zero);
            block_tokens::<NT, MINS>(&mut acc, &a, quants, (h, 1.0), b, Some(unit.part(0, 2)));
            let quants = steps!(NT, 4, pair(high4), zero);
            let hb = (h.add(units.heads), 16.0);
            block_tokens::<NT, MINS>(&mut acc, &a, quants, hb, b + 1, Some(unit.part(1, 2)));
        }
        if nb % 2 == 1 {
            let q = gp.add(units.bytes(nb - 1));
            prefetch(q, units.bytes(1));
            let quants = steps!(NT, 4, |j| nibbles(q, j), zero);
            let h = (q.add(units.region), 1.0);
            block_tokens::<NT, MINS>(&mut acc, &a, quants, h, nb - 1, None);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), a);
    }
}

/// Adds block `b` (step j's quants `quants(j)`, entered as f·u, [`nibble_dot`]; heads at
/// `h.0`, f = `h.1`) times each token of the tile to its accumulator, asking for `share` a
/// part a step of the first token's dot. Q4/Q5 `_0` (`MINS` false) start each dot at f
/// times the token's bias; the float part is the same for every f: cvt(f·s) = f·cvt(s) and
/// (d/f)·d_a = (d·d_a)/f exactly (f a power of two), and the mins are not scaled.
#[inline(always)]
unsafe fn block_tokens<const NT: usize, const MINS: bool>(
    acc: &mut [__m512; NT],
    a: &TileActs<NT>,
    quants: impl Fn(usize) -> (__m512i, __m512i),
    (h, f): (*const u8, f32),
    b: usize,
    share: Option<Share>,
) {
    let dw = _mm512_mul_ps(halves(h), _mm512_set1_ps(1.0 / f));
    let mw = if MINS { halves(h.add(32)) } else { dw };
    each_token!(NT, t, {
        let start = if MINS {
            0
        } else {
            *a.bias[t].add(b) * f as i32
        };
        let share = if t == 0 { share } else { None };
        let s = nibble_dot(start, &quants, a.qs[t].add(32 * b), share);
        let d = _mm512_mul_ps(dw, _mm512_set1_ps(*a.d[t].add(b)));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc[t]);
        if MINS {
            acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(*a.dsum[t].add(b)), acc[t]);
        }
    });
}

/// The 16 rows' BF16 values at `p`, as f32 (exact: a bf16 is an f32's high half).
#[inline(always)]
unsafe fn bf16s(p: *const u8) -> __m512 {
    let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w))
}

/// The 16 rows' element at `p`: F16 (`BF` false) or BF16 (true).
#[inline(always)]
unsafe fn element<const BF: bool>(p: *const u8) -> __m512 {
    if BF {
        bf16s(p)
    } else {
        halves(p)
    }
}

/// F16 (`BF` false) and BF16 (true), f32 activations.
#[target_feature(enable = "avx512f,avx512bw,f16c,fma")]
unsafe fn halves16<const NT: usize, const BF: bool>(
    g: &[u8],
    cols: usize,
    tk: &Tokens,
    t0: usize,
    out: &mut Out,
) {
    debug_assert!(g.len() >= cols * 32);
    let gp = g.as_ptr();
    // Two accumulators a token (even and odd k): one FMA chain per token would wait on the
    // FMA latency in decode.
    let mut acc = [[_mm512_setzero_ps(); 2]; NT];
    let x: [*const f32; NT] = std::array::from_fn(|t| tk.rows[t0 + t].x.as_ptr());
    let pairs = cols / 2;
    for p in 0..pairs {
        let at = gp.add(64 * p);
        prefetch(at, 64);
        let w0 = element::<BF>(at);
        let w1 = element::<BF>(at.add(32));
        let k = 2 * p;
        each_token!(NT, t, {
            acc[t][0] = _mm512_fmadd_ps(w0, _mm512_set1_ps(*x[t].add(k)), acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(w1, _mm512_set1_ps(*x[t].add(k + 1)), acc[t][1]);
        });
    }
    if cols % 2 == 1 {
        let k = cols - 1;
        let w = element::<BF>(gp.add(32 * k));
        for t in 0..NT {
            acc[t][0] = _mm512_fmadd_ps(w, _mm512_set1_ps(*x[t].add(k)), acc[t][0]);
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        _mm512_storeu_ps(o.as_mut_ptr(), _mm512_add_ps(a[0], a[1]));
    }
}
