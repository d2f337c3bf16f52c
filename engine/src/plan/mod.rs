//! The memory planner: which device holds each block, the output layer and every tensor,
//! and how many bytes each device needs — exactly, from the GGUF header alone.
//!
//! Ollama once planned 51 of DeepSeek-R1's layers onto 8×80 GB GPUs because its estimate
//! costed the model's first (small, dense) layers while the last (MoE, ~11.4 GiB) ones were
//! offloaded, and the load died. This planner costs the very tensors each device will hold,
//! sizes KV cache and scratch with the functions the runner allocates with
//! ([`crate::buffers`]), and refuses what does not fit before anything is loaded.
//!
//! - [`devices`]: the CPU and GPUs (real or hypothetical, `--gpus 8x80GiB`).
//! - [`cost`]: bytes of every tensor, grouped per block, output layer and embedding.
//! - [`model`]: what the planner needs from a GGUF header ([`PlanModel`]).
//! - [`parts`]: the parts of a block placed apart; [`overrides`]: `-ot` rules.
//! - [`placement`]: the placement rules and [`plan`] itself; [`result`]: the plan it returns.
//! - [`table`], [`json`]: the plan as a table, an Ollama-style log line, and JSON.

pub mod bytes;
pub mod cost;
pub mod devices;
mod error;
mod header;
pub mod json;
pub mod model;
pub mod overrides;
pub mod parts;
pub mod placement;
pub mod result;
mod settings;
pub mod table;

pub use bytes::{parse_bytes, Bytes};
pub use cost::{Role, TensorCost};
pub use devices::{host_free_bytes, parse_gpus, parse_tensor_split, Device, DeviceKind};
pub use error::PlanError;
pub use model::{BufferModel, PlanModel};
pub use overrides::TensorOverride;
pub use parts::{BlockPlacement, ExpertRange, Part};
pub use placement::plan;
pub use result::{DevicePlan, LimitNote, Plan, TensorPlacement};
pub use settings::{AutoFill, NumGpu, RunSettings};
