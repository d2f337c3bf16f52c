//! Block layouts, byte for byte as ggml stores them (little-endian, no padding).
//!
//! Every struct is `#[repr(C)]`, `Pod` (so a byte slice of whole blocks can be viewed as
//! blocks without copying, see [`as_blocks`]) and has its size asserted against the table.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{FormatError, GgmlType};

/// Elements per legacy block.
pub const QK: usize = 32;
/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales/mins in Q3_K/Q4_K/Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// A block type of one format.
pub trait Block: Pod {
    const TYPE: GgmlType;
}

macro_rules! block {
    ($(#[$doc:meta])* $name:ident, $ty:ident, { $($field:ident : $fty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
        #[repr(C)]
        pub struct $name {
            $(pub $field: $fty),*
        }
        impl Block for $name {
            const TYPE: GgmlType = GgmlType::$ty;
        }
        const _: () = assert!(std::mem::size_of::<$name>() == GgmlType::$ty.type_size());
    };
}

block!(
    /// y = (q − 8)·d; element j is the low nibble of `qs[j]`, element j+16 the high one.
    BlockQ4_0, Q4_0, { d: f16, qs: [u8; QK / 2] }
);
block!(
    /// y = q·d + m.
    BlockQ4_1, Q4_1, { d: f16, m: f16, qs: [u8; QK / 2] }
);
block!(
    /// y = (q − 16)·d; the fifth bit of element j is bit j of `qh` (little-endian u32).
    BlockQ5_0, Q5_0, { d: f16, qh: [u8; 4], qs: [u8; QK / 2] }
);
block!(
    /// y = q·d + m, five-bit q as in Q5_0.
    BlockQ5_1, Q5_1, { d: f16, m: f16, qh: [u8; 4], qs: [u8; QK / 2] }
);
block!(
    /// y = q·d.
    BlockQ8_0, Q8_0, { d: f16, qs: [i8; QK] }
);
block!(
    /// Activations only: `s` = d·Σqs, which applies a Q4_1/Q5_1 weight's min as m·s.
    BlockQ8_1, Q8_1, { d: f16, s: f16, qs: [i8; QK] }
);
block!(
    /// 16 sub-blocks of 16: y = d·(sc & 0xF)·q − dmin·(sc >> 4).
    BlockQ2K, Q2_K, { scales: [u8; QK_K / 16], qs: [u8; QK_K / 4], d: f16, dmin: f16 }
);
block!(
    /// y = d·(sc − 32)·(q2 − (hmask bit set ? 0 : 4)); 16 six-bit scales in 12 bytes.
    BlockQ3K, Q3_K, { hmask: [u8; QK_K / 8], qs: [u8; QK_K / 4], scales: [u8; K_SCALE_SIZE], d: f16 }
);
block!(
    /// 8 sub-blocks of 32: y = d·sc_j·q − dmin·m_j, six-bit scales and mins.
    BlockQ4K, Q4_K, { d: f16, dmin: f16, scales: [u8; K_SCALE_SIZE], qs: [u8; QK_K / 2] }
);
block!(
    /// Q4_K plus a fifth bit per element in `qh`.
    BlockQ5K, Q5_K, { d: f16, dmin: f16, scales: [u8; K_SCALE_SIZE], qh: [u8; QK_K / 8], qs: [u8; QK_K / 2] }
);
block!(
    /// 16 sub-blocks of 16: y = d·sc·(q6 − 32), q6 = low nibble from `ql` | two bits of `qh` << 4.
    BlockQ6K, Q6_K, { ql: [u8; QK_K / 2], qh: [u8; QK_K / 4], scales: [i8; QK_K / 16], d: f16 }
);
block!(
    /// Activations only: f32 scale, and the sum of each 16 quants for the K-quant mins.
    BlockQ8K, Q8_K, { d: f32, qs: [i8; QK_K], bsums: [i16; QK_K / 16] }
);

/// Views `bytes` as blocks of `B`, checking that the length is whole blocks and the start
/// is aligned for `B` (memory-mapped GGUF tensors are 32-byte aligned; a byte buffer from
/// elsewhere may need [`to_blocks`] instead).
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Result<&[B], FormatError> {
    whole_blocks::<B>(bytes)?;
    bytemuck::try_cast_slice(bytes).map_err(|_| FormatError::Unsupported {
        ty: B::TYPE,
        what: "byte slice is not aligned for this block type",
    })
}

/// Copies `bytes` into owned, aligned blocks of `B` (for buffers of unknown alignment).
pub fn to_blocks<B: Block>(bytes: &[u8]) -> Result<Vec<B>, FormatError> {
    let size = whole_blocks::<B>(bytes)?;
    Ok(bytes
        .chunks_exact(size)
        .map(bytemuck::pod_read_unaligned)
        .collect())
}

/// The size of `B` if `bytes` is whole blocks of it, else the length error.
fn whole_blocks<B: Block>(bytes: &[u8]) -> Result<usize, FormatError> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return Err(FormatError::ByteLength {
            ty: B::TYPE,
            n: bytes.len() / size * B::TYPE.block_size(),
            expected: bytes.len() / size * size,
            got: bytes.len(),
        });
    }
    Ok(size)
}
