//! The model's hyperparameters, read from GGUF metadata and checked against the tensors.
//!
//! Supported: `llama` (Llama, Mistral, SmolLM), `qwen2` (adds q/k/v bias), `qwen3` (adds a
//! per-head RMSNorm on q and k), `qwen3moe` (qwen3 with mixture-of-experts FFNs) and
//! `deepseek2` (DeepSeek-V2/V3/R1: multi-head latent attention, leading dense blocks, then
//! routed and shared experts). Every missing or inconsistent key is a [`ConfigError`]
//! naming the key and the value found.

use std::fmt;

use strata_kernels_cpu::GgmlType;
use thiserror::Error;

/// The metadata and tensor shapes a config is read from. Implemented for the GGUF reader
/// and, in tests, for plain maps, so the checks can be exercised without writing files.
pub trait ModelSource {
    fn meta_str(&self, key: &str) -> Option<String>;
    /// An unsigned integer of any width (GGUF writers differ: u32, u64, i32 all occur).
    fn meta_uint(&self, key: &str) -> Option<u64>;
    fn meta_f32(&self, key: &str) -> Option<f32>;
    fn meta_bool(&self, key: &str) -> Option<bool>;
    /// `(type, dims with ne0 first)` of the tensor `name`, if present.
    fn tensor_shape(&self, name: &str) -> Option<(GgmlType, Vec<u64>)>;
    /// One more than the highest `N` of the tensors named `blk.N.*` (0 if there are none):
    /// what `block_count` is checked against before anything is sized by it.
    fn blocks_present(&self) -> usize;
}

/// One more than the highest `N` among tensor names `blk.N.*`.
pub fn blocks_in<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names
        .filter_map(|n| {
            n.strip_prefix("blk.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// `block_count` (read from `key`) if the file's tensors have that many blocks: a count
/// beyond them would size lists and buffers by a number no tensor backs.
pub fn check_block_count(key: &str, n_layer: usize, present: usize) -> Result<(), ConfigError> {
    if n_layer > present {
        let have = match present {
            0 => "the file has no block tensors (blk.N.*)".to_string(),
            n => format!(
                "the file's tensors stop at block {} (blk.{}.*)",
                n - 1,
                n - 1
            ),
        };
        return Err(bad(key, n_layer, &have));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Deepseek2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Deepseek2 => "deepseek2",
        }
    }

    /// Qwen rotates the two halves of each head (GPT-NeoX style); llama GGUFs store q/k
    /// permuted so that rotating adjacent pairs is right, and so does deepseek2's converter.
    pub fn rope_neox(self) -> bool {
        matches!(self, Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of q and k (and v, except under MLA: see [`Mla`]).
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates.
    pub n_rot: usize,
    pub rms_eps: f32,
    pub rope_freq_base: f32,
    pub rope_freq_scale: f32,
    /// `rope.scaling.type = yarn`: the context the model was trained at before extension.
    pub yarn_orig_ctx: Option<usize>,
    /// deepseek2's `rope.scaling.yarn_log_multiplier` (0 when absent or not YaRN).
    pub yarn_log_mul: f32,
    /// Training context length: the default and the upper bound of `n_ctx`.
    pub n_ctx_train: usize,
    pub n_vocab: usize,
    /// No `output.weight`: the output projection reuses `token_embd.weight`.
    pub tied_output: bool,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    /// Mixture-of-experts FFNs (qwen3moe, deepseek2).
    pub moe: Option<Moe>,
    /// Multi-head latent attention (deepseek2).
    pub mla: Option<Mla>,
}

/// The experts of a mixture-of-experts model.
#[derive(Debug, Clone, PartialEq)]
pub struct Moe {
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Hidden width of one expert (`expert_feed_forward_length`).
    pub n_ff_exp: usize,
    /// Shared experts, run for every token besides the routed ones (their tensors
    /// `ffn_*_shexp` are `n_shared × n_ff_exp` wide).
    pub n_shared: usize,
    /// Blocks `0..n_dense_lead` have a dense FFN of `n_ff` instead
    /// (`leading_dense_block_count`).
    pub n_dense_lead: usize,
    pub gating: strata_kernels_cpu::ops::Gating,
    /// Normalise the chosen experts' weights to sum 1.
    pub norm_weights: bool,
    pub weights_scale: f32,
    /// `(expert_group_count, expert_group_used_count)` when experts are grouped.
    pub groups: Option<(usize, usize)>,
}

impl Moe {
    pub fn router(&self) -> strata_kernels_cpu::ops::Router {
        strata_kernels_cpu::ops::Router {
            n_expert: self.n_expert,
            n_used: self.n_expert_used,
            gating: self.gating,
            norm: self.norm_weights,
            scale: self.weights_scale,
            groups: self.groups,
        }
    }
}

/// DeepSeek's multi-head latent attention. A head's query is `qk_nope + qk_rope` wide
/// (`head_dim`); keys and values are decompressed from one latent of `kv_lora_rank` per
/// token, which with the rotary key (`qk_rope`, shared by all heads) is what the cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mla {
    /// 0 when q is projected directly (`attn_q`), else through `attn_q_a`/`attn_q_b`.
    pub q_lora_rank: usize,
    pub kv_lora_rank: usize,
    pub qk_nope: usize,
    pub qk_rope: usize,
    pub v_head: usize,
    /// The file has `attn_k_b`/`attn_v_b` (newer converters) rather than one `attn_kv_b`.
    pub split_kv_b: bool,
}

impl Mla {
    /// Values a cached row holds: the rotary key, then the latent.
    pub fn row_width(&self) -> usize {
        self.qk_rope + self.kv_lora_rank
    }
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    #[error("metadata key `general.architecture` is missing")]
    NoArchitecture,
    #[error(
        "architecture `{0}` is not supported (supported: llama, qwen2, qwen3, qwen3moe, deepseek2)"
    )]
    UnsupportedArch(String),
    #[error("metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("metadata key `{key}` = {value}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        got: Vec<u64>,
        expected: Vec<u64>,
    },
    #[error("tensor `{name}` has type {ty}, which cannot be used as a weight here")]
    TensorType { name: String, ty: GgmlType },
}

fn uint(src: &dyn ModelSource, key: &str) -> Result<usize, ConfigError> {
    let v = src
        .meta_uint(key)
        .ok_or_else(|| ConfigError::MissingKey(key.to_string()))?;
    usize::try_from(v).map_err(|_| bad(key, v, "does not fit in usize"))
}

fn positive(src: &dyn ModelSource, key: &str) -> Result<usize, ConfigError> {
    let v = uint(src, key)?;
    if v == 0 {
        return Err(bad(key, 0, "must be positive"));
    }
    Ok(v)
}

fn bad(key: &str, value: impl fmt::Display, why: &str) -> ConfigError {
    ConfigError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// Per-head width of q, k and v for GQA models: `attention.key_length`, else n_embd / n_head.
fn read_head_dim(
    src: &dyn ModelSource,
    a: &str,
    n_embd: usize,
    n_head: usize,
) -> Result<usize, ConfigError> {
    let k = |s: &str| format!("{a}.{s}");
    let head_dim = match src.meta_uint(&k("attention.key_length")) {
        Some(_) => positive(src, &k("attention.key_length"))?,
        None => {
            if !n_embd.is_multiple_of(n_head) {
                return Err(bad(
                    &k("embedding_length"),
                    n_embd,
                    &format!("is not a multiple of attention.head_count = {n_head}"),
                ));
            }
            n_embd / n_head
        }
    };
    if let Some(vl) = src.meta_uint(&k("attention.value_length")) {
        if vl as usize != head_dim {
            return Err(bad(
                &k("attention.value_length"),
                vl,
                &format!("differs from the key length {head_dim}, which is not supported"),
            ));
        }
    }
    Ok(head_dim)
}

/// deepseek2's MLA widths. Files from newer converters give the latent sizes as
/// `key_length`/`value_length` and the per-head sizes as `key_length_mla`/`value_length_mla`
/// (and split `attn_kv_b` into `attn_k_b`/`attn_v_b`); older files give the per-head sizes
/// as `key_length`/`value_length`.
fn read_mla(src: &dyn ModelSource) -> Result<Mla, ConfigError> {
    let k = |s: &str| format!("deepseek2.{s}");
    let kv_lora_rank = positive(src, &k("attention.kv_lora_rank"))?;
    let q_lora_rank = match src.meta_uint(&k("attention.q_lora_rank")) {
        None | Some(0) => 0,
        Some(_) => positive(src, &k("attention.q_lora_rank"))?,
    };
    let qk_rope = positive(src, &k("rope.dimension_count"))?;
    let split_kv_b = src.meta_uint(&k("attention.key_length_mla")).is_some()
        || src.meta_uint(&k("attention.value_length_mla")).is_some();
    let (key, value) = if split_kv_b {
        let key = positive(src, &k("attention.key_length_mla"))?;
        let value = positive(src, &k("attention.value_length_mla"))?;
        // The latent sizes these files also state must be the cache's.
        for (name, want) in [
            ("attention.key_length", kv_lora_rank + qk_rope),
            ("attention.value_length", kv_lora_rank),
        ] {
            let got = positive(src, &k(name))?;
            if got != want {
                return Err(bad(
                    &k(name),
                    got,
                    &format!("a file with attention.*_length_mla must give the latent size {want}"),
                ));
            }
        }
        (key, value)
    } else {
        (
            positive(src, &k("attention.key_length"))?,
            positive(src, &k("attention.value_length"))?,
        )
    };
    if key <= qk_rope {
        return Err(bad(
            &k("rope.dimension_count"),
            qk_rope,
            &format!("leaves no unrotated part of the key length {key}"),
        ));
    }
    Ok(Mla {
        q_lora_rank,
        kv_lora_rank,
        qk_nope: key - qk_rope,
        qk_rope,
        v_head: value,
        split_kv_b,
    })
}

/// The experts of qwen3moe and deepseek2; `None` for dense architectures.
fn read_moe(src: &dyn ModelSource, arch: Arch, n_layer: usize) -> Result<Option<Moe>, ConfigError> {
    use strata_kernels_cpu::ops::Gating;
    if !matches!(arch, Arch::Qwen3Moe | Arch::Deepseek2) {
        return Ok(None);
    }
    let a = arch.name();
    let k = |s: &str| format!("{a}.{s}");
    let n_expert = positive(src, &k("expert_count"))?;
    let n_expert_used = positive(src, &k("expert_used_count"))?;
    if n_expert_used > n_expert {
        return Err(bad(
            &k("expert_used_count"),
            n_expert_used,
            &format!("is more than expert_count = {n_expert}"),
        ));
    }
    let n_ff_exp = match (arch, src.meta_uint(&k("expert_feed_forward_length"))) {
        (_, Some(_)) => positive(src, &k("expert_feed_forward_length"))?,
        // llama.cpp's fallback for qwen3moe files without the key.
        (Arch::Qwen3Moe, None) => {
            let n_ff = positive(src, &k("feed_forward_length"))?;
            if n_ff % n_expert_used != 0 {
                return Err(bad(
                    &k("feed_forward_length"),
                    n_ff,
                    "is not a multiple of expert_used_count (and expert_feed_forward_length is absent)",
                ));
            }
            n_ff / n_expert_used
        }
        (_, None) => return Err(ConfigError::MissingKey(k("expert_feed_forward_length"))),
    };
    if arch == Arch::Qwen3Moe {
        return Ok(Some(Moe {
            n_expert,
            n_expert_used,
            n_ff_exp,
            n_shared: 0,
            n_dense_lead: 0,
            gating: Gating::Softmax,
            norm_weights: true,
            weights_scale: 1.0,
            groups: None,
        }));
    }
    let n_shared = uint(src, &k("expert_shared_count"))?;
    let n_dense_lead = src
        .meta_uint(&k("leading_dense_block_count"))
        .map_or(Ok(0), |_| uint(src, &k("leading_dense_block_count")))?;
    if n_dense_lead > n_layer {
        return Err(bad(
            &k("leading_dense_block_count"),
            n_dense_lead,
            &format!("is more than block_count = {n_layer}"),
        ));
    }
    let gating = match src.meta_uint(&k("expert_gating_func")) {
        None | Some(0) | Some(1) => Gating::Softmax,
        Some(2) => Gating::Sigmoid,
        Some(v) => {
            return Err(bad(
                &k("expert_gating_func"),
                v,
                "is not supported (1 = softmax, 2 = sigmoid)",
            ))
        }
    };
    let weights_scale = match src.meta_f32(&k("expert_weights_scale")) {
        None => 1.0,
        Some(v) if v.is_finite() && v >= 0.0 => v,
        Some(v) => {
            return Err(bad(
                &k("expert_weights_scale"),
                v,
                "must be a non-negative number",
            ))
        }
    };
    let groups = match src.meta_uint(&k("expert_group_count")) {
        None | Some(0) | Some(1) => None,
        Some(g) => {
            let g = g as usize;
            let used = positive(src, &k("expert_group_used_count"))?;
            if n_expert % g != 0 || used > g || used * (n_expert / g) < n_expert_used {
                return Err(bad(
                    &k("expert_group_used_count"),
                    used,
                    &format!(
                        "with expert_group_count = {g} and {n_expert} experts cannot hold \
                         expert_used_count = {n_expert_used} choices"
                    ),
                ));
            }
            Some((g, used))
        }
    };
    Ok(Some(Moe {
        n_expert,
        n_expert_used,
        n_ff_exp,
        n_shared,
        n_dense_lead,
        gating,
        norm_weights: src.meta_bool(&k("expert_weights_norm")).unwrap_or(false),
        weights_scale,
        groups,
    }))
}

impl ModelConfig {
    /// Reads and checks the config. The tensors listed by [`ModelConfig::tensor_shapes`]
    /// must all be present with exactly those shapes.
    pub fn from_source(src: &dyn ModelSource) -> Result<ModelConfig, ConfigError> {
        let arch_name = src
            .meta_str("general.architecture")
            .ok_or(ConfigError::NoArchitecture)?;
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "qwen3moe" => Arch::Qwen3Moe,
            "deepseek2" => Arch::Deepseek2,
            other => return Err(ConfigError::UnsupportedArch(other.to_string())),
        };
        let a = arch.name();
        let k = |s: &str| format!("{a}.{s}");

        let n_layer = positive(src, &k("block_count"))?;
        check_block_count(&k("block_count"), n_layer, src.blocks_present())?;
        let n_embd = positive(src, &k("embedding_length"))?;
        let n_head = positive(src, &k("attention.head_count"))?;
        // Absent means no grouping (llama.cpp's rule).
        let n_head_kv = match src.meta_uint(&k("attention.head_count_kv")) {
            None => n_head,
            Some(_) => positive(src, &k("attention.head_count_kv"))?,
        };
        if n_head % n_head_kv != 0 {
            return Err(bad(
                &k("attention.head_count_kv"),
                n_head_kv,
                &format!("must divide attention.head_count = {n_head}"),
            ));
        }
        let moe = read_moe(src, arch, n_layer)?;
        // A dense FFN's width: every block of a dense model, the leading blocks of deepseek2;
        // qwen3moe has none (its `feed_forward_length` is not read).
        let n_ff = match &moe {
            Some(m) if m.n_dense_lead == 0 => 0,
            _ => positive(src, &k("feed_forward_length"))?,
        };
        let mla = match arch {
            Arch::Deepseek2 => Some(read_mla(src)?),
            _ => None,
        };
        let head_dim = match mla {
            Some(m) => m.qk_nope + m.qk_rope,
            None => read_head_dim(src, a, n_embd, n_head)?,
        };
        let n_rot = match src.meta_uint(&k("rope.dimension_count")) {
            Some(_) => positive(src, &k("rope.dimension_count"))?,
            None => head_dim,
        };
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(bad(
                &k("rope.dimension_count"),
                n_rot,
                &format!("must be even and at most the head size {head_dim}"),
            ));
        }
        let eps_key = k("attention.layer_norm_rms_epsilon");
        let rms_eps = src
            .meta_f32(&eps_key)
            .ok_or_else(|| ConfigError::MissingKey(eps_key.clone()))?;
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(bad(&eps_key, rms_eps, "must be a positive number"));
        }
        // llama.cpp defaults the base to 10000 when absent.
        let base_key = k("rope.freq_base");
        let rope_freq_base = src.meta_f32(&base_key).unwrap_or(10000.0);
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(bad(&base_key, rope_freq_base, "must be a positive number"));
        }
        let rope_freq_scale = match src.meta_f32(&k("rope.scaling.factor")) {
            Some(f) if f.is_finite() && f > 0.0 => 1.0 / f,
            Some(f) => {
                return Err(bad(
                    &k("rope.scaling.factor"),
                    f,
                    "must be a positive number",
                ))
            }
            None => 1.0,
        };
        let n_ctx_train = positive(src, &k("context_length"))?;
        let yarn_orig_ctx = match src.meta_str(&k("rope.scaling.type")).as_deref() {
            None | Some("none") | Some("linear") => None,
            Some("yarn") => Some(
                match src.meta_uint(&k("rope.scaling.original_context_length")) {
                    Some(_) => positive(src, &k("rope.scaling.original_context_length"))?,
                    None => n_ctx_train,
                },
            ),
            Some(other) => {
                return Err(bad(
                    &k("rope.scaling.type"),
                    other,
                    "is not supported (supported: none, linear, yarn)",
                ))
            }
        };
        let yarn_log_mul = match (arch, yarn_orig_ctx) {
            (Arch::Deepseek2, Some(_)) => {
                let key = k("rope.scaling.yarn_log_multiplier");
                match src.meta_f32(&key) {
                    Some(v) if v.is_finite() && v >= 0.0 => v,
                    Some(v) => return Err(bad(&key, v, "must be a non-negative number")),
                    None => 0.0,
                }
            }
            _ => 0.0,
        };

        let (_, embd_dims) = src
            .tensor_shape("token_embd.weight")
            .ok_or_else(|| ConfigError::MissingTensor("token_embd.weight".into()))?;
        if embd_dims.len() != 2 || embd_dims[0] != n_embd as u64 || embd_dims[1] == 0 {
            return Err(ConfigError::TensorShape {
                name: "token_embd.weight".into(),
                got: embd_dims,
                expected: vec![n_embd as u64, 0],
            });
        }
        let n_vocab = embd_dims[1] as usize;
        if let Some(v) = src.meta_uint(&k("vocab_size")) {
            if v as usize != n_vocab {
                return Err(bad(
                    &k("vocab_size"),
                    v,
                    &format!("differs from token_embd.weight's {n_vocab} rows"),
                ));
            }
        }

        let cfg = ModelConfig {
            arch,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rms_eps,
            rope_freq_base,
            rope_freq_scale,
            yarn_orig_ctx,
            yarn_log_mul,
            n_ctx_train,
            n_vocab,
            tied_output: src.tensor_shape("output.weight").is_none(),
            qkv_bias: arch == Arch::Qwen2,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe),
            moe,
            mla,
        };
        for (name, expected) in cfg.tensor_shapes() {
            let (ty, got) = src
                .tensor_shape(&name)
                .ok_or_else(|| ConfigError::MissingTensor(name.clone()))?;
            if got != expected {
                return Err(ConfigError::TensorShape {
                    name,
                    got,
                    expected,
                });
            }
            if !ty.is_weight() {
                return Err(ConfigError::TensorType { name, ty });
            }
        }
        for i in 0..cfg.n_layer {
            for (name, expected) in cfg.optional_tensors(i) {
                if let Some((_, got)) = src.tensor_shape(&name) {
                    if got != expected {
                        return Err(ConfigError::TensorShape {
                            name,
                            got,
                            expected,
                        });
                    }
                }
            }
        }
        Ok(cfg)
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// The RoPE settings of this model, for the CPU kernels (the CUDA launcher takes the
    /// same fields). YaRN's factors follow llama.cpp's context setup: the attention factor
    /// it passes to the rope cancels the rope's own magnitude factor when the model gives a
    /// log multiplier (deepseek2), and leaves `1 + 0.1·ln(factor)` otherwise.
    pub fn rope(&self) -> strata_kernels_cpu::ops::Rope {
        let yarn = self.yarn_orig_ctx.map(|orig| {
            let ln_f = (1.0 / self.rope_freq_scale).ln();
            let mscale = if self.yarn_log_mul != 0.0 {
                1.0
            } else {
                1.0 + 0.1 * ln_f.max(0.0)
            };
            strata_kernels_cpu::ops::Yarn::new(self.n_rot, orig, self.rope_freq_base, mscale)
        });
        strata_kernels_cpu::ops::Rope {
            n_rot: self.n_rot,
            freq_base: self.rope_freq_base,
            freq_scale: self.rope_freq_scale,
            neox: self.arch.rope_neox(),
            yarn,
        }
    }

    /// The MLA attention's score scale: `mscale² / √head_dim`, with deepseek2's YaRN
    /// `mscale = 1 + 0.1·log_mul·ln(factor)` where `log_mul` is the file's multiplier
    /// over 0.1 (llama.cpp undoes the converter's factor of 0.1), else 1.
    pub fn mla_scale(&self) -> f32 {
        let ln_f = (1.0 / self.rope_freq_scale).ln().max(0.0);
        let mscale = match self.yarn_orig_ctx {
            Some(_) if self.yarn_log_mul != 0.0 => 1.0 + self.yarn_log_mul * ln_f,
            Some(_) => 1.0 + 0.1 * ln_f,
            None => 1.0,
        };
        mscale * mscale / (self.head_dim as f32).sqrt()
    }

    /// Whether block `i` routes its FFN through experts (else a dense FFN of `n_ff`).
    pub fn is_moe_block(&self, i: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| i >= m.n_dense_lead)
    }

    /// Whether any block has a dense FFN.
    pub fn has_dense_ffn(&self) -> bool {
        self.moe.as_ref().is_none_or(|m| m.n_dense_lead > 0)
    }

    /// The widest FFN hidden layer one matrix product makes: a dense FFN, one expert, or
    /// the shared experts together.
    pub fn ffn_width(&self) -> usize {
        let dense = if self.has_dense_ffn() { self.n_ff } else { 0 };
        match &self.moe {
            Some(m) => dense.max(m.n_ff_exp).max(m.n_shared * m.n_ff_exp),
            None => dense,
        }
    }

    /// Every tensor the forward pass reads, with its shape (ne0 first: the row length).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<u64>)> {
        let (e, v) = (self.n_embd as u64, self.n_vocab as u64);
        let mut out = vec![("token_embd.weight".to_string(), vec![e, v])];
        out.push(("output_norm.weight".to_string(), vec![e]));
        if !self.tied_output {
            out.push(("output.weight".to_string(), vec![e, v]));
        }
        for i in 0..self.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            let mut push = |s: &str, dims: &[usize]| {
                out.push((b(s), dims.iter().map(|&d| d as u64).collect()))
            };
            let (e, hd, nh) = (self.n_embd, self.head_dim, self.n_head);
            push("attn_norm.weight", &[e]);
            match &self.mla {
                None => {
                    let (q, kv) = (self.q_dim(), self.kv_dim());
                    push("attn_q.weight", &[e, q]);
                    push("attn_k.weight", &[e, kv]);
                    push("attn_v.weight", &[e, kv]);
                    push("attn_output.weight", &[q, e]);
                    if self.qkv_bias {
                        push("attn_q.bias", &[q]);
                        push("attn_k.bias", &[kv]);
                        push("attn_v.bias", &[kv]);
                    }
                    if self.qk_norm {
                        push("attn_q_norm.weight", &[hd]);
                        push("attn_k_norm.weight", &[hd]);
                    }
                }
                Some(m) => {
                    if m.q_lora_rank == 0 {
                        push("attn_q.weight", &[e, nh * hd]);
                    } else {
                        push("attn_q_a.weight", &[e, m.q_lora_rank]);
                        push("attn_q_a_norm.weight", &[m.q_lora_rank]);
                        push("attn_q_b.weight", &[m.q_lora_rank, nh * hd]);
                    }
                    push("attn_kv_a_mqa.weight", &[e, m.kv_lora_rank + m.qk_rope]);
                    push("attn_kv_a_norm.weight", &[m.kv_lora_rank]);
                    if m.split_kv_b {
                        push("attn_k_b.weight", &[m.qk_nope, m.kv_lora_rank, nh]);
                        push("attn_v_b.weight", &[m.kv_lora_rank, m.v_head, nh]);
                    } else {
                        push(
                            "attn_kv_b.weight",
                            &[m.kv_lora_rank, nh * (m.qk_nope + m.v_head)],
                        );
                    }
                    push("attn_output.weight", &[nh * m.v_head, e]);
                }
            }
            push("ffn_norm.weight", &[e]);
            match &self.moe {
                Some(m) if self.is_moe_block(i) => {
                    let (x, ff) = (m.n_expert, m.n_ff_exp);
                    push("ffn_gate_inp.weight", &[e, x]);
                    push("ffn_gate_exps.weight", &[e, ff, x]);
                    push("ffn_up_exps.weight", &[e, ff, x]);
                    push("ffn_down_exps.weight", &[ff, e, x]);
                    if m.n_shared > 0 {
                        let sh = m.n_shared * ff;
                        push("ffn_gate_shexp.weight", &[e, sh]);
                        push("ffn_up_shexp.weight", &[e, sh]);
                        push("ffn_down_shexp.weight", &[sh, e]);
                    }
                }
                _ => {
                    let f = self.n_ff;
                    push("ffn_gate.weight", &[e, f]);
                    push("ffn_up.weight", &[e, f]);
                    push("ffn_down.weight", &[f, e]);
                }
            }
        }
        out
    }

    /// Optional tensors of block `i` the forward pass reads when present, with their shape.
    pub fn optional_tensors(&self, i: usize) -> Vec<(String, Vec<u64>)> {
        match &self.moe {
            Some(m) if self.is_moe_block(i) && self.arch == Arch::Deepseek2 => {
                vec![(format!("blk.{i}.exp_probs_b.bias"), vec![m.n_expert as u64])]
            }
            _ => Vec::new(),
        }
    }
}
