//! ggml's type table, restricted to the formats Strata supports.

use std::fmt;

/// A tensor element format, numbered as ggml numbers it (the ids are written in GGUF files).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    BF16 = 30,
}

/// One row of the table: what every layer of the code needs to know about a format.
struct Row {
    name: &'static str,
    block_size: usize,
    type_size: usize,
    /// The format the other operand is quantized to for a dot product with this one.
    vec_dot: GgmlType,
    /// May appear as a tensor in a model file (activation-only formats may not).
    weight: bool,
    /// llama.cpp's `llama_ftype` of a model whose matrices are all of this format (the
    /// "_S" variant for K-quants, which have no single pure ftype); 0 for activations.
    file_type: u32,
    /// A K-quant's stand-in for rows that are not whole 256-element blocks (ggml's
    /// choice: a 32-element format of about the same bits per weight).
    k_fallback: Option<GgmlType>,
}

impl GgmlType {
    /// Every supported type, in id order.
    pub const ALL: [GgmlType; 15] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::BF16,
    ];

    /// The formats a weight tensor may have.
    pub const WEIGHTS: [GgmlType; 13] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    const fn row(self) -> Row {
        use GgmlType::*;
        let (name, block_size, type_size, vec_dot, weight, file_type, k_fallback) = match self {
            F32 => ("F32", 1, 4, F32, true, 0, None),
            F16 => ("F16", 1, 2, F32, true, 1, None),
            BF16 => ("BF16", 1, 2, F32, true, 32, None),
            Q4_0 => ("Q4_0", 32, 18, Q8_0, true, 2, None),
            Q4_1 => ("Q4_1", 32, 20, Q8_1, true, 3, None),
            Q5_0 => ("Q5_0", 32, 22, Q8_0, true, 8, None),
            Q5_1 => ("Q5_1", 32, 24, Q8_1, true, 9, None),
            Q8_0 => ("Q8_0", 32, 34, Q8_0, true, 7, None),
            Q8_1 => ("Q8_1", 32, 36, Q8_1, false, 0, None),
            Q2_K => ("Q2_K", 256, 84, Q8_K, true, 10, Some(Q4_0)),
            Q3_K => ("Q3_K", 256, 110, Q8_K, true, 11, Some(Q4_0)),
            Q4_K => ("Q4_K", 256, 144, Q8_K, true, 14, Some(Q5_0)),
            Q5_K => ("Q5_K", 256, 176, Q8_K, true, 16, Some(Q5_1)),
            Q6_K => ("Q6_K", 256, 210, Q8_K, true, 18, Some(Q8_0)),
            Q8_K => ("Q8_K", 256, 292, Q8_K, false, 0, None),
        };
        Row {
            name,
            block_size,
            type_size,
            vec_dot,
            weight,
            file_type,
            k_fallback,
        }
    }

    /// The type with ggml id `id`, if Strata supports it.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The type named `name` (case-insensitive, ggml's spelling: "q4_k", "BF16").
    pub fn from_name(name: &str) -> Option<GgmlType> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    pub const fn id(self) -> u32 {
        self as u32
    }

    pub const fn name(self) -> &'static str {
        self.row().name
    }

    /// Elements per block.
    pub const fn block_size(self) -> usize {
        self.row().block_size
    }

    /// Bytes per block.
    pub const fn type_size(self) -> usize {
        self.row().type_size
    }

    /// The activation format this weight format's dot product takes.
    pub const fn vec_dot_type(self) -> GgmlType {
        self.row().vec_dot
    }

    /// Whether the type may be stored in a model file.
    pub const fn is_weight(self) -> bool {
        self.row().weight
    }

    /// llama.cpp's `general.file_type` for a model whose matrices are all `self` (the "_S"
    /// variant for K-quants); 0 for the activation-only formats.
    pub const fn file_type(self) -> u32 {
        self.row().file_type
    }

    /// What a K-quant falls back to for rows that are not whole 256-element blocks.
    pub const fn k_fallback(self) -> Option<GgmlType> {
        self.row().k_fallback
    }

    /// F32, F16, BF16: one value per block, nothing quantized.
    pub const fn is_float(self) -> bool {
        self.block_size() == 1
    }

    pub const fn is_k_quant(self) -> bool {
        self.block_size() == 256
    }

    /// Bytes taken by `n` elements, or `None` if `n` is not whole blocks or overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_are_unique() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(&t.name().to_lowercase()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None, "Q4_2 was removed from ggml");
        assert_eq!(GgmlType::from_id(1000), None);
    }

    #[test]
    fn bytes_for_counts_whole_blocks_only() {
        assert_eq!(GgmlType::Q4_0.bytes_for(64), Some(36));
        assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
        assert_eq!(GgmlType::Q6_K.bytes_for(512), Some(420));
        assert_eq!(GgmlType::F16.bytes_for(3), Some(6));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }
}
