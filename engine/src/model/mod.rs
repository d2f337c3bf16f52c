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

impl<'a> Matrix<'a> {
    /// Rows `r` of a row-major (not packed) matrix.
    pub fn row_range(&self, r: std::ops::Range<usize>) -> Matrix<'a> {
        debug_assert!(!self.packed && r.end <= self.rows);
        let row = self.data.len() / self.rows;
        Matrix {
            rows: r.len(),
            data: &self.data[r.start * row..r.end * row],
            ..*self
        }
    }

    /// Part `i` of `n` equal row ranges: one expert of a 3-D expert tensor (bound as one
    /// matrix of all its experts' rows), one head of a per-head stack. A packed stack is
    /// packed part by part, so a part is its own packed matrix.
    pub fn part(&self, i: usize, n: usize) -> Matrix<'a> {
        self.parts(i..i + 1, n)
    }

    /// Parts `r` of `n` equal row ranges as one matrix: a range of experts of a 3-D expert
    /// tensor (row-major: each part is a contiguous run of bytes).
    pub fn parts(&self, r: std::ops::Range<usize>, n: usize) -> Matrix<'a> {
        debug_assert!(self.rows.is_multiple_of(n) && r.start < r.end && r.end <= n);
        let (rows, len) = (self.rows / n, self.data.len() / n);
        Matrix {
            rows: rows * r.len(),
            data: &self.data[r.start * len..r.end * len],
            ..*self
        }
    }
}

/// One block's weights, over how a tensor is held: `M` a matrix and `V` an f32 vector —
/// [`BlockWeights`] for the computing code, a device's slots in its buffers, or `()` for a
/// block's shape alone. [`Block::map`] is the one place that names every tensor.
pub struct Block<M, V> {
    pub attn_norm: V,
    pub attn: Attention<M, V>,
    pub ffn_norm: V,
    pub ffn: Ffn<M, V>,
}

pub enum Attention<M, V> {
    /// Grouped-query attention (llama, qwen2, qwen3, qwen3moe).
    Gqa(Gqa<M, V>),
    /// Multi-head latent attention (deepseek2).
    Mla(MlaWeights<M, V>),
}

pub struct Gqa<M, V> {
    pub wq: M,
    pub wk: M,
    pub wv: M,
    pub wo: M,
    /// qwen2 only.
    pub bq: Option<V>,
    pub bk: Option<V>,
    pub bv: Option<V>,
    /// qwen3 and qwen3moe: RMSNorm weights applied to each head of q and k.
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
}

/// MLA's tensors. `k_b`/`v_b` are per-head stacks (`n_head` parts); older files have one
/// `kv_b` instead, each head's k rows then v rows.
pub struct MlaWeights<M, V> {
    /// `attn_q` when `q_lora_rank` is 0, else `attn_q_a`, its norm and `attn_q_b`.
    pub q: Option<M>,
    pub q_a: Option<M>,
    pub q_a_norm: Option<V>,
    pub q_b: Option<M>,
    pub kv_a: M,
    pub kv_a_norm: V,
    pub kv_b: Option<M>,
    pub k_b: Option<M>,
    pub v_b: Option<M>,
    pub wo: M,
}

pub enum Ffn<M, V> {
    Dense(Dense<M>),
    Moe(MoeWeights<M, V>),
}

pub struct Dense<M> {
    pub gate: M,
    pub up: M,
    pub down: M,
}

/// A mixture-of-experts FFN. `gate`, `up` and `down` hold every expert (`n_expert` parts).
pub struct MoeWeights<M, V> {
    pub router: M,
    /// DeepSeek-V3's selection bias (`exp_probs_b`).
    pub probs_bias: Option<V>,
    pub gate: M,
    pub up: M,
    pub down: M,
    pub shared: Option<Dense<M>>,
}

/// The names [`Block::map`] gives the expert stacks of a MoE FFN (each `n_expert` parts).
const EXPERT_STACKS: [&str; 3] = [
    "ffn_gate_exps.weight",
    "ffn_up_exps.weight",
    "ffn_down_exps.weight",
];

/// Whether the block tensor `name` (as [`Block::map`] names it) is a stack of experts.
pub fn is_expert_stack(name: &str) -> bool {
    EXPERT_STACKS.contains(&name)
}

/// Turns each tensor of a block into another holding of it, given its name in the block
/// (`attn_q.weight`): see [`Block::map`].
pub trait Rebind<M, V> {
    type M2;
    type V2;
    type Error;
    fn matrix(&mut self, name: &str, m: &M) -> Result<Self::M2, Self::Error>;
    fn vector(&mut self, name: &str, v: &V) -> Result<Self::V2, Self::Error>;
}

impl<M, V> Block<M, V> {
    /// The same block with every tensor rebound by `r`, in one fixed order.
    pub fn map<R: Rebind<M, V>>(&self, r: &mut R) -> Result<Block<R::M2, R::V2>, R::Error> {
        let attn_norm = r.vector("attn_norm.weight", &self.attn_norm)?;
        let attn = match &self.attn {
            Attention::Gqa(a) => Attention::Gqa(Gqa {
                wq: r.matrix("attn_q.weight", &a.wq)?,
                wk: r.matrix("attn_k.weight", &a.wk)?,
                wv: r.matrix("attn_v.weight", &a.wv)?,
                wo: r.matrix("attn_output.weight", &a.wo)?,
                bq: opt_v(r, "attn_q.bias", &a.bq)?,
                bk: opt_v(r, "attn_k.bias", &a.bk)?,
                bv: opt_v(r, "attn_v.bias", &a.bv)?,
                q_norm: opt_v(r, "attn_q_norm.weight", &a.q_norm)?,
                k_norm: opt_v(r, "attn_k_norm.weight", &a.k_norm)?,
            }),
            Attention::Mla(a) => Attention::Mla(MlaWeights {
                q: opt_m(r, "attn_q.weight", &a.q)?,
                q_a: opt_m(r, "attn_q_a.weight", &a.q_a)?,
                q_a_norm: opt_v(r, "attn_q_a_norm.weight", &a.q_a_norm)?,
                q_b: opt_m(r, "attn_q_b.weight", &a.q_b)?,
                kv_a: r.matrix("attn_kv_a_mqa.weight", &a.kv_a)?,
                kv_a_norm: r.vector("attn_kv_a_norm.weight", &a.kv_a_norm)?,
                kv_b: opt_m(r, "attn_kv_b.weight", &a.kv_b)?,
                k_b: opt_m(r, "attn_k_b.weight", &a.k_b)?,
                v_b: opt_m(r, "attn_v_b.weight", &a.v_b)?,
                wo: r.matrix("attn_output.weight", &a.wo)?,
            }),
        };
        let ffn_norm = r.vector("ffn_norm.weight", &self.ffn_norm)?;
        let ffn = match &self.ffn {
            Ffn::Dense(d) => Ffn::Dense(dense(r, &["ffn_gate", "ffn_up", "ffn_down"], d)?),
            Ffn::Moe(m) => Ffn::Moe(MoeWeights {
                router: r.matrix("ffn_gate_inp.weight", &m.router)?,
                probs_bias: opt_v(r, "exp_probs_b.bias", &m.probs_bias)?,
                gate: r.matrix(EXPERT_STACKS[0], &m.gate)?,
                up: r.matrix(EXPERT_STACKS[1], &m.up)?,
                down: r.matrix(EXPERT_STACKS[2], &m.down)?,
                shared: match &m.shared {
                    Some(d) => Some(dense(
                        r,
                        &["ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"],
                        d,
                    )?),
                    None => None,
                },
            }),
        };
        Ok(Block {
            attn_norm,
            attn,
            ffn_norm,
            ffn,
        })
    }

    /// Calls `f` with every matrix of the block and its name.
    pub fn each_matrix(&self, mut f: impl FnMut(&str, &M)) {
        struct Visit<F>(F);
        impl<M, V, F: FnMut(&str, &M)> Rebind<M, V> for Visit<F> {
            type M2 = ();
            type V2 = ();
            type Error = std::convert::Infallible;
            fn matrix(&mut self, name: &str, m: &M) -> Result<(), Self::Error> {
                (self.0)(name, m);
                Ok(())
            }
            fn vector(&mut self, _: &str, _: &V) -> Result<(), Self::Error> {
                Ok(())
            }
        }
        let Ok(_) = self.map(&mut Visit(&mut f));
    }
}

impl Block<(), ()> {
    /// Which tensors block `i` of a model of `cfg` has; `probs_bias`: whether the file has
    /// the optional selection bias.
    pub fn shape_of(cfg: &ModelConfig, i: usize, probs_bias: bool) -> Block<(), ()> {
        let on = |b: bool| b.then_some(());
        let attn = match &cfg.mla {
            None => Attention::Gqa(Gqa {
                wq: (),
                wk: (),
                wv: (),
                wo: (),
                bq: on(cfg.qkv_bias),
                bk: on(cfg.qkv_bias),
                bv: on(cfg.qkv_bias),
                q_norm: on(cfg.qk_norm),
                k_norm: on(cfg.qk_norm),
            }),
            Some(m) => {
                let lora = m.q_lora_rank > 0;
                Attention::Mla(MlaWeights {
                    q: on(!lora),
                    q_a: on(lora),
                    q_a_norm: on(lora),
                    q_b: on(lora),
                    kv_a: (),
                    kv_a_norm: (),
                    kv_b: on(!m.split_kv_b),
                    k_b: on(m.split_kv_b),
                    v_b: on(m.split_kv_b),
                    wo: (),
                })
            }
        };
        let d = || Dense {
            gate: (),
            up: (),
            down: (),
        };
        let ffn = match &cfg.moe {
            Some(m) if cfg.is_moe_block(i) => Ffn::Moe(MoeWeights {
                router: (),
                probs_bias: on(probs_bias),
                gate: (),
                up: (),
                down: (),
                shared: (m.n_shared > 0).then(d),
            }),
            _ => Ffn::Dense(d()),
        };
        Block {
            attn_norm: (),
            attn,
            ffn_norm: (),
            ffn,
        }
    }
}

fn opt_m<M, V, R: Rebind<M, V>>(
    r: &mut R,
    name: &str,
    m: &Option<M>,
) -> Result<Option<R::M2>, R::Error> {
    m.as_ref().map(|m| r.matrix(name, m)).transpose()
}

fn opt_v<M, V, R: Rebind<M, V>>(
    r: &mut R,
    name: &str,
    v: &Option<V>,
) -> Result<Option<R::V2>, R::Error> {
    v.as_ref().map(|v| r.vector(name, v)).transpose()
}

fn dense<M, V, R: Rebind<M, V>>(
    r: &mut R,
    names: &[&str; 3],
    d: &Dense<M>,
) -> Result<Dense<R::M2>, R::Error> {
    Ok(Dense {
        gate: r.matrix(&format!("{}.weight", names[0]), &d.gate)?,
        up: r.matrix(&format!("{}.weight", names[1]), &d.up)?,
        down: r.matrix(&format!("{}.weight", names[2]), &d.down)?,
    })
}

/// A block's weights as the computing code reads them. Norm weights and biases are f32:
/// converted once at load (`Owned`), or borrowed from a device's own copy (`backend::host`).
pub type BlockWeights<'a> = Block<Matrix<'a>, Cow<'a, [f32]>>;

impl BlockWeights<'_> {
    /// Reads one byte of every page of the block's matrices, so that the operating system
    /// loads them from disk now (during the load bar) instead of during the first token.
    pub fn prefault(&self) -> u64 {
        let mut sum = 0u64;
        self.each_matrix(|_, m| {
            for page in m.data.chunks(4096) {
                sum = sum.wrapping_add(page[0] as u64);
            }
        });
        std::hint::black_box(sum)
    }

    /// Bytes of all of the block's matrices.
    pub fn matrix_bytes(&self) -> usize {
        let mut n = 0;
        self.each_matrix(|_, m| n += m.data.len());
        n
    }
}

/// Binds a block's tensors to the mapped file.
struct FromFile<'a> {
    file: &'a GgufFile,
    block: usize,
}

impl<'a> Rebind<(), ()> for FromFile<'a> {
    type M2 = Matrix<'a>;
    type V2 = Cow<'a, [f32]>;
    type Error = ModelError;
    fn matrix(&mut self, name: &str, _: &()) -> Result<Matrix<'a>, ModelError> {
        matrix(self.file, &format!("blk.{}.{name}", self.block))
    }
    fn vector(&mut self, name: &str, _: &()) -> Result<Cow<'a, [f32]>, ModelError> {
        vector(self.file, &format!("blk.{}.{name}", self.block)).map(Cow::Owned)
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
            let probs_bias = file.tensor(&format!("blk.{i}.exp_probs_b.bias")).is_some();
            let shape = Block::shape_of(&cfg, i, probs_bias);
            blocks.push(shape.map(&mut FromFile { file, block: i })?);
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

    /// Weight bytes one decode step reads: every matrix of the blocks and the output
    /// layer, but of an expert stack only the `n_expert_used` experts a token chooses.
    pub fn bytes_per_token(&self) -> usize {
        let (used, all) = self
            .cfg
            .moe
            .as_ref()
            .map_or((1, 1), |m| (m.n_expert_used, m.n_expert));
        let mut n = self.output.data.len();
        for b in &self.blocks {
            b.each_matrix(|name, m| {
                n += if is_expert_stack(name) {
                    m.data.len() / all * used
                } else {
                    m.data.len()
                }
            });
        }
        n
    }

    /// Bytes of every weight matrix the blocks and the output layer hold.
    pub fn matrix_bytes(&self) -> usize {
        self.blocks.iter().map(|w| w.matrix_bytes()).sum::<usize>() + self.output.data.len()
    }
}

fn matrix<'a>(file: &'a GgufFile, name: &str) -> Result<Matrix<'a>, ModelError> {
    let t = file.tensor(name).ok_or_else(|| GgufError::NoSuchTensor {
        name: name.to_owned(),
    })?;
    // A 3-D stack (experts, or MLA's per-head k_b/v_b) is one matrix of all its rows.
    if !(2..=3).contains(&t.dims.len()) {
        return Err(ModelError::Tensor {
            name: name.into(),
            ty: t.ty,
            why: format!(
                "expected a matrix or a stack of them, got dims {:?}",
                t.dims
            ),
        });
    }
    Ok(Matrix {
        ty: t.ty,
        cols: t.dims[0] as usize,
        rows: t.dims[1..].iter().product::<u64>() as usize,
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
