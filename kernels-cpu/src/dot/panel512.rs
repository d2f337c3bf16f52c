//! Prefill (matmul) of the legacy integer formats on repacked panels, AVX-512 VNNI.
//!
//! A row-dot or tile kernel multiplies two blocks per 512-bit register, so every 64
//! multiply-adds of a (row, token) pair also pay a conversion, a scale product and an FMA.
//! Here the quants are first repacked, per matmul task for its weight rows and once per
//! matmul for the activations, into panels of 16 blocks where register j holds the j-th
//! 4-byte group of each of the 16 blocks (one block per 32-bit lane). Eight `vpdpbusd`
//! then leave each lane with its block's whole integer dot, and the float work (one
//! conversion, one scale product, one FMA) is paid once per 16 blocks. The repacking is
//! O(rows·cols + n·cols) against the O(rows·cols·n) multiply-adds it speeds up.
//!
//! Weight quants are stored unsigned, u = w + o (o = 8 for the nibble formats, 128 for
//! Q8_0); each lane starts at −o·Σa of its block (the activation sums are kept per block),
//! so the integer dot is exact. Padding blocks past a row's end have zero quants and
//! scales.

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::{ActRow, TILE_ROWS, TILE_TOKENS};
use crate::formats::GgmlType;
use crate::prefetch;

/// Blocks per panel group: one per 32-bit lane.
const GROUP: usize = 16;
/// Bytes of a block's quants, and 4-byte groups per block.
const QK: usize = 32;
const WORDS: usize = QK / 4;

/// How a legacy integer format's blocks go into a weight panel (its registry row's
/// `panel`): the offset its unsigned quants carry, where the quants start in a block,
/// whether they are nibbles (else bytes), and whether a min follows d (Q4_1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PanelFormat {
    pub(crate) offset: i32,
    pub(crate) qs: usize,
    pub(crate) nibbles: bool,
    pub(crate) min: bool,
}

/// `nb` blocks as `groups(nb)` panel groups.
pub(crate) fn groups(nb: usize) -> usize {
    nb.div_ceil(GROUP)
}

/// Repacked quants of one row (weights or a token's activations): per group, WORDS
/// registers of GROUP lanes; plus per block its scale and a second per-block value
/// (weights: the min, Q4_1 only; activations: the Q8_1 `s` or Q8_0 d·Σq) and, for
/// activations, Σq.
pub(crate) struct Panel {
    groups: usize,
    quants: Vec<u32>,
    scale: Vec<f32>,
    second: Vec<f32>,
    qsum: Vec<i32>,
}

impl Panel {
    /// An empty panel, for [`Self::fill_weights`] to fill (and refill without
    /// reallocating).
    pub(crate) fn empty() -> Self {
        Panel {
            groups: 0,
            quants: Vec::new(),
            scale: Vec::new(),
            second: Vec::new(),
            qsum: Vec::new(),
        }
    }

    /// Makes this the weight panel of `rows` rows of `ty` (laid out as `f`; `row_bytes`
    /// each, `nb` blocks) from `w`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
    pub(crate) unsafe fn fill_weights(
        &mut self,
        ty: GgmlType,
        f: PanelFormat,
        w: &[u8],
        rows: usize,
        row_bytes: usize,
        nb: usize,
    ) {
        let ts = ty.type_size();
        assert!(
            w.len() >= rows * row_bytes && nb * ts <= row_bytes,
            "{ty}: weight rows"
        );
        let groups = groups(nb);
        let blocks = rows * groups * GROUP;
        self.groups = groups;
        // Every element below is written (padding lanes as zeros), so no clearing.
        self.quants.resize(blocks * WORDS, 0);
        self.scale.resize(blocks, 0.0);
        self.second.resize(blocks, 0.0);
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(ts as i32));
        let (low, flip) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(-128));
        for r in 0..rows {
            for g in 0..groups {
                let in_group = (nb - g * GROUP).min(GROUP);
                let m = ((1u32 << in_group) - 1) as u16;
                let base = w.as_ptr().add(r * row_bytes + g * GROUP * ts);
                // The weights come from memory here, in gathers the hardware prefetcher does
                // not follow: ask for the group PREFETCH_AHEAD on (never faults).
                prefetch::ahead(base, GROUP * ts);
                let at = (r * groups + g) * GROUP;
                let q = self.quants.as_mut_ptr().add(at * WORDS);
                let head = gather16(base, 0, idx, m);
                let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
                _mm512_storeu_ps(self.scale.as_mut_ptr().add(at), d);
                let second = if f.min {
                    _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(head)))
                } else {
                    _mm512_setzero_ps()
                };
                _mm512_storeu_ps(self.second.as_mut_ptr().add(at), second);
                if f.nibbles {
                    for j in 0..WORDS / 2 {
                        let v = gather16(base, f.qs + 4 * j, idx, m);
                        let (lo, hi) = (
                            _mm512_and_si512(v, low),
                            _mm512_and_si512(_mm512_srli_epi32::<4>(v), low),
                        );
                        _mm512_storeu_si512(q.add(j * GROUP).cast(), lo);
                        _mm512_storeu_si512(q.add((j + WORDS / 2) * GROUP).cast(), hi);
                    }
                } else {
                    for j in 0..WORDS {
                        let v = _mm512_xor_si512(gather16(base, f.qs + 4 * j, idx, m), flip);
                        // Padding lanes must stay 0, not 0 ^ 0x80.
                        let v = _mm512_maskz_mov_epi32(m, v);
                        _mm512_storeu_si512(q.add(j * GROUP).cast(), v);
                    }
                }
            }
        }
    }

    /// Makes this the activation panel of every token in `acts` (Q8_0 or Q8_1 rows of
    /// `nb` blocks), the tokens spread over the threads.
    ///
    /// # Safety
    /// The CPU must have AVX-512 VNNI.
    pub(crate) unsafe fn fill_acts(&mut self, acts: &[ActRow], nb: usize) {
        let groups = groups(nb);
        let per_token = groups * GROUP;
        let blocks = acts.len() * per_token;
        self.groups = groups;
        // Every element is written below (padding lanes as zeros), so no clearing.
        self.quants.resize(blocks * WORDS, 0);
        self.scale.resize(blocks, 0.0);
        self.second.resize(blocks, 0.0);
        self.qsum.resize(blocks, 0);
        let (tq, tb) = (per_token * WORDS, per_token);
        // SAFETY (fill_token): the caller's CPU has AVX-512 VNNI.
        let fill =
            |((((q, sc), se), qs), a): TokenPart| unsafe { fill_token(a, nb, q, sc, se, qs) };
        if rayon::current_num_threads() == 1 {
            (self.quants.chunks_mut(tq))
                .zip(self.scale.chunks_mut(tb))
                .zip(self.second.chunks_mut(tb))
                .zip(self.qsum.chunks_mut(tb))
                .zip(acts)
                .for_each(fill);
        } else {
            (self.quants.par_chunks_mut(tq))
                .zip(self.scale.par_chunks_mut(tb))
                .zip(self.second.par_chunks_mut(tb))
                .zip(self.qsum.par_chunks_mut(tb))
                .zip(acts)
                .for_each(fill);
        }
    }
}

/// A token's slices of an activation panel (quants, scales, second values, Σq) and its row.
type TokenPart<'a, 'r> = (
    (
        ((&'a mut [u32], &'a mut [f32]), &'a mut [f32]),
        &'a mut [i32],
    ),
    &'r ActRow<'r>,
);

/// One token's part of an activation panel: its quants by 4-byte groups (`q`), block
/// scales (`sc`), second values (`se`) and Σq (`qs`), padding lanes zero.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn fill_token(
    a: &ActRow,
    nb: usize,
    q: &mut [u32],
    sc: &mut [f32],
    se: &mut [f32],
    qs: &mut [i32],
) {
    let groups = groups(nb);
    assert!(a.qs.len() >= nb * QK && a.d.len() >= nb && a.dsum.len() >= nb);
    assert!(
        q.len() >= groups * GROUP * WORDS && sc.len().min(se.len()).min(qs.len()) >= groups * GROUP
    );
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(QK as i32),
    );
    let ones = _mm512_set1_epi8(1);
    for g in 0..groups {
        let in_group = (nb - g * GROUP).min(GROUP);
        let m = ((1u32 << in_group) - 1) as u16;
        let base = a.qs.as_ptr().add(g * GROUP * QK).cast::<u8>();
        let mut sum = _mm512_setzero_si512();
        for j in 0..WORDS {
            let v = gather16(base, 4 * j, idx, m);
            _mm512_storeu_si512(q.as_mut_ptr().add((g * WORDS + j) * GROUP).cast(), v);
            // Σ of the 4 signed quants of each lane (times 1, unsigned).
            sum = _mm512_dpbusd_epi32(sum, ones, v);
        }
        _mm512_storeu_si512(qs.as_mut_ptr().add(g * GROUP).cast(), sum);
        let d = _mm512_maskz_loadu_ps(m, a.d.as_ptr().add(g * GROUP));
        _mm512_storeu_ps(sc.as_mut_ptr().add(g * GROUP), d);
        let s2 = _mm512_maskz_loadu_ps(m, a.dsum.as_ptr().add(g * GROUP));
        _mm512_storeu_ps(se.as_mut_ptr().add(g * GROUP), s2);
    }
}

/// The 4 bytes at `off` of each of 16 blocks (`idx`: their offsets from `base`) as 32-bit
/// lanes; lanes outside `m` (blocks past the row) are 0 and not read.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn gather16(base: *const u8, off: usize, idx: __m512i, m: __mmask16) -> __m512i {
    _mm512_mask_i32gather_epi32::<1>(_mm512_setzero_si512(), m, idx, base.add(off).cast())
}

/// `out[r][t]` for weight panel rows `r0..r0 + 4` and activation panel tokens
/// `t0..t0 + 4` (same block count). `min`: add the weights' min times the activations'
/// `s` (Q4_1).
///
/// # Safety
/// The CPU must have AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
// Indexing the register tile by (r, t) in every loop reads clearer than zipped iterators.
#[allow(clippy::needless_range_loop)]
pub(crate) unsafe fn tile(
    w: &Panel,
    r0: usize,
    a: &Panel,
    t0: usize,
    o: i32,
    min: bool,
    out: &mut [[f32; TILE_TOKENS]; TILE_ROWS],
) {
    let groups = w.groups;
    assert_eq!(groups, a.groups, "panels of different widths");
    let end = |rows: usize| (rows * groups * GROUP * WORDS, rows * groups * GROUP);
    let (wq_end, ws_end) = end(r0 + TILE_ROWS);
    let (aq_end, as_end) = end(t0 + TILE_TOKENS);
    assert!(
        w.quants.len() >= wq_end && w.scale.len() >= ws_end,
        "weight panel rows"
    );
    assert!(
        a.quants.len() >= aq_end && a.scale.len() >= as_end,
        "activation panel rows"
    );
    let neg_o = _mm512_set1_epi32(-o);
    let mut acc = [[_mm512_setzero_ps(); TILE_TOKENS]; TILE_ROWS];
    for g in 0..groups {
        // Row r's (token t's) group g starts at lane index ((r·groups) + g)·GROUP.
        let wi = |r: usize| ((r0 + r) * groups + g) * GROUP;
        let ai = |t: usize| ((t0 + t) * groups + g) * GROUP;
        let mut isum = [[_mm512_setzero_si512(); TILE_TOKENS]; TILE_ROWS];
        for t in 0..TILE_TOKENS {
            let c =
                _mm512_mullo_epi32(neg_o, _mm512_loadu_si512(a.qsum.as_ptr().add(ai(t)).cast()));
            for row in isum.iter_mut() {
                row[t] = c;
            }
        }
        for j in 0..WORDS {
            let mut wv = [_mm512_setzero_si512(); TILE_ROWS];
            for (r, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_si512(w.quants.as_ptr().add(wi(r) * WORDS + j * GROUP).cast());
            }
            for t in 0..TILE_TOKENS {
                let av =
                    _mm512_loadu_si512(a.quants.as_ptr().add(ai(t) * WORDS + j * GROUP).cast());
                for r in 0..TILE_ROWS {
                    isum[r][t] = _mm512_dpbusd_epi32(isum[r][t], wv[r], av);
                }
            }
        }
        for r in 0..TILE_ROWS {
            let ws = _mm512_loadu_ps(w.scale.as_ptr().add(wi(r)));
            let wm = _mm512_loadu_ps(w.second.as_ptr().add(wi(r)));
            for t in 0..TILE_TOKENS {
                let s = _mm512_mul_ps(ws, _mm512_loadu_ps(a.scale.as_ptr().add(ai(t))));
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][t]), s, acc[r][t]);
                if min {
                    let sa = _mm512_loadu_ps(a.second.as_ptr().add(ai(t)));
                    acc[r][t] = _mm512_fmadd_ps(wm, sa, acc[r][t]);
                }
            }
        }
    }
    for (o, a) in out.iter_mut().zip(&acc) {
        for (o, a) in o.iter_mut().zip(a) {
            *o = _mm512_reduce_add_ps(*a);
        }
    }
}
