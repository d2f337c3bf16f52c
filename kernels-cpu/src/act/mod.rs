//! Activation quantization: x (f32) to the format a weight's dot product takes (Q8_0, Q8_1,
//! Q8_K, or F32 kept as is), plus the per-block sums the dot products need.
//!
//! The blocks are those of the scalar references in `formats::{q8_0, q8_1, q8_k}`, byte for
//! byte, at every ISA level (tests hold the SIMD quantizers to that). A [`QuantizedActs`]
//! is made once per input and reused by every matrix that reads the same x (q/k/v,
//! gate/up).

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::dot::ActRow;
use crate::formats::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K};
use crate::formats::{q8_0, q8_1, q8_k, FormatError, GgmlType};
use crate::isa::{self, Isa};

/// `n` rows of `cols` activations, quantized to one activation format.
#[derive(Clone, Default)]
pub struct QuantizedActs {
    ty: Option<GgmlType>,
    n: usize,
    cols: usize,
    x: Vec<f32>,
    q8_0: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8_k: Vec<BlockQ8K>,
    /// Q8_0/Q8_1 quants again, contiguous, so SIMD kernels load many blocks' worth at once.
    qs: Vec<i8>,
    /// The same quants with each row's whole groups of four blocks A,B,C,D laid out as
    /// [A0..16 B0..16 C0..16 D0..16 | A16..32 B16..32 C16..32 D16..32]: the order in which
    /// the AVX-512 nibble kernels unpack four weight blocks (low nibbles, then high ones).
    qs4: Vec<i8>,
    d: Vec<f32>,
    dsum: Vec<f32>,
}

impl QuantizedActs {
    /// An empty holder, to be filled (and refilled without reallocating) by [`Self::quantize`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The activation format (F32, Q8_0, Q8_1 or Q8_K); `None` before the first quantize.
    pub fn ty(&self) -> Option<GgmlType> {
        self.ty
    }

    /// Rows (tokens).
    pub fn n(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The Q8_0 blocks (empty unless the format is Q8_0).
    pub fn q8_0_blocks(&self) -> &[BlockQ8_0] {
        &self.q8_0
    }

    /// The Q8_1 blocks (empty unless the format is Q8_1).
    pub fn q8_1_blocks(&self) -> &[BlockQ8_1] {
        &self.q8_1
    }

    /// The Q8_K blocks (empty unless the format is Q8_K).
    pub fn q8_k_blocks(&self) -> &[BlockQ8K] {
        &self.q8_k
    }

    /// Quantizes `x` (`n` rows of `cols`, row-major) to `act_ty` at the active ISA level.
    pub fn quantize(
        &mut self,
        act_ty: GgmlType,
        x: &[f32],
        n: usize,
        cols: usize,
    ) -> Result<(), FormatError> {
        self.quantize_isa(isa::active(), act_ty, x, n, cols)
    }

    /// As [`Self::quantize`] at an explicit ISA level (which the CPU must support).
    pub fn quantize_isa(
        &mut self,
        isa: Isa,
        act_ty: GgmlType,
        x: &[f32],
        n: usize,
        cols: usize,
    ) -> Result<(), FormatError> {
        if !isa.is_supported() {
            return Err(FormatError::Unsupported {
                ty: act_ty,
                what: "ISA level not supported by this CPU",
            });
        }
        let len = n.checked_mul(cols).ok_or(FormatError::Unsupported {
            ty: act_ty,
            what: "n·cols overflows",
        })?;
        if x.len() != len {
            return Err(FormatError::ByteLength {
                ty: GgmlType::F32,
                n: len,
                expected: len * 4,
                got: x.len() * 4,
            });
        }
        let block = act_ty.block_size();
        if !cols.is_multiple_of(block) {
            return Err(FormatError::NotWholeBlocks {
                ty: act_ty,
                n: cols,
                block,
            });
        }
        let nb = len / block;
        self.ty = Some(act_ty);
        self.n = n;
        self.cols = cols;
        self.x.clear();
        self.q8_0.clear();
        self.q8_1.clear();
        self.q8_k.clear();
        self.qs.clear();
        self.qs4.clear();
        self.d.clear();
        self.dsum.clear();
        match act_ty {
            GgmlType::F32 => self.x.extend_from_slice(x),
            GgmlType::Q8_0 => {
                self.q8_0.resize(nb, bytemuck::Zeroable::zeroed());
                quantize_q8_0(isa, x, &mut self.q8_0);
                for b in &self.q8_0 {
                    let d = b.d.to_f32();
                    let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
                    self.qs.extend_from_slice(&b.qs);
                    self.d.push(d);
                    self.dsum.push(d * sum as f32);
                }
            }
            GgmlType::Q8_1 => {
                self.q8_1.resize(nb, bytemuck::Zeroable::zeroed());
                quantize_q8_1(isa, x, &mut self.q8_1);
                for b in &self.q8_1 {
                    self.qs.extend_from_slice(&b.qs);
                    self.d.push(b.d.to_f32());
                    self.dsum.push(b.s.to_f32());
                }
            }
            GgmlType::Q8_K => {
                self.q8_k.resize(nb, bytemuck::Zeroable::zeroed());
                quantize_q8_k(isa, x, &mut self.q8_k);
            }
            _ => {
                return Err(FormatError::Unsupported {
                    ty: act_ty,
                    what: "not an activation format",
                })
            }
        }
        // `qs` holds the quants of the 32-element formats (Q8_0, Q8_1) only.
        if cols > 0 && !self.qs.is_empty() {
            // Slice copies into a sized buffer: an `extend` from a flattened iterator
            // compiled to a byte-at-a-time push loop (10% of a 1-thread prefill).
            self.qs4.resize(self.qs.len(), 0);
            for (row, out) in self
                .qs
                .chunks_exact(cols)
                .zip(self.qs4.chunks_exact_mut(cols))
            {
                interleave4(row, out);
            }
        }
        Ok(())
    }

    /// Row `t` in the layouts the dot kernels read: each layout's part of the row, empty for
    /// the layouts the activation format does not fill (their buffers are empty).
    pub(crate) fn row(&self, t: usize) -> ActRow<'_> {
        let (lo, hi) = (t * self.cols, (t + 1) * self.cols);
        ActRow {
            x: part(&self.x, lo, hi, 1),
            q8_0: part(&self.q8_0, lo, hi, QK),
            q8_1: part(&self.q8_1, lo, hi, QK),
            q8_k: part(&self.q8_k, lo, hi, QK_K),
            qs: part(&self.qs, lo, hi, 1),
            qs4: part(&self.qs4, lo, hi, 1),
            d: part(&self.d, lo, hi, QK),
            dsum: part(&self.dsum, lo, hi, QK),
        }
    }
}

/// Elements `lo..hi` of a row-major buffer with one entry per `per` elements; empty if the
/// buffer is (a layout the activation format does not fill).
fn part<T>(v: &[T], lo: usize, hi: usize, per: usize) -> &[T] {
    v.get(lo / per..hi / per).unwrap_or(&[])
}

/// Quantizes `x` (`n` rows of `cols`) to `act_ty` (F32, Q8_0, Q8_1 or Q8_K; a weight type's
/// [`GgmlType::vec_dot_type`]) at the active ISA level.
pub fn quantize_acts(
    act_ty: GgmlType,
    x: &[f32],
    n: usize,
    cols: usize,
) -> Result<QuantizedActs, FormatError> {
    quantize_acts_isa(isa::active(), act_ty, x, n, cols)
}

/// As [`quantize_acts`] at an explicit ISA level.
pub fn quantize_acts_isa(
    isa: Isa,
    act_ty: GgmlType,
    x: &[f32],
    n: usize,
    cols: usize,
) -> Result<QuantizedActs, FormatError> {
    let mut q = QuantizedActs::new();
    q.quantize_isa(isa, act_ty, x, n, cols)?;
    Ok(q)
}

/// Q8_0 blocks of `x` at level `isa`; identical to `formats::q8_0::quantize`.
pub fn quantize_q8_0(isa: Isa, x: &[f32], out: &mut [BlockQ8_0]) {
    match isa {
        Isa::Reference => q8_0::quantize(x, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Vnni if isa.is_supported() => x86::q8_0(isa, x, out),
        _ => portable::q8_0(x, out),
    }
}

/// Q8_1 blocks of `x` at level `isa`; identical to `formats::q8_1::quantize`.
pub fn quantize_q8_1(isa: Isa, x: &[f32], out: &mut [BlockQ8_1]) {
    match isa {
        Isa::Reference => q8_1::quantize(x, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Vnni if isa.is_supported() => x86::q8_1(isa, x, out),
        _ => portable::q8_1(x, out),
    }
}

/// Q8_K blocks of `x` at level `isa`; identical to `formats::q8_k::quantize`.
pub fn quantize_q8_k(isa: Isa, x: &[f32], out: &mut [BlockQ8K]) {
    match isa {
        Isa::Reference => q8_k::quantize(x, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Vnni if isa.is_supported() => x86::q8_k(isa, x, out),
        _ => portable::q8_k(x, out),
    }
}

/// One row of quants into `out` (as long) with each whole group of four 32-quant blocks
/// interleaved by halves (see `QuantizedActs::qs4`); a last partial group stays in order.
fn interleave4(row: &[i8], out: &mut [i8]) {
    let mut groups = row.chunks_exact(4 * QK);
    let mut dst = out.chunks_exact_mut(16);
    for g in &mut groups {
        for half in 0..2 {
            for b in 0..4 {
                let at = QK * b + 16 * half;
                if let Some(d) = dst.next() {
                    d.copy_from_slice(&g[at..at + 16]);
                }
            }
        }
    }
    let rest = groups.remainder();
    out[row.len() - rest.len()..].copy_from_slice(rest);
}

/// Sums of each 16 quants of a Q8_K block.
fn bsums(qs: &[i8; QK_K]) -> [i16; QK_K / 16] {
    let mut s = [0i16; QK_K / 16];
    for (s, q) in s.iter_mut().zip(qs.chunks_exact(16)) {
        *s = q.iter().map(|&v| i16::from(v)).sum();
    }
    s
}

/// Σq of a 32-quant block, for Q8_1's s.
fn qsum(qs: &[i8; QK]) -> i32 {
    qs.iter().map(|&q| i32::from(q)).sum()
}

/// Index of the first element of largest magnitude, given that magnitude (the Q8_K
/// reference takes the first on ties).
fn first_with_magnitude(x: &[f32], amax: f32) -> usize {
    x.iter().position(|v| v.abs() == amax).unwrap_or(0)
}
