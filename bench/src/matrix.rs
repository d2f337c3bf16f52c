//! Benchmark matrices: valid blocks of any weight format, every row different, in the row
//! layout or packed as the engine loads them; and the matvec bandwidth they give, the
//! speed a decode's weights are read at by the kernels rather than by a plain sum.

use std::time::Instant;

use strata_engine::huge::HugeBytes;
use strata_kernels_cpu::act::quantize_acts_isa;
use strata_kernels_cpu::isa::{self, Isa};
use strata_kernels_cpu::matmul::matmul_quantized_isa;
use strata_kernels_cpu::matvec::matvec_quantized_isa;
use strata_kernels_cpu::packed::{self, matmul_packed, matvec_packed, Packed};
use strata_kernels_cpu::{FormatError, GgmlType, QuantizedActs};

use crate::bandwidth::splitmix;

type BoxError = Box<dyn std::error::Error>;

/// A benchmark matrix in the row layout or packed as the engine loads it, in a buffer on
/// huge pages as the engine holds its weights (`strata_engine::huge`).
pub struct Weights {
    ty: GgmlType,
    w: HugeBytes,
    rows: usize,
    cols: usize,
    packed: bool,
}

impl Weights {
    /// `rows` rows like `row` (a row of `cols` elements of `ty`), each made different from
    /// every other ([`salt`]), packed if `packed`.
    pub fn new(
        isa: Isa,
        ty: GgmlType,
        row: &[u8],
        rows: usize,
        cols: usize,
        packed: bool,
    ) -> Result<Weights, BoxError> {
        let mut w = rows
            .checked_mul(row.len())
            .and_then(HugeBytes::try_zeroed)
            .ok_or_else(|| format!("cannot allocate {rows} rows of {} bytes", row.len()))?;
        for (i, dst) in w.bytes_mut().chunks_exact_mut(row.len()).enumerate() {
            dst.copy_from_slice(row);
            salt(ty, dst, i as u64)?;
        }
        if packed && !packed::pack_in_place(isa, ty, w.bytes_mut(), rows, cols)? {
            return Err(format!("{ty} has no packed kernels at {isa}").into());
        }
        Ok(Weights {
            ty,
            w,
            rows,
            cols,
            packed,
        })
    }

    /// y = acts · Wᵀ (matvec for one token, matmul for more).
    pub fn mul(&self, isa: Isa, acts: &QuantizedActs, y: &mut [f32]) -> Result<(), FormatError> {
        let (ty, w, rows, cols) = (self.ty, self.w.bytes(), self.rows, self.cols);
        match (self.packed, acts.n()) {
            (false, 1) => matvec_quantized_isa(isa, ty, w, rows, cols, acts, y),
            (false, _) => matmul_quantized_isa(isa, ty, w, rows, cols, acts, y),
            (true, 1) => matvec_packed(&Packed::new(ty, rows, cols, w)?, acts, y),
            (true, _) => matmul_packed(&Packed::new(ty, rows, cols, w)?, acts, y),
        }
    }

    /// Bytes of the weights (the same in both layouts).
    pub fn bytes(&self) -> usize {
        self.w.bytes().len()
    }
}

/// Makes row `i` unlike any other row while keeping it valid: random bytes XORed into
/// every byte of every block except its f16 scales (any bit pattern is a valid quant,
/// 6-bit scale or int8 scale), or, for float formats, into the lowest mantissa bit of each
/// element (a finite value stays finite). A matrix or buffer of identical pages can be
/// deduplicated by the host under a VM (same-page merging), and then reads hit one
/// physical page in cache: a yardstick of identical pages measures the merge, not memory.
fn salt(ty: GgmlType, row: &mut [u8], i: u64) -> Result<(), BoxError> {
    use std::mem::offset_of;
    use strata_kernels_cpu::formats::blocks::*;
    let mut state = splitmix(i ^ 0x5851_F42D_4C95_7F2D);
    let mut next = || {
        state = splitmix(state);
        state
    };
    let element = match ty {
        GgmlType::F32 => Some(4),
        GgmlType::F16 | GgmlType::BF16 => Some(2),
        _ => None,
    };
    if let Some(size) = element {
        for e in row.chunks_exact_mut(size) {
            e[0] ^= (next() & 1) as u8;
        }
        return Ok(());
    }
    let scales: &[usize] = match ty {
        GgmlType::Q4_0 => &[offset_of!(BlockQ4_0, d)],
        GgmlType::Q4_1 => &[offset_of!(BlockQ4_1, d), offset_of!(BlockQ4_1, m)],
        GgmlType::Q5_0 => &[offset_of!(BlockQ5_0, d)],
        GgmlType::Q5_1 => &[offset_of!(BlockQ5_1, d), offset_of!(BlockQ5_1, m)],
        GgmlType::Q8_0 => &[offset_of!(BlockQ8_0, d)],
        GgmlType::Q2_K => &[offset_of!(BlockQ2K, d), offset_of!(BlockQ2K, dmin)],
        GgmlType::Q3_K => &[offset_of!(BlockQ3K, d)],
        GgmlType::Q4_K => &[offset_of!(BlockQ4K, d), offset_of!(BlockQ4K, dmin)],
        GgmlType::Q5_K => &[offset_of!(BlockQ5K, d), offset_of!(BlockQ5K, dmin)],
        GgmlType::Q6_K => &[offset_of!(BlockQ6K, d)],
        other => return Err(format!("{other}: no salting rule").into()),
    };
    for block in row.chunks_exact_mut(ty.type_size()) {
        for (k, b) in block.iter_mut().enumerate() {
            if !scales.iter().any(|&o| k == o || k == o + 1) {
                *b ^= next() as u8;
            }
        }
    }
    Ok(())
}

/// A row of valid blocks of `ty` (finite scales), from a small deterministic generator.
pub fn sample_row(ty: GgmlType, cols: usize) -> Result<Vec<u8>, BoxError> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let x: Vec<f32> = (0..cols)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let mut row = vec![0u8; cols / ty.block_size() * ty.type_size()];
    strata_kernels_cpu::quantize(ty, &x, &mut row)?;
    Ok(row)
}

/// Matvec bytes/s of the kernels the engine would use for `ty` (packed where the active ISA
/// packs it) on a matrix of `mib` MiB, on a pool of `threads` threads: the best of three.
pub fn matvec_bandwidth(ty: GgmlType, threads: usize, mib: usize) -> Result<f64, BoxError> {
    let isa = isa::active();
    let cols = 2048;
    let row = sample_row(ty, cols)?;
    let rows = (mib << 20).div_ceil(row.len());
    let w = Weights::new(isa, ty, &row, rows, cols, packed::supports(ty, isa))?;
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let acts = quantize_acts_isa(isa, ty.vec_dot_type(), &x, 1, cols)?;
    let mut y = vec![0f32; rows];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let start = Instant::now();
        pool.install(|| w.mul(isa, &acts, &mut y))?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(w.bytes() as f64 / best)
}
