//! What each tensor costs on the device that holds it, and which part of the model it
//! belongs to.
//!
//! A device's weight buffer holds its tensors one after another, each starting at an
//! aligned offset (as in the GGUF data section and ggml's backend buffers), so a tensor
//! costs its data bytes rounded up to the alignment. [`weights_buffer_bytes`] is that sum:
//! the size of the buffer that holds a set of tensors.

use strata_kernels_cpu::GgmlType;

use super::error::PlanError;

/// The part of the model a tensor belongs to; a part is never split across devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `token_embd.*` and any other tensor outside the blocks and the output layer: stays on
    /// the CPU, where the embedding lookup runs.
    Embedding,
    /// A tensor of transformer block `i` (`blk.<i>.*`).
    Block(usize),
    /// The final norm and the output projection (`output_norm.*`, `output.*`).
    Output,
}

impl Role {
    /// The role a tensor's name gives it.
    pub fn of(name: &str) -> Role {
        if let Some(rest) = name.strip_prefix("blk.") {
            if let Some((i, _)) = rest.split_once('.') {
                if let Ok(i) = i.parse() {
                    return Role::Block(i);
                }
            }
        }
        if name.starts_with("output.") || name.starts_with("output_norm.") {
            return Role::Output;
        }
        Role::Embedding
    }
}

/// One tensor, costed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorCost {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub role: Role,
    /// Data bytes, from type and shape.
    pub data_bytes: u64,
    /// Bytes it takes in a device buffer: `data_bytes` rounded up to the alignment.
    pub bytes: u64,
}

impl TensorCost {
    /// Costs a tensor of type `ty` and shape `dims` in a buffer aligned to `alignment`.
    pub fn new(name: &str, ty: GgmlType, dims: &[u64], alignment: u64) -> Result<Self, PlanError> {
        let bad = |why: String| PlanError::Model {
            why: format!("tensor '{name}': {why}"),
        };
        let n = dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
        let data_bytes = ty.bytes_for(n).ok_or_else(|| {
            bad(format!(
                "{n} elements are not whole {ty} blocks of {}",
                ty.block_size()
            ))
        })?;
        let bytes = padded(data_bytes, alignment)
            .ok_or_else(|| bad(format!("{data_bytes} bytes overflow when aligned")))?;
        Ok(TensorCost {
            name: name.to_string(),
            ty,
            dims: dims.to_vec(),
            role: Role::of(name),
            data_bytes,
            bytes,
        })
    }
}

/// `n` rounded up to a multiple of `alignment` (a power of two or not; 0 or 1: unchanged).
pub fn padded(n: u64, alignment: u64) -> Option<u64> {
    if alignment <= 1 {
        return Some(n);
    }
    n.div_ceil(alignment).checked_mul(alignment)
}

/// Bytes of a buffer holding `tensors` back to back, each at an aligned offset.
pub fn weights_buffer_bytes<'a>(tensors: impl IntoIterator<Item = &'a TensorCost>) -> u64 {
    tensors.into_iter().map(|t| t.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(Role::of("blk.12.ffn_up_exps.weight"), Role::Block(12));
        assert_eq!(Role::of("output.weight"), Role::Output);
        assert_eq!(Role::of("output_norm.weight"), Role::Output);
        assert_eq!(Role::of("token_embd.weight"), Role::Embedding);
        assert_eq!(Role::of("blk.x.weight"), Role::Embedding);
        assert_eq!(Role::of("rope_freqs.weight"), Role::Embedding);
    }

    #[test]
    fn costs_include_alignment() {
        // 576 F32 = 2304 bytes, a multiple of 32: no padding.
        let t = TensorCost::new("a", GgmlType::F32, &[576], 32).unwrap();
        assert_eq!((t.data_bytes, t.bytes), (2304, 2304));
        // One Q8_0 block is 34 bytes: padded to 64.
        let t = TensorCost::new("b", GgmlType::Q8_0, &[32], 32).unwrap();
        assert_eq!((t.data_bytes, t.bytes), (34, 64));
        // 7168 × 256 × 3 Q8_0: 7168/32·34·768 bytes.
        let t = TensorCost::new("c", GgmlType::Q8_0, &[7168, 256, 3], 32).unwrap();
        assert_eq!(t.data_bytes, 7168 / 32 * 34 * 768);
        assert!(TensorCost::new("d", GgmlType::Q4_K, &[100], 32)
            .unwrap_err()
            .to_string()
            .contains("'d'"));
        assert_eq!(padded(5, 0), Some(5));
        assert_eq!(padded(u64::MAX, 32), None);
    }
}
