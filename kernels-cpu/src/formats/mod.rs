//! The quant formats: one table row per type, one module per block layout.
//!
//! Every other crate takes its facts about a format (type id, block size, bytes per block,
//! which activation format its dot product pairs with) from [`GgmlType`], and its numbers
//! from the scalar reference code in the per-format modules. The golden tests hold that
//! reference code to `gguf.quants` bit for bit.
//!
//! Two levels of API:
//! - [`dequantize`] / [`quantize`]: any type, raw bytes of any alignment, lengths checked
//!   and reported as [`FormatError`]s.
//! - per format, `qX_Y::dequantize(&[Block], &mut [f32])` and
//!   `qX_Y::quantize(&[f32], &mut [Block])` on typed blocks ([`float`] works on `u16` bits).
//!   These panic when the f32 slice is not exactly the blocks' element count: callers size
//!   their buffers from the blocks.
//!
//! What each `quantize` is: for BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 the same bytes as
//! `gguf.quants.quantize` (ggml's reference rounding, noted per module); Q8_1 and Q8_K
//! follow ggml's `quantize_row_q8_1_ref` / `quantize_row_q8_K_ref` and are the references
//! for activation quantization; Q2_K…Q6_K are our own scale search (`kquant_fit`).

pub mod blocks;
pub mod float;
pub mod k_scales;
mod kquant_fit;
mod legacy;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;
mod table;

pub use table::GgmlType;

use bytemuck::Pod;
use thiserror::Error;

/// A request that does not fit the format: wrong lengths, misaligned bytes, or a type that
/// cannot do what was asked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("{ty}: {n} elements is not a multiple of the block size {block}")]
    NotWholeBlocks {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{ty}: expected {expected} bytes for {n} elements, got {got}")]
    ByteLength {
        ty: GgmlType,
        n: usize,
        expected: usize,
        got: usize,
    },
    #[error("{ty}: {what}")]
    Unsupported { ty: GgmlType, what: &'static str },
}

/// Dequantizes `src`, the raw bytes of `dst.len()` elements of type `ty`, into `dst`.
///
/// `src` may have any alignment: aligned bytes are read in place, others are copied first.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), FormatError> {
    check_bytes(ty, dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => with_view::<u16>(src, |h| float::dequantize_f16(h, dst)),
        GgmlType::BF16 => with_view::<u16>(src, |h| float::dequantize_bf16(h, dst)),
        GgmlType::Q4_0 => with_view(src, |b| q4_0::dequantize(b, dst)),
        GgmlType::Q4_1 => with_view(src, |b| q4_1::dequantize(b, dst)),
        GgmlType::Q5_0 => with_view(src, |b| q5_0::dequantize(b, dst)),
        GgmlType::Q5_1 => with_view(src, |b| q5_1::dequantize(b, dst)),
        GgmlType::Q8_0 => with_view(src, |b| q8_0::dequantize(b, dst)),
        GgmlType::Q8_1 => with_view(src, |b| q8_1::dequantize(b, dst)),
        GgmlType::Q8_K => with_view(src, |b| q8_k::dequantize(b, dst)),
        GgmlType::Q2_K => with_view(src, |b| q2_k::dequantize(b, dst)),
        GgmlType::Q3_K => with_view(src, |b| q3_k::dequantize(b, dst)),
        GgmlType::Q4_K => with_view(src, |b| q4_k::dequantize(b, dst)),
        GgmlType::Q5_K => with_view(src, |b| q5_k::dequantize(b, dst)),
        GgmlType::Q6_K => with_view(src, |b| q6_k::dequantize(b, dst)),
    }
    Ok(())
}

/// Quantizes `src` into `dst`, the raw bytes of `src.len()` elements of type `ty`.
///
/// `dst` may have any alignment: unaligned output is quantized aside, then copied.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), FormatError> {
    check_bytes(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => {
            for (b, x) in dst.chunks_exact_mut(4).zip(src) {
                b.copy_from_slice(&x.to_le_bytes());
            }
        }
        GgmlType::F16 => with_view_mut::<u16>(dst, |h| float::quantize_f16(src, h)),
        GgmlType::BF16 => with_view_mut::<u16>(dst, |h| float::quantize_bf16(src, h)),
        GgmlType::Q4_0 => with_view_mut(dst, |b| q4_0::quantize(src, b)),
        GgmlType::Q4_1 => with_view_mut(dst, |b| q4_1::quantize(src, b)),
        GgmlType::Q5_0 => with_view_mut(dst, |b| q5_0::quantize(src, b)),
        GgmlType::Q5_1 => with_view_mut(dst, |b| q5_1::quantize(src, b)),
        GgmlType::Q8_0 => with_view_mut(dst, |b| q8_0::quantize(src, b)),
        GgmlType::Q8_1 => with_view_mut(dst, |b| q8_1::quantize(src, b)),
        GgmlType::Q8_K => with_view_mut(dst, |b| q8_k::quantize(src, b)),
        GgmlType::Q2_K => with_view_mut(dst, |b| q2_k::quantize(src, b)),
        GgmlType::Q3_K => with_view_mut(dst, |b| q3_k::quantize(src, b)),
        GgmlType::Q4_K => with_view_mut(dst, |b| q4_k::quantize(src, b)),
        GgmlType::Q5_K => with_view_mut(dst, |b| q5_k::quantize(src, b)),
        GgmlType::Q6_K => with_view_mut(dst, |b| q6_k::quantize(src, b)),
    }
    Ok(())
}

/// Checks that `n` elements are whole blocks of `ty` taking exactly `bytes` bytes.
fn check_bytes(ty: GgmlType, n: usize, bytes: usize) -> Result<(), FormatError> {
    let block = ty.block_size();
    if !n.is_multiple_of(block) {
        return Err(FormatError::NotWholeBlocks { ty, n, block });
    }
    let expected = n / block * ty.type_size();
    if bytes != expected {
        return Err(FormatError::ByteLength {
            ty,
            n,
            expected,
            got: bytes,
        });
    }
    Ok(())
}

/// Runs `f` on `bytes` viewed as `T`s, in place when aligned, else on an aligned copy.
/// The length is already checked to be whole `T`s.
fn with_view<T: Pod>(bytes: &[u8], f: impl FnOnce(&[T])) {
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(view) => f(view),
        Err(_) => {
            let copy: Vec<T> = bytes
                .chunks_exact(std::mem::size_of::<T>())
                .map(bytemuck::pod_read_unaligned)
                .collect();
            f(&copy)
        }
    }
}

/// Runs `f` on `bytes` viewed as `T`s, in place when aligned, else on zeroed aligned
/// storage that is copied back.
fn with_view_mut<T: Pod>(bytes: &mut [u8], f: impl FnOnce(&mut [T])) {
    match bytemuck::try_cast_slice_mut::<u8, T>(bytes) {
        Ok(view) => f(view),
        Err(_) => {
            let mut aside = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
            f(&mut aside);
            bytes.copy_from_slice(bytemuck::cast_slice(&aside));
        }
    }
}

/// The per-format functions' contract: `values` is exactly `blocks` whole blocks of `ty`.
///
/// # Panics
///
/// When it is not: the typed per-format API is for callers that have already sized their
/// buffers; [`dequantize`] and [`quantize`] check lengths and return errors instead.
pub(crate) fn check_lengths(ty: GgmlType, blocks: usize, values: usize) {
    assert_eq!(
        blocks * ty.block_size(),
        values,
        "{ty}: {blocks} blocks hold {} values, the f32 slice has {values}",
        blocks * ty.block_size()
    );
}
