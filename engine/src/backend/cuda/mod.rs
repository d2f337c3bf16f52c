//! The CUDA backend of an accelerator: a real GPU holds its blocks' weights (or the parts
//! of a block placed on it: attention, FFN, a range of routed experts), their f16 KV caches
//! and its own scratch in device memory, and runs them (and the output layer, if placed
//! there) with `strata-kernels-cuda`: dense, qwen3moe and deepseek2 blocks (latent
//! attention in its absorbed form, over an f16 latent cache). Activations cross to and from it only at the runner's
//! explicit copies and exchanges, as with any device.
//!
//! Arithmetic differs from the CPU's in the order of f32 sums and in one pairing: the GPU
//! quantizes activations to q8_1 for every quantized weight format (ggml's CUDA choice),
//! where the CPU uses Q8_K for K-quants; for the legacy formats the activation bytes are the
//! CPU's. Batches of more than [`MATVEC_MAX_BATCH`] tokens (prefill) go through the tiled
//! f32 matmul instead, on unquantized activations.

mod forward;
mod weights;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_kernels_cpu::GgmlType;
use strata_kernels_cuda::{
    CudaError, Gpu, GpuEvent, GpuGraph, RopeParams, MATVEC_MAX_COLS, MAX_HEAD_DIM, MLA_MAX_LATENT,
    MLA_MAX_NOPE, MLA_MAX_WIDTH, MOE_MAX_EXPERTS, MOE_MAX_USED,
};

use crate::backend::interface::{
    At, Backend, BackendError, Exchange, Holdings, Parts, QueueMark, Source, Unit,
};
use crate::buffers::ScratchLayout;
use crate::config::ModelConfig;
use crate::ledger::{DeviceId, Ledger, Reservation};
use crate::model::Model;
use weights::{GpuBlock, GpuKv, GpuOutput, GpuScratch};

/// Batches up to this many tokens run the matvec kernels once per token vector (sharing one
/// q8_1 quantization of the input); larger ones the tiled matmul.
pub const MATVEC_MAX_BATCH: usize = 8;

/// One GPU's share of a run: the weights of its blocks and of the output layer (if placed
/// there), its blocks' KV caches and its scratch, each reserved on the ledger.
pub struct CudaBackend {
    id: DeviceId,
    ledger: Ledger,
    gpu: Gpu,
    blocks: BTreeMap<usize, GpuBlock>,
    output: Option<GpuOutput>,
    /// Each block's cache, every sequence's rows in one.
    kvs: BTreeMap<usize, GpuKv>,
    /// Positions a sequence has in the caches, and sequences.
    kv_shape: (usize, usize),
    scratch: Option<GpuScratch>,
    held: Vec<Reservation>,
    /// Per range of blocks, the one-token decode step as a graph (its position and cache
    /// row are read from device memory, so one serves every sequence): `None` once it has
    /// run eagerly (kernels loaded), then the graph captured on the next step.
    graphs: HashMap<(usize, usize), Option<GpuGraph>>,
    /// Off with `STRATA_CUDA_GRAPHS=0`: every launch queued one by one.
    use_graphs: bool,
    /// The routing last imported ([`Exchange::Route`]): per row the `n_expert_used` ids
    /// (counting every expert of the block) and weights, for this GPU's share of experts.
    route: Option<(Vec<u32>, Vec<f32>)>,
    /// Where its stream's time meets the host's clock, taken by [`Backend::mark`] and
    /// taken again once older than [`ANCHOR_SECS`].
    anchor: Mutex<Option<Arc<Anchor>>>,
}

/// How long an [`Anchor`] serves: event times are f32 milliseconds, which resolve a
/// microsecond up to 16 s from it.
const ANCHOR_SECS: u64 = 8;

/// An event the stream reached, idle, at host instant `at` (to within one wait's wake-up).
struct Anchor {
    event: GpuEvent,
    at: Instant,
}

/// A [`QueueMark`] on a GPU's stream: its host instant is the anchor's plus the device
/// time between the two events.
struct CudaMark {
    event: GpuEvent,
    anchor: Arc<Anchor>,
}

impl QueueMark for CudaMark {
    fn reached(&self) -> Result<Instant, BackendError> {
        let ms = self.anchor.event.ms_until(&self.event)?;
        Ok(self.anchor.at + Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3))
    }
}

impl CudaBackend {
    /// Opens GPU `ordinal` for device `id`, its buffers to be reserved on `ledger`.
    pub fn new(id: DeviceId, ordinal: usize, ledger: &Ledger) -> Result<CudaBackend, CudaError> {
        let gpu = Gpu::new(ordinal)?;
        Ok(CudaBackend {
            id,
            ledger: ledger.clone(),
            gpu,
            blocks: BTreeMap::new(),
            output: None,
            kvs: BTreeMap::new(),
            kv_shape: (0, 0),
            scratch: None,
            held: Vec::new(),
            graphs: HashMap::new(),
            use_graphs: std::env::var("STRATA_CUDA_GRAPHS").map_or(true, |v| v != "0"),
            route: None,
            anchor: Mutex::new(None),
        })
    }

    /// Why `-ngl auto` keeps a model of `cfg` off the GPU though the kernels could run it:
    /// its forward pass on CUDA has not yet run on a GPU (an explicit `-ngl N` still puts
    /// it there).
    pub fn untried(cfg: &ModelConfig) -> Option<String> {
        let what = match (&cfg.mla, &cfg.moe) {
            (Some(_), _) => "latent-attention and expert",
            (None, Some(_)) => "expert",
            (None, None) => return None,
        };
        Some(format!(
            "the CUDA forward pass of {} {what} blocks has not yet run on a GPU \
             (-ngl N puts blocks there anyway)",
            cfg.arch
        ))
    }

    /// Why the GPU kernels cannot run a model of `cfg`, if they cannot: said at load, not at
    /// the first token.
    pub fn unsupported(cfg: &ModelConfig) -> Option<String> {
        let widest = weights::widest_input(cfg);
        let moe = cfg.moe.as_ref();
        if let Some(why) = cfg.mla.as_ref().and_then(Self::mla_unsupported) {
            Some(why)
        } else if let Some(m) = moe.filter(|m| m.n_expert > MOE_MAX_EXPERTS) {
            Some(format!(
                "{} experts (the CUDA router takes at most {MOE_MAX_EXPERTS})",
                m.n_expert
            ))
        } else if let Some(m) = moe.filter(|m| m.n_expert_used > MOE_MAX_USED) {
            Some(format!(
                "{} experts a token (the CUDA router chooses at most {MOE_MAX_USED})",
                m.n_expert_used
            ))
        } else if cfg.head_dim > MAX_HEAD_DIM {
            Some(format!(
                "head_dim {} (the CUDA attention takes at most {MAX_HEAD_DIM})",
                cfg.head_dim
            ))
        } else if !cfg.head_dim.is_multiple_of(2) || !cfg.n_rot.is_multiple_of(2) {
            Some(format!(
                "head_dim {} and n_rot {} (the CUDA RoPE rotates pairs)",
                cfg.head_dim, cfg.n_rot
            ))
        } else if widest > MATVEC_MAX_COLS {
            Some(format!(
                "rows of {widest} values (the CUDA matvec takes at most {MATVEC_MAX_COLS})"
            ))
        } else {
            None
        }
    }

    /// Why the CUDA latent attention cannot run widths `m`, if it cannot.
    fn mla_unsupported(m: &crate::config::Mla) -> Option<String> {
        let width = m.row_width();
        if width > MLA_MAX_WIDTH || m.kv_lora_rank > MLA_MAX_LATENT {
            Some(format!(
                "latent rows of {} + {} values (the CUDA MLA attention takes at most \
                 {MLA_MAX_WIDTH}, a latent of at most {MLA_MAX_LATENT})",
                m.qk_rope, m.kv_lora_rank
            ))
        } else if m.qk_nope > MLA_MAX_NOPE || m.qk_nope > m.kv_lora_rank {
            Some(format!(
                "a query part of {} values to absorb (the CUDA MLA takes at most \
                 {MLA_MAX_NOPE}, and no more than the latent's {})",
                m.qk_nope, m.kv_lora_rank
            ))
        } else {
            None
        }
    }
}

impl Backend for CudaBackend {
    fn id(&self) -> DeviceId {
        self.id
    }

    fn hold_block(&mut self, src: &Source, i: usize, parts: &Parts) -> Result<(), BackendError> {
        let planned = crate::backend::host::pieces(src, i, parts)
            .iter()
            .map(|p| p.cost.bytes)
            .sum();
        self.upload_block(i, &src.model.blocks[i], parts, &src.model.cfg, planned)
    }

    fn hold_output(&mut self, src: &Source) -> Result<(), BackendError> {
        let planned = src.plan_model.output_bytes(false);
        let m = src.model;
        self.upload_output(&m.output_norm, &m.output, planned)
    }

    fn hold_embedding(&mut self, _: &Source) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(format!(
            "the token embedding on {}: the lookup runs on the host",
            self.ledger.name(self.id)
        )))
    }

    fn alloc_kv(
        &mut self,
        model: &Model,
        i: usize,
        (n_ctx, n_seq): (usize, usize),
        kv_type: GgmlType,
        bytes: u64,
    ) -> Result<(), BackendError> {
        if kv_type != GgmlType::F16 {
            return Err(BackendError::Unsupported(format!(
                "a {kv_type} KV cache on {} (the CUDA attention reads F16 caches)",
                self.id
            )));
        }
        self.kv_cache(i, &model.cfg, (n_ctx, n_seq), bytes)
    }

    fn alloc_scratch(&mut self, model: &Model, layout: ScratchLayout) -> Result<(), BackendError> {
        self.allocate_scratch(&model.cfg, layout)
    }

    fn embed(&mut self, _: &Model, _: &[u32]) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(
            "the embedding lookup runs on the host".into(),
        ))
    }

    fn run(&mut self, model: &Model, unit: &Unit, n: usize, at: At) -> Result<(), BackendError> {
        let cfg = &model.cfg;
        let r = cfg.rope();
        let rope = RopeParams {
            n_rot: r.n_rot,
            freq_base: r.freq_base,
            freq_scale: r.freq_scale,
            neox: r.neox,
            yarn: r.yarn,
        };
        match unit {
            // Every row gets its FFN here (`keep` allows skipping, it does not ask for it).
            Unit::Blocks { blocks: range, .. } => {
                let segs = at.segments(n)?;
                self.run_blocks(range.clone(), cfg, &rope, n, &segs)?
            }
            Unit::Attention { block } => {
                let segs = at.segments(n)?;
                self.run_attention(*block, cfg, &rope, n, &segs)?
            }
            Unit::FfnRoute { block, rows } => self.run_ffn_route(*block, cfg, n, *rows)?,
            Unit::FfnLocal { block, rows } => self.run_ffn_local(*block, cfg, *rows)?,
            Unit::FfnEnd { rows, .. } => self.run_ffn_end(cfg, n, *rows)?,
            Unit::Output { n_out } => self.run_output(cfg, n, *n_out)?,
        }
        Ok(())
    }

    fn export(&self, what: Exchange, out: &mut [f32]) -> Result<(), BackendError> {
        Ok(self.export_exchange(what, out)?)
    }

    fn import(&mut self, what: Exchange, data: &[f32]) -> Result<(), BackendError> {
        Ok(self.import_exchange(what, data)?)
    }

    fn finish(&self) -> Result<(), BackendError> {
        Ok(self.gpu.synchronize()?)
    }

    fn queues(&self) -> bool {
        true
    }

    fn driven(&mut self) -> Option<&mut (dyn Backend + Send)> {
        Some(self)
    }

    fn mark(&self) -> Result<Option<Box<dyn QueueMark>>, BackendError> {
        let mut held = self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        let anchor = match &*held {
            Some(a) if a.at.elapsed() < Duration::from_secs(ANCHOR_SECS) => a.clone(),
            _ => {
                // Taken with the stream idle, so the event's time is (nearly) the instant.
                self.gpu.synchronize()?;
                let event = GpuEvent::record(&self.gpu)?;
                event.wait()?;
                let a = Arc::new(Anchor {
                    event,
                    at: Instant::now(),
                });
                *held = Some(a.clone());
                a
            }
        };
        Ok(Some(Box::new(CudaMark {
            event: GpuEvent::record(&self.gpu)?,
            anchor,
        })))
    }

    fn read_x(&self, x: &mut [f32]) -> Result<(), BackendError> {
        Ok(self.x_to_host(x)?)
    }

    fn write_x(&mut self, x: &[f32]) -> Result<(), BackendError> {
        Ok(self.x_from_host(x)?)
    }

    fn host_x(&self) -> Option<&[f32]> {
        None
    }

    fn host_x_mut(&mut self) -> Option<&mut [f32]> {
        None
    }

    fn read_logits(&self, out: &mut [f32]) -> Result<(), BackendError> {
        Ok(self.logits_to_host(out)?)
    }

    fn host_logits(&self) -> Option<&[f32]> {
        None
    }

    fn host_logits_mut(&mut self) -> Option<&mut [f32]> {
        None
    }

    /// A GPU cache needs no clearing: attention reads positions below `pos` only.
    fn reset(&mut self) {}

    fn copy_seq(&mut self, from: usize, to: usize, len: usize) -> Result<(), BackendError> {
        let (g, (n_ctx, n_seq)) = (&self.gpu, self.kv_shape);
        let seq = from.max(to);
        if seq >= n_seq && !self.kvs.is_empty() {
            return Err(BackendError::Missing {
                device: self.id,
                what: format!("KV cache of sequence {seq} (it holds {n_seq})"),
            });
        }
        if len > n_ctx {
            return Err(BackendError::Unsupported(format!(
                "{len} positions of a sequence of {n_ctx}"
            )));
        }
        if from == to {
            return Ok(());
        }
        // Sequence s's rows start at row s·n_ctx of each buffer.
        let rows = |b: &mut strata_kernels_cuda::DeviceBuffer<u16>| {
            let row = b.len() / (n_ctx * n_seq);
            b.copy_range(g, to * n_ctx * row, from * n_ctx * row, len * row)
        };
        for kv in self.kvs.values_mut() {
            match kv {
                GpuKv::Gqa { k, v } => {
                    rows(k)?;
                    rows(v)?;
                }
                GpuKv::Latent(c) => rows(c)?,
            }
        }
        Ok(())
    }

    fn holdings(&self) -> Holdings {
        Holdings {
            blocks: self.blocks.keys().copied().collect(),
            output: self.output.is_some(),
            kv: self.kvs.keys().copied().collect(),
            scratch: self.scratch.as_ref().map(|s| s.layout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Arch;

    fn smollm2_like() -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            n_layer: 30,
            n_embd: 576,
            n_ff: 1536,
            n_head: 9,
            n_head_kv: 3,
            head_dim: 64,
            n_rot: 64,
            rms_eps: 1e-5,
            rope_freq_base: 10000.0,
            rope_freq_scale: 1.0,
            n_ctx_train: 8192,
            n_vocab: 49152,
            tied_output: true,
            qkv_bias: false,
            qk_norm: false,
            yarn_orig_ctx: None,
            yarn_log_mul: 0.0,
            moe: None,
            mla: None,
        }
    }

    #[test]
    fn a_share_of_the_experts_keeps_its_slots_in_order_padded_to_one_count() {
        use forward::{local_slots, LocalSlots};
        // Three rows of two slots; this GPU holds experts 1..4.
        let ids = [3, 1, 0, 2, 5, 4];
        let weights = [0.6, 0.4, 0.7, 0.3, 0.9, 0.1];
        assert_eq!(
            local_slots(&ids, &weights, 2, &(1..4), 9),
            LocalSlots {
                ids: vec![2, 0, 1, 9, 9, 9],
                weights: vec![0.6, 0.4, 0.3, 0.0, 0.0, 0.0],
                k: 2,
            }
        );
        // One row choosing one of them: no padding, ids counted from the range's start.
        assert_eq!(
            local_slots(&[7, 2], &[0.5, 0.5], 2, &(4..8), 0),
            LocalSlots {
                ids: vec![3],
                weights: vec![0.5],
                k: 1,
            }
        );
        // None chosen: nothing to compute.
        assert_eq!(local_slots(&[0, 1], &[0.5, 0.5], 2, &(4..8), 0).k, 0);
    }

    #[test]
    fn an_older_files_kv_b_is_cut_into_each_heads_k_rows_and_v_rows() {
        use crate::model::Matrix;
        // 2 heads of 3 k rows and 2 v rows, each row of F16 [r, r] (4 bytes: row r's id).
        let data: Vec<u8> = (0..10u8).flat_map(|r| [r, 0, r, 0]).collect();
        let kv_b = Matrix {
            ty: GgmlType::F16,
            rows: 10,
            cols: 2,
            data: &data,
            packed: false,
        };
        let (k, v) = weights::split_kv_b(&kv_b, 2, 3, 2).unwrap();
        let ids = |b: &[u8]| b.chunks_exact(4).map(|r| r[0]).collect::<Vec<_>>();
        assert_eq!((k.rows, ids(&k.data)), (6, vec![0, 1, 2, 5, 6, 7]));
        assert_eq!((v.rows, ids(&v.data)), (4, vec![3, 4, 8, 9]));
        // Rows that are not heads × (k + v): none.
        assert!(weights::split_kv_b(&kv_b, 2, 3, 3).is_none());
    }

    /// A deepseek2 configuration: `(n_embd, n_layer, n_head, n_ff)`, MLA `(q_lora, kv_lora)`
    /// with heads of 128 + 64 and values of 128, `(n_expert, n_used, n_ff_exp, n_shared)`.
    fn deepseek2(
        (n_embd, n_head, n_ff): (usize, usize, usize),
        (q_lora_rank, kv_lora_rank): (usize, usize),
        (n_expert, n_expert_used, n_ff_exp, n_shared): (usize, usize, usize, usize),
    ) -> ModelConfig {
        ModelConfig {
            arch: Arch::Deepseek2,
            n_embd,
            n_ff,
            n_head,
            n_head_kv: n_head,
            head_dim: 192,
            n_rot: 64,
            n_vocab: 129280,
            tied_output: false,
            mla: Some(crate::config::Mla {
                q_lora_rank,
                kv_lora_rank,
                qk_nope: 128,
                qk_rope: 64,
                v_head: 128,
                split_kv_b: true,
            }),
            moe: Some(crate::config::Moe {
                n_expert,
                n_expert_used,
                n_ff_exp,
                n_shared,
                n_dense_lead: 1,
                gating: strata_kernels_cpu::ops::Gating::Sigmoid,
                norm_weights: true,
                weights_scale: 2.5,
                groups: None,
            }),
            ..smollm2_like()
        }
    }

    #[test]
    fn the_gpu_scratch_fits_the_planned_bytes_for_deepseek_models() {
        // DeepSeek-R1 (128 heads, q_lora 1536, 256 experts of 2048) and V2-Lite (16 heads,
        // no q_lora, 64 experts of 1408), one token to a long batch: the q8_1 rows of every
        // head and the 4-byte entries fit the reservation the planner counts.
        let r1 = deepseek2((7168, 128, 18432), (1536, 512), (256, 8, 2048, 1));
        let lite = deepseek2((2048, 16, 10944), (0, 512), (64, 6, 1408, 2));
        for (name, cfg) in [("R1", r1), ("V2-Lite", lite)] {
            assert_eq!(CudaBackend::unsupported(&cfg), None, "{name}");
            for n_batch in [1, 8, 512, 2048] {
                let layout = ScratchLayout::new(&cfg, n_batch, 1);
                let (xq, ints) = weights::quantized_bytes(&cfg, &layout);
                assert!(
                    xq + ints <= layout.act_q_bytes,
                    "{name} n_batch {n_batch}: {xq} + {ints} > {}",
                    layout.act_q_bytes
                );
            }
        }
    }

    #[test]
    fn models_the_kernels_cannot_run_are_named_at_load() {
        assert_eq!(CudaBackend::unsupported(&smollm2_like()), None);
        let wide_heads = ModelConfig {
            head_dim: 512,
            n_rot: 512,
            ..smollm2_like()
        };
        let e = CudaBackend::unsupported(&wide_heads).unwrap();
        assert!(e.contains("head_dim 512") && e.contains("256"), "{e}");
        let odd_rot = ModelConfig {
            n_rot: 33,
            ..smollm2_like()
        };
        assert!(CudaBackend::unsupported(&odd_rot)
            .unwrap()
            .contains("n_rot 33"));
        // Experts: within the router's limits they run (auto leaves them to the CPU until a
        // GPU has run them); beyond, the limit is named.
        let moe = |n_expert, n_expert_used| ModelConfig {
            arch: Arch::Qwen3Moe,
            moe: Some(crate::config::Moe {
                n_expert,
                n_expert_used,
                n_ff_exp: 768,
                n_shared: 0,
                n_dense_lead: 0,
                gating: strata_kernels_cpu::ops::Gating::Softmax,
                norm_weights: true,
                weights_scale: 1.0,
                groups: None,
            }),
            ..smollm2_like()
        };
        assert_eq!(CudaBackend::unsupported(&moe(128, 8)), None);
        assert!(CudaBackend::untried(&moe(128, 8))
            .unwrap()
            .contains("not yet run on a GPU"));
        assert_eq!(CudaBackend::untried(&smollm2_like()), None);
        let e = CudaBackend::unsupported(&moe(512, 8)).unwrap();
        assert!(e.contains("512 experts") && e.contains("256"), "{e}");
        let e = CudaBackend::unsupported(&moe(128, 40)).unwrap();
        assert!(e.contains("40 experts a token") && e.contains("32"), "{e}");
        // Latent attention: DeepSeek-R1's widths run (auto keeps them on the CPU until a
        // GPU has run them); a latent wider than the attention kernel's rows is named.
        let mla = |kv_lora_rank, qk_nope| ModelConfig {
            arch: Arch::Deepseek2,
            n_head: 128,
            n_head_kv: 128,
            head_dim: qk_nope + 64,
            n_rot: 64,
            mla: Some(crate::config::Mla {
                q_lora_rank: 1536,
                kv_lora_rank,
                qk_nope,
                qk_rope: 64,
                v_head: 128,
                split_kv_b: true,
            }),
            ..smollm2_like()
        };
        assert_eq!(CudaBackend::unsupported(&mla(512, 128)), None);
        assert!(CudaBackend::untried(&mla(512, 128))
            .unwrap()
            .contains("latent-attention"));
        let e = CudaBackend::unsupported(&mla(1024, 128)).unwrap();
        assert!(e.contains("64 + 1024") && e.contains("576"), "{e}");
        let e = CudaBackend::unsupported(&mla(256, 384)).unwrap();
        assert!(e.contains("384") && e.contains("256"), "{e}");
        let huge_ff = ModelConfig {
            n_ff: 65536,
            ..smollm2_like()
        };
        let e = CudaBackend::unsupported(&huge_ff).unwrap();
        assert!(
            e.contains("65536") && e.contains(&MATVEC_MAX_COLS.to_string()),
            "{e}"
        );
    }
}
