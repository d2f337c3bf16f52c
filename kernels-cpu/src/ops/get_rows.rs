//! Embedding lookup: rows of a matrix stored in any format, dequantized to f32.

use super::{OpError, PARALLEL_MIN_WORK};
use crate::formats::{dequantize, FormatError, GgmlType};
use rayon::prelude::*;

/// Dequantizes rows `rows` of the matrix `data` (rows of `row_len` elements of type `ty`,
/// back to back) into `out` (`rows.len() × row_len`). Batches are split across threads.
///
/// Errors if `data` is not whole rows of `ty`, or a row index is past its end.
pub fn get_rows(
    ty: GgmlType,
    data: &[u8],
    row_len: usize,
    rows: &[u32],
    out: &mut [f32],
) -> Result<(), OpError> {
    let row_bytes = check(ty, data, row_len, rows, out.len())?;
    let one = |(&r, out): (&u32, &mut [f32])| {
        let start = r as usize * row_bytes;
        dequantize(ty, &data[start..start + row_bytes], out)
    };
    if out.len() >= PARALLEL_MIN_WORK && rows.len() > 1 {
        rows.par_iter()
            .zip(out.par_chunks_mut(row_len))
            .try_for_each(one)?;
    } else {
        rows.iter().zip(out.chunks_mut(row_len)).try_for_each(one)?;
    }
    Ok(())
}

/// The reference twin: one row after the other, dequantized whole-row through the
/// format's reference code.
pub fn get_rows_ref(
    ty: GgmlType,
    data: &[u8],
    row_len: usize,
    rows: &[u32],
    out: &mut [f32],
) -> Result<(), OpError> {
    let row_bytes = check(ty, data, row_len, rows, out.len())?;
    for (&r, out) in rows.iter().zip(out.chunks_mut(row_len)) {
        let start = r as usize * row_bytes;
        dequantize(ty, &data[start..start + row_bytes], out)?;
    }
    Ok(())
}

/// Validates the request and returns the bytes per row.
fn check(
    ty: GgmlType,
    data: &[u8],
    row_len: usize,
    rows: &[u32],
    out: usize,
) -> Result<usize, OpError> {
    assert!(
        row_len > 0 && out == rows.len() * row_len,
        "get_rows: out has {out} elements, expected {} rows × {row_len}",
        rows.len()
    );
    let block = ty.block_size();
    let row_bytes = ty
        .bytes_for(row_len as u64)
        .ok_or(FormatError::NotWholeBlocks {
            ty,
            n: row_len,
            block,
        })? as usize;
    if !data.len().is_multiple_of(row_bytes) {
        let n_rows = data.len().div_ceil(row_bytes);
        return Err(FormatError::ByteLength {
            ty,
            n: n_rows * row_len,
            expected: n_rows * row_bytes,
            got: data.len(),
        }
        .into());
    }
    let n_rows = data.len() / row_bytes;
    if let Some(&row) = rows.iter().find(|&&r| r as usize >= n_rows) {
        return Err(OpError::RowOutOfRange { row, n_rows });
    }
    Ok(row_bytes)
}
