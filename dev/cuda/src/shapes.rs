//! The shape variants of matvec.cu's quantized kernels (kernels/matvec_lane.cuh's macros),
//! each compiled by build.rs as module `matvec_<name>` from the product's matvec.cu. This
//! file is also build.rs's (`#[path]`): one table gives both the `-D` macros and, through
//! the crate, each module's launch geometry.

/// One shape: the macros it compiles matvec.cu with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub name: &'static str,
    /// What it changes, and why it may be faster.
    pub why: &'static str,
    /// Warps per CTA (MV_WARPS).
    pub warps: u32,
    /// Rows per warp, for the 32-weight legacy blocks and for the K-quants (MV_RPW_*).
    pub rows_per_warp_legacy: u32,
    pub rows_per_warp_k: u32,
    /// Iterations of a lane's loop in flight, likewise (MV_UNROLL_*).
    pub unroll_legacy: u32,
    pub unroll_k: u32,
}

impl Variant {
    /// The module that holds its kernels.
    pub fn module(&self) -> String {
        format!("matvec_{}", self.name)
    }

    /// The `-D` macros (NAME=VALUE) of its module.
    pub fn defines(&self) -> Vec<String> {
        vec![
            format!("MV_WARPS={}", self.warps),
            format!("MV_RPW_LEGACY={}", self.rows_per_warp_legacy),
            format!("MV_RPW_K={}", self.rows_per_warp_k),
            format!("MV_UNROLL_LEGACY={}", self.unroll_legacy),
            format!("MV_UNROLL_K={}", self.unroll_k),
        ]
    }
}

/// Each changes one thing of the product's shape (8 warps a CTA; legacy formats 2 rows a
/// warp, 2 iterations in flight; K-quants 1 and 1). None has run on a GPU yet; each must
/// compile without spills (tests/ptx.rs) and give the product's bits (tests/host_check.rs,
/// tests/trials.rs).
pub const VARIANTS: &[Variant] = &[
    Variant {
        name: "w4",
        why: "4 warps a CTA: twice the CTAs, so a finer last wave",
        warps: 4,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
        unroll_legacy: 2,
        unroll_k: 1,
    },
    Variant {
        name: "r4",
        why: "legacy formats 4 rows a warp: each x read from shared memory serves 4 rows",
        warps: 8,
        rows_per_warp_legacy: 4,
        rows_per_warp_k: 1,
        unroll_legacy: 1,
        unroll_k: 1,
    },
    Variant {
        name: "u4",
        why: "legacy formats 4 iterations in flight: more bytes requested per lane",
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
        unroll_legacy: 4,
        unroll_k: 1,
    },
    Variant {
        name: "k2",
        why: "K-quants 2 units in flight (more registers, fewer warps an SM)",
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 1,
        unroll_legacy: 2,
        unroll_k: 2,
    },
    Variant {
        name: "kr2",
        why: "K-quants 2 rows a warp: each x read serves 2 rows",
        warps: 8,
        rows_per_warp_legacy: 2,
        rows_per_warp_k: 2,
        unroll_legacy: 2,
        unroll_k: 1,
    },
];
