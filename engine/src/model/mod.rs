//! A model's weights bound to the memory-mapped GGUF: matrices are borrowed bytes (no
//! copy), the small vectors (norm weights, biases) are converted to f32 once at load.

mod source;

use std::borrow::Cow;

use strata_kernels_cpu::{dequantize, GgmlType};
use thiserror::Error;

use crate::config::{ConfigError, ModelConfig};
use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Config { path: String, source: ConfigError },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("tensor `{name}` ({ty}): {why}")]
    Tensor {
        name: String,
        ty: GgmlType,
        why: String,
    },
}

/// A weight matrix of `rows` rows of `cols` elements (`cols` is ne0), in the file's format.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    /// `data` is in the CPU kernels' packed 16-row layout (`strata_kernels_cpu::packed`):
    /// a CPU-side device's own copy, repacked at load. The mapped file's are row-major.
    pub packed: bool,
}

/// Norm weights and biases are f32: converted once at load (`Owned`), or borrowed from a
/// device's own copy of the block (`backend::host`).
pub struct BlockWeights<'a> {
    pub attn_norm: Cow<'a, [f32]>,
    pub wq: Matrix<'a>,
    pub wk: Matrix<'a>,
    pub wv: Matrix<'a>,
    pub wo: Matrix<'a>,
    /// qwen2 only.
    pub bq: Option<Cow<'a, [f32]>>,
    pub bk: Option<Cow<'a, [f32]>>,
    pub bv: Option<Cow<'a, [f32]>>,
    /// qwen3 only: RMSNorm weights applied to each head of q and k.
    pub q_norm: Option<Cow<'a, [f32]>>,
    pub k_norm: Option<Cow<'a, [f32]>>,
    pub ffn_norm: Cow<'a, [f32]>,
    pub w_gate: Matrix<'a>,
    pub w_up: Matrix<'a>,
    pub w_down: Matrix<'a>,
}

impl<'a> BlockWeights<'a> {
    /// The block's seven weight matrices.
    pub fn matrices(&self) -> [&Matrix<'a>; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    /// Reads one byte of every page of the block's matrices, so that the operating system
    /// loads them from disk now (during the load bar) instead of during the first token.
    pub fn prefault(&self) -> u64 {
        let mut sum = 0u64;
        for m in self.matrices() {
            for page in m.data.chunks(4096) {
                sum = sum.wrapping_add(page[0] as u64);
            }
        }
        std::hint::black_box(sum)
    }
}

pub struct Model<'a> {
    pub cfg: ModelConfig,
    pub token_embd: Matrix<'a>,
    pub blocks: Vec<BlockWeights<'a>>,
    pub output_norm: Vec<f32>,
    /// `token_embd` again when the output is tied.
    pub output: Matrix<'a>,
}

impl<'a> Model<'a> {
    /// Reads the config and binds every weight. `progress` is called with the number of
    /// blocks bound so far (for a load bar).
    pub fn bind(
        file: &'a GgufFile,
        mut progress: impl FnMut(usize),
    ) -> Result<Model<'a>, ModelError> {
        let cfg = ModelConfig::from_source(file).map_err(|source| ModelError::Config {
            path: file.path().display().to_string(),
            source,
        })?;
        let token_embd = matrix(file, "token_embd.weight")?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let name = |s: &str| format!("blk.{i}.{s}");
            let m = |s: &str| matrix(file, &name(s));
            let v = |s: &str| vector(file, &name(s)).map(Cow::Owned);
            let opt = |on: bool, s: &str| if on { v(s).map(Some) } else { Ok(None) };
            blocks.push(BlockWeights {
                attn_norm: v("attn_norm.weight")?,
                wq: m("attn_q.weight")?,
                wk: m("attn_k.weight")?,
                wv: m("attn_v.weight")?,
                wo: m("attn_output.weight")?,
                bq: opt(cfg.qkv_bias, "attn_q.bias")?,
                bk: opt(cfg.qkv_bias, "attn_k.bias")?,
                bv: opt(cfg.qkv_bias, "attn_v.bias")?,
                q_norm: opt(cfg.qk_norm, "attn_q_norm.weight")?,
                k_norm: opt(cfg.qk_norm, "attn_k_norm.weight")?,
                ffn_norm: v("ffn_norm.weight")?,
                w_gate: m("ffn_gate.weight")?,
                w_up: m("ffn_up.weight")?,
                w_down: m("ffn_down.weight")?,
            });
            progress(i + 1);
        }
        let output = if cfg.tied_output {
            token_embd
        } else {
            matrix(file, "output.weight")?
        };
        Ok(Model {
            output_norm: vector(file, "output_norm.weight")?,
            token_embd,
            blocks,
            output,
            cfg,
        })
    }

    /// Bytes of weight data the forward pass reads per token (every matrix once).
    pub fn matrix_bytes(&self) -> usize {
        let b = |m: &Matrix| m.data.len();
        self.blocks
            .iter()
            .flat_map(|w| w.matrices())
            .map(b)
            .sum::<usize>()
            + b(&self.output)
    }
}

fn matrix<'a>(file: &'a GgufFile, name: &str) -> Result<Matrix<'a>, ModelError> {
    let t = file.tensor(name).ok_or_else(|| GgufError::NoSuchTensor {
        name: name.to_owned(),
    })?;
    if t.dims.len() != 2 {
        return Err(ModelError::Tensor {
            name: name.into(),
            ty: t.ty,
            why: format!("expected a matrix, got dims {:?}", t.dims),
        });
    }
    Ok(Matrix {
        ty: t.ty,
        cols: t.dims[0] as usize,
        rows: t.dims[1] as usize,
        data: file.tensor_data(t)?,
        packed: false,
    })
}

fn vector(file: &GgufFile, name: &str) -> Result<Vec<f32>, ModelError> {
    let t = file.tensor(name).ok_or_else(|| GgufError::NoSuchTensor {
        name: name.to_owned(),
    })?;
    let mut out = vec![0.0; t.n_elements() as usize];
    dequantize(t.ty, file.tensor_data(t)?, &mut out).map_err(|e| ModelError::Tensor {
        name: name.into(),
        ty: t.ty,
        why: e.to_string(),
    })?;
    Ok(out)
}
