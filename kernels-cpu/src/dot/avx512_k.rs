//! AVX-512 dot products for the legacy formats (filled in below).
use super::DotFn;
use crate::formats::GgmlType;
use crate::isa::Isa;

pub fn kernel(_ty: GgmlType, _level: Isa) -> Option<DotFn> {
    None
}
