//! One row per format: everything Strata runs for it, chosen here and nowhere else.
//!
//! In the spirit of ggml's type-traits table, [`format`] gives each [`GgmlType`] its
//! [`Format`] row; dispatch elsewhere (matvec, matmul, the packed kernels, the benches)
//! reads the row instead of matching on the type. The block layout itself (block size,
//! bytes per block, the activation format a dot product takes) is the type table's, in
//! `formats::table`, read through the row's `ty`.
//!
//! How to walk one format, Q4_K for example:
//! 1. Definition: `formats/q4_k.rs` (its block struct in `formats/blocks.rs`), reference
//!    `dequantize`/`quantize` (`formats::dequantize(GgmlType::Q4_K, ..)`).
//! 2. Reference twin of its dot product: `fn q4_k_q8_k` in `dot/reference.rs` (Q4_K
//!    weights times Q8_K activations; every kernel is named by what it multiplies).
//! 3. CPU kernels per ISA, the same name in each file: `dot/portable.rs`, `dot/avx2.rs`,
//!    `dot/avx512.rs` (`bw::` for AVX-512 F+BW, `vnni::` for VNNI); the row's `dot` field
//!    says which runs at each level, and a level without its own uses the next lower one.
//!    Tiles (`dot/tile512.rs`) and VNNI matmul panels (`dot/panel512.rs`) where the row has
//!    them.
//! 4. Packed kernel (16-row groups, AVX-512): the row's `packed` field, in `packed/`; its
//!    `stream` a one-token kernel for long matrices on one thread where the format has one
//!    (Q4_0).
//! 5. CUDA kernel: the row's `cuda` name, a kernel of `kernels-cuda/kernels/matvec.cu` made
//!    from the format's row of `FOR_EACH_QUANT` in `formats.cuh`, whose `dot_q4_k` holds the
//!    arithmetic.
//! 6. Golden tests: `tests/tests/golden_formats.rs` (`dequantize_q4_k`) and
//!    `tests/tests/matvec_golden.rs` (`q4_k_matches_golden`); twins at every level in
//!    `kernels-cpu/tests/dot_twins.rs`.
//! 7. Bench: `kernels-cpu/benches/matvec.rs`, groups `matvec/Q4_K`, `matmul/Q4_K`,
//!    `pack/Q4_K`.

#[cfg(target_arch = "x86_64")]
use crate::dot::{avx2, avx512, panel512::PanelFormat, tile512};
use crate::dot::{portable, reference, DotFn, Tiles};
use crate::formats::GgmlType;
use crate::isa::Isa;
use crate::packed::layout::PackedFormat;
#[cfg(target_arch = "x86_64")]
use crate::packed::{float, legacy, q2_k, q3_k, q4_k, q5_k, q6_k};

/// Everything Strata runs for one format.
pub struct Format {
    pub ty: GgmlType,
    /// Row dot kernels per ISA level, indexed by `Isa as usize`: `None` where a level has
    /// no kernel of its own (it then runs the next lower level's).
    dot: [Option<DotFn>; 5],
    /// 4 × NT register tiles and the lowest level that runs them.
    tiles: Option<(Isa, Tiles)>,
    /// VNNI matmul panels (`dot::panel512`), for prefill of 4 tokens or more.
    #[cfg(target_arch = "x86_64")]
    pub(crate) panel: Option<PanelFormat>,
    /// Packed 16-row group kernels (`packed`): the layout, a kernel per tile size and the
    /// lowest level that runs them.
    pub(crate) packed: Option<PackedFormat>,
    /// The CUDA matvec kernel of this format in `kernels-cuda/kernels/matvec.cu`; empty for
    /// the activation-only formats.
    pub cuda: &'static str,
}

// SAFETY (every `unsafe` call below): a row's kernels of a level are handed out only by
// `kernel` and `tiles`, for a level the CPU supports (their callers check it; debug
// builds assert it), and those kernels need nothing more than that level's features.

/// A kernel of an x86 level: `Some` on x86-64, `None` elsewhere.
macro_rules! x86 {
    ($e:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            Some($e)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    }};
}

/// A format's packed kernels at level `$isa`: its layout and its kernel (generic in the
/// tile's token count) for tiles of 1 to 8 tokens.
macro_rules! packed {
    ($isa:ident, $layout:expr, $($k:ident)::+) => {
        packed!($isa, $layout, $($k)::+, None)
    };
    ($isa:ident, $layout:expr, $($k:ident)::+, $stream:expr) => {
        x86!(PackedFormat {
            isa: Isa::$isa,
            layout: &$layout,
            group: [
                $($k)::+::<1>,
                $($k)::+::<2>,
                $($k)::+::<3>,
                $($k)::+::<4>,
                $($k)::+::<5>,
                $($k)::+::<6>,
                $($k)::+::<7>,
                $($k)::+::<8>,
            ],
            stream: $stream,
        })
    };
}

/// A `#[target_feature]` row kernel as a [`DotFn`] (see the SAFETY note above).
macro_rules! simd {
    ($($f:ident)::+) => {
        x86!({
            const F: DotFn = |w, a| unsafe { $($f)::+(w, a) };
            F
        })
    };
}

const NONE: Format = Format {
    ty: GgmlType::F32,
    dot: [None; 5],
    tiles: None,
    #[cfg(target_arch = "x86_64")]
    panel: None,
    packed: None,
    cuda: "",
};

const F32: Format = Format {
    ty: GgmlType::F32,
    dot: [
        Some(reference::f32_f32),
        Some(portable::f32_f32),
        simd!(avx2::f32_f32),
        simd!(avx512::f32_f32),
        simd!(avx512::f32_f32),
    ],
    cuda: "matvec_f32",
    ..NONE
};

const F16: Format = Format {
    ty: GgmlType::F16,
    dot: [
        Some(reference::f16_f32),
        Some(portable::f16_f32),
        simd!(avx2::f16_f32),
        simd!(avx512::f16_f32),
        simd!(avx512::f16_f32),
    ],
    tiles: x86!((
        Isa::Avx512,
        Tiles {
            four: Some(|w, rb, a, out| unsafe { tile512::f16_f32(w, rb, a, out) }),
            one: None,
        }
    )),
    packed: packed!(Avx512, float::Halves, float::f16_f32),
    cuda: "matvec_f16",
    ..NONE
};

const BF16: Format = Format {
    ty: GgmlType::BF16,
    dot: [
        Some(reference::bf16_f32),
        Some(portable::bf16_f32),
        simd!(avx2::bf16_f32),
        simd!(avx512::bf16_f32),
        simd!(avx512::bf16_f32),
    ],
    packed: packed!(Avx512, float::Halves, float::bf16_f32),
    cuda: "matvec_bf16",
    ..NONE
};

const Q4_0: Format = Format {
    ty: GgmlType::Q4_0,
    dot: [
        Some(reference::q4_0_q8_0),
        Some(portable::q4_0_q8_0),
        simd!(avx2::q4_0_q8_0),
        simd!(avx512::bw::q4_0_q8_0),
        simd!(avx512::vnni::q4_0_q8_0),
    ],
    tiles: x86!((
        Isa::Vnni,
        Tiles {
            four: None,
            one: Some(|w, rb, a, out| unsafe { tile512::q4_0_q8_0(w, rb, a, out) }),
        }
    )),
    #[cfg(target_arch = "x86_64")]
    panel: Some(PanelFormat {
        offset: 8,
        qs: 2,
        nibbles: true,
        min: false,
    }),
    packed: packed!(
        Vnni,
        legacy::Q4_0,
        legacy::q4_0_q8_0,
        Some(legacy::q4_0_q8_0_stream)
    ),
    cuda: "matvec_q4_0",
};

const Q4_1: Format = Format {
    ty: GgmlType::Q4_1,
    dot: [
        Some(reference::q4_1_q8_1),
        Some(portable::q4_1_q8_1),
        simd!(avx2::q4_1_q8_1),
        simd!(avx512::bw::q4_1_q8_1),
        simd!(avx512::vnni::q4_1_q8_1),
    ],
    #[cfg(target_arch = "x86_64")]
    panel: Some(PanelFormat {
        offset: 0,
        qs: 4,
        nibbles: true,
        min: true,
    }),
    packed: packed!(Vnni, legacy::Q4_1, legacy::q4_1_q8_1),
    cuda: "matvec_q4_1",
    ..NONE
};

const Q5_0: Format = Format {
    ty: GgmlType::Q5_0,
    dot: [
        Some(reference::q5_0_q8_0),
        Some(portable::q5_0_q8_0),
        simd!(avx2::q5_0_q8_0),
        simd!(avx512::bw::q5_0_q8_0),
        simd!(avx512::vnni::q5_0_q8_0),
    ],
    packed: packed!(Vnni, legacy::Q5_0, legacy::q5_0_q8_0),
    cuda: "matvec_q5_0",
    ..NONE
};

const Q5_1: Format = Format {
    ty: GgmlType::Q5_1,
    dot: [
        Some(reference::q5_1_q8_1),
        Some(portable::q5_1_q8_1),
        simd!(avx2::q5_1_q8_1),
        simd!(avx512::bw::q5_1_q8_1),
        simd!(avx512::vnni::q5_1_q8_1),
    ],
    packed: packed!(Vnni, legacy::Q5_1, legacy::q5_1_q8_1),
    cuda: "matvec_q5_1",
    ..NONE
};

const Q8_0: Format = Format {
    ty: GgmlType::Q8_0,
    dot: [
        Some(reference::q8_0_q8_0),
        Some(portable::q8_0_q8_0),
        simd!(avx2::q8_0_q8_0),
        simd!(avx512::bw::q8_0_q8_0),
        simd!(avx512::vnni::q8_0_q8_0),
    ],
    #[cfg(target_arch = "x86_64")]
    panel: Some(PanelFormat {
        offset: 128,
        qs: 2,
        nibbles: false,
        min: false,
    }),
    packed: packed!(Vnni, legacy::Q8_0, legacy::q8_0_q8_0),
    cuda: "matvec_q8_0",
    ..NONE
};

const Q2_K: Format = Format {
    ty: GgmlType::Q2_K,
    // No AVX-512 kernel: written that way it measured ~4% slower in cache than AVX2's.
    dot: [
        Some(reference::q2_k_q8_k),
        Some(portable::q2_k_q8_k),
        simd!(avx2::q2_k_q8_k),
        None,
        None,
    ],
    packed: packed!(Vnni, q2_k::Q2_K, q2_k::q2_k_q8_k),
    cuda: "matvec_q2_k",
    ..NONE
};

const Q3_K: Format = Format {
    ty: GgmlType::Q3_K,
    dot: [
        Some(reference::q3_k_q8_k),
        Some(portable::q3_k_q8_k),
        simd!(avx2::q3_k_q8_k),
        simd!(avx512::bw::q3_k_q8_k),
        simd!(avx512::vnni::q3_k_q8_k),
    ],
    packed: packed!(Vnni, q3_k::Q3_K, q3_k::q3_k_q8_k),
    cuda: "matvec_q3_k",
    ..NONE
};

const Q4_K: Format = Format {
    ty: GgmlType::Q4_K,
    dot: [
        Some(reference::q4_k_q8_k),
        Some(portable::q4_k_q8_k),
        simd!(avx2::q4_k_q8_k),
        simd!(avx512::bw::q4_k_q8_k),
        simd!(avx512::vnni::q4_k_q8_k),
    ],
    packed: packed!(Vnni, q4_k::Q4_K, q4_k::q4_k_q8_k),
    cuda: "matvec_q4_k",
    ..NONE
};

const Q5_K: Format = Format {
    ty: GgmlType::Q5_K,
    dot: [
        Some(reference::q5_k_q8_k),
        Some(portable::q5_k_q8_k),
        simd!(avx2::q5_k_q8_k),
        simd!(avx512::bw::q5_k_q8_k),
        simd!(avx512::vnni::q5_k_q8_k),
    ],
    packed: packed!(Vnni, q5_k::Q5_K, q5_k::q5_k_q8_k),
    cuda: "matvec_q5_k",
    ..NONE
};

const Q6_K: Format = Format {
    ty: GgmlType::Q6_K,
    dot: [
        Some(reference::q6_k_q8_k),
        Some(portable::q6_k_q8_k),
        simd!(avx2::q6_k_q8_k),
        simd!(avx512::bw::q6_k_q8_k),
        simd!(avx512::vnni::q6_k_q8_k),
    ],
    packed: packed!(Vnni, q6_k::Q6_K, q6_k::q6_k_q8_k),
    cuda: "matvec_q6_k",
    ..NONE
};

/// Activation-only formats: no weight kernels anywhere.
const Q8_1: Format = Format {
    ty: GgmlType::Q8_1,
    ..NONE
};
const Q8_K: Format = Format {
    ty: GgmlType::Q8_K,
    ..NONE
};

/// The row of `ty`.
pub fn format(ty: GgmlType) -> &'static Format {
    match ty {
        GgmlType::F32 => &F32,
        GgmlType::F16 => &F16,
        GgmlType::BF16 => &BF16,
        GgmlType::Q4_0 => &Q4_0,
        GgmlType::Q4_1 => &Q4_1,
        GgmlType::Q5_0 => &Q5_0,
        GgmlType::Q5_1 => &Q5_1,
        GgmlType::Q8_0 => &Q8_0,
        GgmlType::Q8_1 => &Q8_1,
        GgmlType::Q2_K => &Q2_K,
        GgmlType::Q3_K => &Q3_K,
        GgmlType::Q4_K => &Q4_K,
        GgmlType::Q5_K => &Q5_K,
        GgmlType::Q6_K => &Q6_K,
        GgmlType::Q8_K => &Q8_K,
    }
}

impl Format {
    /// The ISA level whose kernel serves this format when `isa` is asked for: `isa` itself
    /// if a kernel was written for it, else the next lower level that has one; `None` for
    /// activation-only formats.
    pub fn kernel_level(&self, isa: Isa) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .rev()
            .filter(|&l| l <= isa)
            .find(|&l| self.dot[l as usize].is_some())
    }

    /// The row dot kernel at `isa` (or the best lower level that has one); `None` for
    /// activation-only formats. `isa` must be supported by the CPU: the fast kernels
    /// contain instructions of that level.
    pub fn kernel(&self, isa: Isa) -> Option<DotFn> {
        debug_assert!(isa.is_supported());
        self.dot[self.kernel_level(isa)? as usize]
    }

    /// The tiles at `isa`, where they were written (and measured faster than the row
    /// kernel); `None` elsewhere. `isa` must be supported by the CPU.
    pub fn tiles(&self, isa: Isa) -> Option<Tiles> {
        debug_assert!(isa.is_supported());
        self.tiles.filter(|&(l, _)| isa >= l).map(|(_, t)| t)
    }

    /// Whether packed kernels run at `isa` (on this CPU).
    pub fn packs(&self, isa: Isa) -> bool {
        isa.is_supported() && self.packed.as_ref().is_some_and(|p| isa >= p.isa)
    }
}

/// The ISA level whose kernel serves `ty` at `isa` ([`Format::kernel_level`]).
pub fn kernel_level(ty: GgmlType, isa: Isa) -> Option<Isa> {
    format(ty).kernel_level(isa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_its_own_type_and_weights_have_every_kernel_they_need() {
        for ty in GgmlType::ALL {
            let f = format(ty);
            assert_eq!(f.ty, ty);
            assert_eq!(f.dot[0].is_some(), ty.is_weight(), "{ty}: reference twin");
            assert_eq!(f.dot[1].is_some(), ty.is_weight(), "{ty}: portable kernel");
            assert_eq!(!f.cuda.is_empty(), ty.is_weight(), "{ty}: CUDA kernel");
            if ty.is_weight() {
                assert_eq!(f.cuda, format!("matvec_{}", ty.name().to_lowercase()));
            }
        }
    }
}
