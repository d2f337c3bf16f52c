//! The f32 operations of a transformer layer, besides the matrix products.
//!
//! Every op comes in three forms:
//! - `op(...)`: runs at the process-wide level [`crate::isa::active`];
//! - `op_isa(isa, ...)`: runs at the level given (tests and benches cover every level with it;
//!   a level the CPU lacks falls back to the best one below it);
//! - `op_ref(...)`: the scalar reference twin, plain loops that follow ggml's formulas, which
//!   `Isa::Reference` also selects.
//!
//! The fast paths are built from the slice kernels in `simd` (AVX-512, AVX2 + FMA + F16C,
//! or `wide` for any other CPU); `Isa::Vnni` runs the AVX-512 code, there is no integer work
//! here. Shapes are the caller's contract: a slice whose length does not match the shape
//! given is a bug in the caller, and the op panics with a message saying which.
//!
//! | op | signature |
//! |---|---|
//! | RMSNorm | [`rms_norm`]`(x, weight, eps, out)`, [`rms_norm_rows`] for n rows |
//! | RoPE | [`rope`]`(x, n_heads, head_dim, pos, &Rope)` in place, one token; [`rope_rows`] for a batch |
//! | softmax | [`softmax`]`(x)` in place |
//! | SwiGLU | [`swiglu`]`(gate, up, out)`: `out = silu(gate)·up` |
//! | add | [`add`]`(a, b)`: `a += b` |
//! | embedding lookup | [`get_rows`]`(ty, data, row_len, rows, out)` from any format |
//! | KV cache | [`KvCache`]`::new(ty, n_ctx, n_kv_heads, head_dim)`, `append(pos, k, v)`, `keys()`/`values()`; [`KvCache::bytes`] sizes it for the planner |
//! | attention | [`attention`]`(q, &cache, start_pos, n_tokens, n_heads, out)`: causal, grouped-query |
//! | MLA attention | [`mla_attention`]`(q, &latent_cache, start_pos, shape, out)`: causal, every head over one [`LatentCache`] |
//! | MoE routing | [`route`]`(logits, &Router, out)`: gating, selection bias, groups, top-k, weights |
//! | rows' weighted sum | [`weighted_rows`]`(ty, w, p, out)`: `out += Σ p_j·row_j` of a quantized matrix (its transpose times `p`) |
//!
//! Batches are row-major: `n_tokens × n_heads × head_dim` for q/k/v and attention output,
//! `n_rows × dim` for norms. Ops that take a batch split it across rayon's threads when the
//! work is large enough to pay for it; errors ([`OpError`]) are only for bad data
//! (get_rows indices, KV cache positions), never for shapes.

mod add;
mod attention;
mod get_rows;
mod kv_cache;
mod mla;
mod rms_norm;
mod rope;
mod route;
mod rows;
mod simd;
mod softmax;
mod swiglu;

pub use add::{add, add_isa, add_ref, add_scaled, add_scaled_isa, add_scaled_ref};
pub use attention::{attention, attention_isa, attention_ref};
pub use get_rows::{get_rows, get_rows_ref};
pub use kv_cache::{KvCache, KvType, KvView, LatentCache};
pub use mla::{mla_attention, mla_attention_isa, mla_attention_ref, MlaShape};
pub use rms_norm::{rms_norm, rms_norm_isa, rms_norm_ref, rms_norm_rows, rms_norm_rows_isa};
pub use rope::{rope, rope_isa, rope_ref, rope_rows, rope_rows_isa, Rope, Yarn};
pub use route::{route, route_isa, route_ref, Gating, Router};
pub use rows::{weighted_rows, weighted_rows_isa, weighted_rows_ref};
pub use softmax::{softmax, softmax_isa, softmax_ref};
pub use swiglu::{swiglu, swiglu_isa, swiglu_ref};

use crate::formats::FormatError;
use crate::isa::Isa;
use simd::{Level, Wanted};

/// What an op can report instead of a result: bad input data, not a bad shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("get_rows: row {row} is out of range: the table has {n_rows} rows")]
    RowOutOfRange { row: u32, n_rows: usize },
    #[error("KV cache: positions {start}..{end} do not fit its {n_ctx} positions")]
    ContextFull {
        start: usize,
        end: usize,
        n_ctx: usize,
    },
    #[error("KV cache: cannot write at position {pos}: only positions 0..{len} are filled")]
    KvGap { pos: usize, len: usize },
}

/// Which code an op runs for a level: the reference twin, or a SIMD level the CPU has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Reference,
    Simd(Level),
}

impl Path {
    fn of(isa: Isa) -> Path {
        let wanted = match isa {
            Isa::Reference => return Path::Reference,
            Isa::Portable => Wanted::Portable,
            Isa::Avx2 => Wanted::Avx2,
            Isa::Avx512 | Isa::Vnni => Wanted::Avx512,
        };
        Path::Simd(Level::at_most(wanted))
    }
}

/// Below this many elements of work an op stays on the calling thread: handing work to
/// rayon costs a few microseconds, as much as ~50k multiply-adds.
const PARALLEL_MIN_WORK: usize = 1 << 16;
