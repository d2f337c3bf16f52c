//! The model's hyperparameters, read from GGUF metadata and checked against the tensors.
//!
//! Supported: `llama` (Llama, Mistral, SmolLM), `qwen2` (adds q/k/v bias), `qwen3` (adds a
//! per-head RMSNorm on q and k). Every missing or inconsistent key is a [`ConfigError`]
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
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    /// Qwen rotates the two halves of each head (GPT-NeoX style); llama GGUFs store q/k
    /// permuted so that rotating adjacent pairs is right.
    pub fn rope_neox(self) -> bool {
        matches!(self, Arch::Qwen2 | Arch::Qwen3)
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
    /// Per-head width of q and k (and v: the supported archs use the same width).
    pub head_dim: usize,
    /// Leading dimensions of each head that RoPE rotates.
    pub n_rot: usize,
    pub rms_eps: f32,
    pub rope_freq_base: f32,
    pub rope_freq_scale: f32,
    /// Training context length: the default and the upper bound of `n_ctx`.
    pub n_ctx_train: usize,
    pub n_vocab: usize,
    /// No `output.weight`: the output projection reuses `token_embd.weight`.
    pub tied_output: bool,
    pub qkv_bias: bool,
    pub qk_norm: bool,
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    #[error("metadata key `general.architecture` is missing")]
    NoArchitecture,
    #[error("architecture `{0}` is not supported (supported: llama, qwen2, qwen3)")]
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
            other => return Err(ConfigError::UnsupportedArch(other.to_string())),
        };
        let a = arch.name();
        let k = |s: &str| format!("{a}.{s}");

        let n_layer = positive(src, &k("block_count"))?;
        check_block_count(&k("block_count"), n_layer, src.blocks_present())?;
        let n_embd = positive(src, &k("embedding_length"))?;
        let n_ff = positive(src, &k("feed_forward_length"))?;
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
        let head_dim = match src.meta_uint(&k("attention.key_length")) {
            Some(_) => positive(src, &k("attention.key_length"))?,
            None => {
                if n_embd % n_head != 0 {
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
            n_ctx_train,
            n_vocab,
            tied_output: src.tensor_shape("output.weight").is_none(),
            qkv_bias: arch == Arch::Qwen2,
            qk_norm: arch == Arch::Qwen3,
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
        Ok(cfg)
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// The RoPE settings of this model, for the CPU kernels (the CUDA launcher takes the
    /// same fields).
    pub fn rope(&self) -> strata_kernels_cpu::ops::Rope {
        strata_kernels_cpu::ops::Rope {
            n_rot: self.n_rot,
            freq_base: self.rope_freq_base,
            freq_scale: self.rope_freq_scale,
            neox: self.arch.rope_neox(),
        }
    }

    /// Every tensor the forward pass reads, with its shape (ne0 first: the row length).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<u64>)> {
        let (e, f, q, kv, v) = (
            self.n_embd as u64,
            self.n_ff as u64,
            self.q_dim() as u64,
            self.kv_dim() as u64,
            self.n_vocab as u64,
        );
        let mut out = vec![("token_embd.weight".to_string(), vec![e, v])];
        out.push(("output_norm.weight".to_string(), vec![e]));
        if !self.tied_output {
            out.push(("output.weight".to_string(), vec![e, v]));
        }
        for i in 0..self.n_layer {
            let b = |s: &str| format!("blk.{i}.{s}");
            out.push((b("attn_norm.weight"), vec![e]));
            out.push((b("attn_q.weight"), vec![e, q]));
            out.push((b("attn_k.weight"), vec![e, kv]));
            out.push((b("attn_v.weight"), vec![e, kv]));
            out.push((b("attn_output.weight"), vec![q, e]));
            if self.qkv_bias {
                out.push((b("attn_q.bias"), vec![q]));
                out.push((b("attn_k.bias"), vec![kv]));
                out.push((b("attn_v.bias"), vec![kv]));
            }
            if self.qk_norm {
                let hd = self.head_dim as u64;
                out.push((b("attn_q_norm.weight"), vec![hd]));
                out.push((b("attn_k_norm.weight"), vec![hd]));
            }
            out.push((b("ffn_norm.weight"), vec![e]));
            out.push((b("ffn_gate.weight"), vec![e, f]));
            out.push((b("ffn_up.weight"), vec![e, f]));
            out.push((b("ffn_down.weight"), vec![f, e]));
        }
        out
    }
}
