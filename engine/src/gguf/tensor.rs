//! Tensor infos: name, type, shape and where the data lies, with the shape rules GGUF
//! readers (llama.cpp's among them) enforce.

use strata_kernels_cpu::GgmlType;

use super::GgufError;

/// ggml tensors have at most four dimensions.
pub const MAX_DIMS: usize = 4;

/// ggml's name buffer is 64 bytes including the terminating NUL (`GGML_MAX_NAME`).
pub const MAX_NAME_LEN: usize = 63;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// Dimensions in ggml order: `dims[0]` (ne0) is the row length, the fastest-varying one.
    pub dims: Vec<u64>,
    /// Start of the data, relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes, from type and shape.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (1 for a tensor with no dimensions, as in ggml).
    pub fn n_elements(&self) -> u64 {
        // Validated at construction not to overflow.
        self.dims.iter().product()
    }

    /// Row length (ne0), 1 for a tensor with no dimensions.
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows: the product of every dimension after the first.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }

    /// End of the data, relative to the data section.
    pub fn end(&self) -> u64 {
        // Validated at construction not to overflow.
        self.offset + self.n_bytes
    }
}

/// The byte size of a tensor of type `ty` and shape `dims`, after the checks every GGUF
/// tensor must pass: at most [`MAX_DIMS`] dimensions, each and their product below 2^63
/// (ggml stores them as i64), the row a whole number of blocks, the byte size below 2^63.
/// `offset` (where the tensor's info starts in the file) is for error messages.
pub fn tensor_size(name: &str, offset: u64, ty: GgmlType, dims: &[u64]) -> Result<u64, GgufError> {
    if dims.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            name: name.to_owned(),
            offset,
            n_dims: dims.len() as u32,
            max: MAX_DIMS,
        });
    }
    let overflow = || GgufError::DimensionOverflow {
        name: name.to_owned(),
        offset,
        dims: dims.to_vec(),
    };
    let limit = i64::MAX as u64;
    let mut n: u64 = 1;
    for &d in dims {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= limit)
            .ok_or_else(overflow)?;
    }
    let row = dims.first().copied().unwrap_or(1);
    let block = ty.block_size();
    if row % block as u64 != 0 {
        return Err(GgufError::RowNotWholeBlocks {
            name: name.to_owned(),
            ty,
            row,
            block,
        });
    }
    ty.bytes_for(n).filter(|&b| b <= limit).ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_type_and_shape() {
        assert_eq!(
            tensor_size("t", 0, GgmlType::Q4_1, &[576, 3]).unwrap(),
            576 / 32 * 20 * 3
        );
        assert_eq!(tensor_size("t", 0, GgmlType::F32, &[]).unwrap(), 4);
        assert_eq!(tensor_size("t", 0, GgmlType::F32, &[0, 7]).unwrap(), 0);
    }

    #[test]
    fn bad_shapes_are_named_errors() {
        let e = tensor_size("w", 9, GgmlType::F32, &[1, 1, 1, 1, 1]).unwrap_err();
        assert!(
            matches!(
                e,
                GgufError::TooManyDims {
                    n_dims: 5,
                    offset: 9,
                    ..
                }
            ),
            "{e}"
        );
        let e = tensor_size("w", 9, GgmlType::F32, &[1 << 32, 1 << 32]).unwrap_err();
        assert!(matches!(e, GgufError::DimensionOverflow { .. }), "{e}");
        // Elements fit in i64 but F32 bytes (4 each) do not.
        let e = tensor_size("w", 9, GgmlType::F32, &[1 << 62]).unwrap_err();
        assert!(matches!(e, GgufError::DimensionOverflow { .. }), "{e}");
        let e = tensor_size("w", 9, GgmlType::Q4_K, &[128, 2]).unwrap_err();
        assert!(
            matches!(
                e,
                GgufError::RowNotWholeBlocks {
                    row: 128,
                    block: 256,
                    ..
                }
            ),
            "{e}"
        );
    }
}
