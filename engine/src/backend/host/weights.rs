//! The weights a host-side device holds copies of: copied out of the mapped file into
//! buffers reserved on its ledger account (as an upload to a GPU would be), each tensor at
//! the aligned offset the plan costs, and repacked in place where the CPU kernels read a
//! packed layout faster.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use strata_kernels_cpu::{isa, packed, GgmlType};

use crate::backend::interface::{BackendError, Parts, Source};
use crate::gguf::GgufFile;
use crate::huge::HugeBytes;
use crate::ledger::{BufferKind, DeviceId, Ledger, Reservation};
use crate::model::{Block, BlockWeights, Matrix, Rebind};
use crate::plan::parts::slice_bytes;
use crate::plan::{Part, Role, TensorCost};

/// Bytes on a device, reserved on its ledger account for as long as they live.
pub struct DeviceBuffer {
    mem: HugeBytes,
    _reservation: Reservation,
}

impl DeviceBuffer {
    /// Reserves `bytes` on `device`, then allocates them (zeroed).
    pub fn allocate(
        ledger: &Ledger,
        device: DeviceId,
        kind: BufferKind,
        bytes: u64,
        what: impl FnOnce() -> String,
    ) -> Result<DeviceBuffer, BackendError> {
        let what = what();
        let reservation = ledger.reserve(device, kind, bytes, || what.clone())?;
        let mem = usize::try_from(bytes)
            .ok()
            .and_then(HugeBytes::try_zeroed)
            .ok_or_else(|| ledger.refusal(device, kind, &what, bytes, super::REFUSED))?;
        Ok(DeviceBuffer {
            mem,
            _reservation: reservation,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.mem.bytes()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.mem.bytes_mut()
    }
}

/// Where a matrix lies in a device buffer.
#[derive(Debug, Clone, Copy)]
struct MatSlot {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    off: usize,
    len: usize,
    /// Repacked in place for the packed kernels ([`Copied::pack`]).
    packed: bool,
}

/// Where an f32 vector lies in a device buffer.
#[derive(Debug, Clone, Copy)]
struct VecSlot {
    off: usize,
    n: usize,
}

/// Tensors copied into one device buffer, each at the aligned offset the plan costs.
struct Copied {
    buf: DeviceBuffer,
    at: HashMap<String, (usize, TensorCost)>,
}

/// A tensor, or the slice of an expert stack, that a device holds: its cost as held
/// (a slice's data and aligned bytes), and which bytes of the file's tensor it is.
pub struct Piece {
    pub cost: TensorCost,
    pub src: Range<usize>,
}

/// The pieces of block `i` that `parts` names, in file order: whole tensors, and of each
/// expert stack the slice of the experts held.
pub fn pieces(src: &Source, i: usize, parts: &Parts) -> Vec<Piece> {
    let align = src.plan_model.alignment;
    let nx = src.model.cfg.moe.as_ref().map_or(1, |m| m.n_expert);
    src.plan_model
        .tensors_of(Role::Block(i))
        .filter(|t| parts.holds(&t.name))
        .map(|t| match (Part::of(&t.name), &parts.experts) {
            // A slice of an expert stack: the experts held, at its own aligned size.
            (Some((_, Part::Experts)), Some(r)) if r.len() != nx => {
                let per = t.data_bytes / nx as u64;
                let mut cost = t.clone();
                cost.data_bytes = per * r.len() as u64;
                cost.bytes = slice_bytes(per, r.len(), align);
                Piece {
                    cost,
                    src: (per as usize * r.start)..(per as usize * r.end),
                }
            }
            _ => Piece {
                cost: t.clone(),
                src: 0..t.data_bytes as usize,
            },
        })
        .collect()
}

impl Copied {
    /// Copies `pieces` (in this order, each padded to the alignment as its cost says)
    /// from the mapped `file` into one new buffer on `device`.
    fn new(
        ledger: &Ledger,
        device: DeviceId,
        file: &GgufFile,
        pieces: &[Piece],
        what: impl FnOnce() -> String,
    ) -> Result<Copied, BackendError> {
        let total: u64 = pieces.iter().map(|p| p.cost.bytes).sum();
        let mut buf = DeviceBuffer::allocate(ledger, device, BufferKind::Weights, total, what)?;
        let mut at = HashMap::new();
        let mut off = 0usize;
        for p in pieces {
            let t = &p.cost;
            let info = file.tensor(&t.name).ok_or_else(|| BackendError::Tensor {
                name: t.name.clone(),
                why: "not in the file".into(),
            })?;
            let data = &file.tensor_data(info)?[p.src.clone()];
            buf.bytes_mut()[off..off + data.len()].copy_from_slice(data);
            file.release(info);
            at.insert(t.name.clone(), (off, t.clone()));
            off += t.bytes as usize;
        }
        Ok(Copied { buf, at })
    }

    fn mat(&self, name: &str, like: &Matrix) -> Result<MatSlot, BackendError> {
        let (off, t) = self.get(name)?;
        if t.ty != like.ty || t.data_bytes as usize != like.data.len() {
            return Err(BackendError::Tensor {
                name: name.into(),
                why: format!(
                    "copied as {} of {} bytes, bound as {}",
                    t.ty, t.data_bytes, like.ty
                ),
            });
        }
        Ok(MatSlot {
            ty: like.ty,
            rows: like.rows,
            cols: like.cols,
            off,
            len: like.data.len(),
            packed: false,
        })
    }

    /// Repacks the matrix at `s` in place (same bytes, so the ledger's count stands) if the
    /// CPU kernels at the active ISA level have a packed layout for its format: the copy a
    /// CPU-side device computes with is then read by the packed kernels. A stack of `parts`
    /// matrices (experts) is packed part by part, so that each stays a matrix of its own.
    fn pack(&mut self, s: &mut MatSlot, name: &str, parts: usize) -> Result<(), BackendError> {
        let bytes = &mut self.buf.bytes_mut()[s.off..s.off + s.len];
        let (rows, len) = (s.rows / parts, s.len / parts);
        let mut packed = false;
        for part in bytes.chunks_exact_mut(len) {
            packed =
                packed::pack_in_place(isa::active(), s.ty, part, rows, s.cols).map_err(|e| {
                    BackendError::Tensor {
                        name: name.into(),
                        why: e.to_string(),
                    }
                })?;
        }
        s.packed = packed;
        Ok(())
    }

    fn vector(&self, name: &str, n: usize) -> Result<VecSlot, BackendError> {
        let (off, t) = self.get(name)?;
        // The device computes with the bytes it holds; the kernels take norm weights and
        // biases as f32, so they must be stored as f32 (they are in every GGUF we know).
        if t.ty != GgmlType::F32 || t.data_bytes as usize != n * 4 {
            return Err(BackendError::Tensor {
                name: name.into(),
                why: format!(
                    "an accelerator holds norm weights and biases as F32 ({n} values); the \
                     file has {} of {} bytes",
                    t.ty, t.data_bytes
                ),
            });
        }
        if off % 4 != 0 {
            return Err(BackendError::Tensor {
                name: name.into(),
                why: format!("offset {off} in the device buffer is not 4-byte aligned"),
            });
        }
        Ok(VecSlot { off, n })
    }

    fn get(&self, name: &str) -> Result<(usize, &TensorCost), BackendError> {
        self.at
            .get(name)
            .map(|(o, t)| (*o, t))
            .ok_or_else(|| BackendError::Tensor {
                name: name.into(),
                why: "the plan did not put it with its layer".into(),
            })
    }

    fn matrix(&self, s: MatSlot) -> Matrix<'_> {
        Matrix {
            ty: s.ty,
            rows: s.rows,
            cols: s.cols,
            data: &self.buf.bytes()[s.off..s.off + s.len],
            packed: s.packed,
        }
    }

    fn f32s(&self, s: VecSlot) -> &[f32] {
        bytemuck::cast_slice(&self.buf.bytes()[s.off..s.off + s.n * 4])
    }
}

struct CopiedBlock {
    mem: Copied,
    layout: Block<MatSlot, VecSlot>,
}

/// Finds each tensor of a block's held parts in its copy, and repacks the matrices the
/// packed kernels read (MLA's per-head decompression matrices stay row-major: they are read
/// by row range). A tensor of a part held elsewhere becomes an empty slot.
struct Place<'m> {
    mem: &'m mut Copied,
    block: usize,
    parts: &'m Parts,
    n_expert: usize,
}

const EMPTY_MAT: MatSlot = MatSlot {
    ty: GgmlType::F32,
    rows: 0,
    cols: 0,
    off: 0,
    len: 0,
    packed: false,
};

impl Rebind<Matrix<'_>, Cow<'_, [f32]>> for Place<'_> {
    type M2 = MatSlot;
    type V2 = VecSlot;
    type Error = BackendError;
    fn matrix(&mut self, name: &str, m: &Matrix) -> Result<MatSlot, BackendError> {
        let full = format!("blk.{}.{name}", self.block);
        if !self.parts.holds(&full) {
            return Ok(EMPTY_MAT);
        }
        match name {
            "attn_kv_b.weight" | "attn_k_b.weight" | "attn_v_b.weight" => self.mem.mat(&full, m),
            n if crate::model::is_expert_stack(n) => {
                // The held experts' rows of the stack, packed expert by expert.
                let r = self.parts.experts.clone().unwrap_or_default();
                let (rows, len) = (m.rows / self.n_expert, m.data.len() / self.n_expert);
                let slice = Matrix {
                    rows: rows * r.len(),
                    data: &m.data[r.start * len..r.end * len],
                    ..*m
                };
                let mut slot = self.mem.mat(&full, &slice)?;
                self.mem.pack(&mut slot, &full, r.len())?;
                Ok(slot)
            }
            _ => {
                let mut slot = self.mem.mat(&full, m)?;
                self.mem.pack(&mut slot, &full, 1)?;
                Ok(slot)
            }
        }
    }
    fn vector(&mut self, name: &str, v: &Cow<[f32]>) -> Result<VecSlot, BackendError> {
        let full = format!("blk.{}.{name}", self.block);
        if !self.parts.holds(&full) {
            return Ok(VecSlot { off: 0, n: 0 });
        }
        self.mem.vector(&full, v.len())
    }
}

/// Reads a block's tensors out of its copy.
struct Read<'m>(&'m Copied);

impl<'m> Rebind<MatSlot, VecSlot> for Read<'m> {
    type M2 = Matrix<'m>;
    type V2 = Cow<'m, [f32]>;
    type Error = std::convert::Infallible;
    fn matrix(&mut self, _: &str, s: &MatSlot) -> Result<Matrix<'m>, Self::Error> {
        Ok(self.0.matrix(*s))
    }
    fn vector(&mut self, _: &str, s: &VecSlot) -> Result<Cow<'m, [f32]>, Self::Error> {
        Ok(Cow::Borrowed(self.0.f32s(*s)))
    }
}

struct CopiedOutput {
    mem: Copied,
    norm: VecSlot,
    output: MatSlot,
}

/// The weights a device holds copies of (the CPU only of what it reads packed; it reads the
/// rest from the mapped file).
#[derive(Default)]
pub struct HostWeights {
    blocks: BTreeMap<usize, CopiedBlock>,
    output: Option<CopiedOutput>,
}

impl HostWeights {
    /// Copies `parts` of block `i` (as [`pieces`] cuts them) onto `device`.
    pub fn copy_block(
        &mut self,
        src: &Source,
        device: DeviceId,
        i: usize,
        parts: &Parts,
    ) -> Result<(), BackendError> {
        let mut mem = Copied::new(src.ledger, device, src.file, &pieces(src, i, parts), || {
            format!("weights of block {i}")
        })?;
        let n_expert = src.model.cfg.moe.as_ref().map_or(1, |m| m.n_expert);
        let layout = src.model.blocks[i].map(&mut Place {
            mem: &mut mem,
            block: i,
            parts,
            n_expert,
        })?;
        self.blocks.insert(i, CopiedBlock { mem, layout });
        Ok(())
    }

    /// Copies the output layer (final norm, output matrix; `token_embd.weight` when tied)
    /// onto `device`.
    pub fn copy_output(&mut self, src: &Source, device: DeviceId) -> Result<(), BackendError> {
        let pieces: Vec<Piece> = src
            .plan_model
            .output_tensors(false)
            .into_iter()
            .map(|t| Piece {
                cost: t.clone(),
                src: 0..t.data_bytes as usize,
            })
            .collect();
        let mut mem = Copied::new(src.ledger, device, src.file, &pieces, || {
            "output layer weights".into()
        })?;
        let out_name = if src.plan_model.tied_output {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let norm = mem.vector("output_norm.weight", src.model.output_norm.len())?;
        let mut output = mem.mat(out_name, &src.model.output)?;
        mem.pack(&mut output, out_name, 1)?;
        self.output = Some(CopiedOutput { mem, norm, output });
        Ok(())
    }

    /// Block `i`'s weights in this device's memory, if it holds them.
    pub fn block(&self, i: usize) -> Option<BlockWeights<'_>> {
        let b = self.blocks.get(&i)?;
        let Ok(w) = b.layout.map(&mut Read(&b.mem));
        Some(w)
    }

    /// The output norm and projection in this device's memory, if it holds them.
    pub fn output(&self) -> Option<(&[f32], Matrix<'_>)> {
        let o = self.output.as_ref()?;
        Some((o.mem.f32s(o.norm), o.mem.matrix(o.output)))
    }

    /// The blocks it holds copies of.
    pub fn blocks(&self) -> Vec<usize> {
        self.blocks.keys().copied().collect()
    }
}
