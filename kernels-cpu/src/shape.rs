//! The one validation of a matvec/matmul request, shared by both (and the rows of
//! `ops::weighted_rows`) so their errors agree.

use crate::act::QuantizedActs;
use crate::dot::DotFn;
use crate::formats::{FormatError, GgmlType};
use crate::isa::Isa;
use crate::packed::layout;
use crate::registry;

/// Checks that `w` is exactly `rows` rows of `cols` elements of type `ty` (whole blocks in
/// every row); returns the bytes of one row.
pub(crate) fn check_rows(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
) -> Result<usize, FormatError> {
    layout::check(ty, w.len(), rows, cols)?;
    Ok(layout::row_bytes(ty, cols))
}

/// Validates y (n×rows) = acts (n×cols) · Wᵀ, W `rows`×`cols` of type `ty`; the kernel
/// to run it. A matvec is the case n = 1.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_shape(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    acts: &QuantizedActs,
    n: usize,
    y: &[f32],
) -> Result<DotFn, FormatError> {
    if !isa.is_supported() {
        return Err(FormatError::Unsupported {
            ty,
            what: "ISA level not supported by this CPU",
        });
    }
    let dot = registry::format(ty)
        .kernel(isa)
        .ok_or(FormatError::Unsupported {
            ty,
            what: "not a weight format",
        })?;
    check_rows(ty, w, rows, cols)?;
    if acts.ty() != Some(ty.vec_dot_type()) {
        return Err(FormatError::Unsupported {
            ty,
            what: "activations are not quantized to this format's vec_dot type",
        });
    }
    if acts.cols() != cols || acts.n() != n {
        let act_ty = ty.vec_dot_type();
        return Err(FormatError::ByteLength {
            ty: act_ty,
            n: n * cols,
            expected: n * cols / act_ty.block_size() * act_ty.type_size(),
            got: acts.n() * acts.cols() / act_ty.block_size() * act_ty.type_size(),
        });
    }
    if y.len() != n * rows {
        return Err(FormatError::ByteLength {
            ty: GgmlType::F32,
            n: n * rows,
            expected: n * rows * 4,
            got: y.len() * 4,
        });
    }
    Ok(dot)
}
