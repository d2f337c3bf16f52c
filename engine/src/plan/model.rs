//! What the planner needs from a model: every tensor costed, and how its KV cache and
//! scratch are sized. Built from a GGUF header alone (header-only files work).

use super::cost::{Role, TensorCost};
use super::error::PlanError;
use super::header::HeaderSource;
use super::settings::RunSettings;
use crate::buffers;
use crate::config::{ModelConfig, ModelSource};
use crate::gguf::{GgufFile, Metadata, TensorInfo};

/// How a model's KV cache and scratch are sized: by [`crate::buffers`], the functions the
/// runner allocates with, from the config the runner runs (so plan and allocation cannot
/// drift apart, for deepseek2's latent cache as for the others).
#[derive(Debug, Clone, PartialEq)]
pub struct BufferModel(pub ModelConfig);

impl BufferModel {
    /// Bytes of one block's KV cache.
    pub fn kv_block_bytes(&self, s: &RunSettings) -> Result<u64, PlanError> {
        if buffers::kv_elem_bytes(s.kv_type).is_none() {
            return Err(PlanError::BadSettings {
                why: format!("KV cache type {} (only F32 and F16)", s.kv_type),
            });
        }
        Ok(buffers::kv_cache_bytes(&self.0, s.kv_cells(), s.kv_type))
    }

    /// Bytes of the scratch of a device that runs blocks or the output layer.
    pub fn scratch_bytes(&self, s: &RunSettings) -> u64 {
        buffers::scratch_bytes(&self.0, s.n_ubatch, s.kv_cells(), s.n_outputs)
    }
}

/// A model as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanModel {
    pub arch: String,
    pub n_layer: usize,
    /// The alignment of tensors in a device buffer (the file's `general.alignment`).
    pub alignment: u64,
    /// Every tensor in the file, in file order.
    pub tensors: Vec<TensorCost>,
    /// No `output.weight`: the output layer reads `token_embd.weight`.
    pub tied_output: bool,
    pub buffers: BufferModel,
}

impl PlanModel {
    pub fn from_gguf(file: &GgufFile) -> Result<PlanModel, PlanError> {
        Self::from_header(file.metadata(), file.tensors(), file.alignment())
    }

    /// From the metadata and tensor infos of a GGUF header.
    pub fn from_header(
        meta: &Metadata,
        infos: &[TensorInfo],
        alignment: u64,
    ) -> Result<PlanModel, PlanError> {
        let src = HeaderSource { meta, infos };
        let arch = src
            .meta_str("general.architecture")
            .ok_or_else(|| PlanError::Model {
                why: "metadata key 'general.architecture' is missing".into(),
            })?;
        let buffers = BufferModel(ModelConfig::from_source(&src)?);
        let n_layer = buffers.0.n_layer;
        let tensors = infos
            .iter()
            .map(|t| TensorCost::new(&t.name, t.ty, &t.dims, alignment))
            .collect::<Result<Vec<_>, _>>()?;
        for t in &tensors {
            if let Role::Block(i) = t.role {
                if i >= n_layer {
                    return Err(PlanError::Model {
                        why: format!(
                            "tensor '{}' belongs to block {i}, but {arch}.block_count is {n_layer}",
                            t.name
                        ),
                    });
                }
            }
        }
        if !tensors.iter().any(|t| t.name == "token_embd.weight") {
            return Err(PlanError::Model {
                why: "tensor 'token_embd.weight' is missing".into(),
            });
        }
        let tied_output = !tensors.iter().any(|t| t.name == "output.weight");
        Ok(PlanModel {
            arch,
            n_layer,
            alignment,
            tensors,
            tied_output,
            buffers,
        })
    }

    /// The tensors of one part of the model.
    pub fn tensors_of(&self, role: Role) -> impl Iterator<Item = &TensorCost> {
        self.tensors.iter().filter(move |t| t.role == role)
    }

    pub fn role_bytes(&self, role: Role) -> u64 {
        self.tensors_of(role).map(|t| t.bytes).sum()
    }

    /// The tensors the output layer needs on a device: its own, plus `token_embd.weight`
    /// when the output is tied and the device is not the CPU (where the embedding already
    /// is, so the same memory serves both).
    pub fn output_tensors(&self, on_cpu: bool) -> Vec<&TensorCost> {
        let mut out: Vec<&TensorCost> = self.tensors_of(Role::Output).collect();
        if self.tied_output && !on_cpu {
            out.extend(
                self.tensors
                    .iter()
                    .filter(|t| t.name == "token_embd.weight"),
            );
        }
        out
    }

    /// Bytes of [`PlanModel::output_tensors`].
    pub fn output_bytes(&self, on_cpu: bool) -> u64 {
        self.output_tensors(on_cpu).iter().map(|t| t.bytes).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes).sum()
    }
}
