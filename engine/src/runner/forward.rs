//! The forward pass across devices, for a batch of `n` tokens at positions `pos..pos + n`:
//!
//! ```text
//! x = token_embd[tokens]                            (on the CPU)
//! for each run of consecutive blocks on one device:
//!     move x there if it is elsewhere               (the one copy at a boundary)
//!     x = blocks(x)                                 (the device's backend)
//! move x to the output layer's device; logits = output(x)
//! logits back to the CPU
//! ```
//!
//! What a block computes is in the backends: `backend::host::block` (the CPU's, top to
//! bottom) and `backend::cuda::forward`.

use std::time::Instant;

use super::trace::{self, Recorder};
use super::{DeviceSlot, Placement, RunError};
use crate::backend::{BackendError, Unit};
use crate::ledger::{DeviceId, Ledger};
use crate::model::Model;

#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    model: &Model,
    placement: &Placement,
    devices: &mut [DeviceSlot],
    ledger: &Ledger,
    tokens: &[u32],
    pos: usize,
    n_out: usize,
    trace: &mut Option<Recorder>,
) -> Result<(), RunError> {
    let n = tokens.len();
    let len = n * model.cfg.n_embd;
    let mut here = DeviceId::Cpu;
    let mut since = Instant::now();
    let cpu = device(devices, here);
    cpu.backend.embed(model, tokens)?;
    trace::compute(trace, cpu.backend.as_ref(), since, || "embed".into())?;

    let n_layer = placement.blocks.len();
    let mut start = 0;
    while start < n_layer {
        let dev = placement.blocks[start];
        let end = (start..n_layer)
            .find(|&j| placement.blocks[j] != dev)
            .unwrap_or(n_layer);
        cross(devices, ledger, &mut here, dev, len, &mut since, trace)?;
        let keep = if end == n_layer { n_out } else { n };
        let blocks = Unit::Blocks {
            blocks: start..end,
            keep,
        };
        let t = Instant::now();
        let d = device(devices, here);
        d.backend.run(model, &blocks, n, pos)?;
        trace::compute(trace, d.backend.as_ref(), t, || {
            format!("blocks {start}-{}", end - 1)
        })?;
        start = end;
    }

    cross(
        devices,
        ledger,
        &mut here,
        placement.output,
        len,
        &mut since,
        trace,
    )?;
    let output = Unit::Output { n_out };
    let t = Instant::now();
    let d = device(devices, here);
    d.backend.run(model, &output, n, pos)?;
    trace::compute(trace, d.backend.as_ref(), t, || "output".into())?;

    // The logits come back to the host: one more explicit copy when computed elsewhere.
    if here != DeviceId::Cpu {
        let len = n_out * model.cfg.n_vocab;
        let t = Instant::now();
        let (cpu, other) = pair(devices, DeviceId::Cpu, here);
        let logits = cpu.backend.host_logits_mut().ok_or(BackendError::Missing {
            device: DeviceId::Cpu,
            what: "logits in host memory".into(),
        })?;
        other.backend.read_logits(&mut logits[..len])?;
        ledger.count_copy(DeviceId::Cpu, len as u64 * 4);
        trace::transfer(trace, DeviceId::Cpu, t, || "logits → CPU".into());
    }
    device(devices, here).busy += since.elapsed();
    Ok(())
}

/// The slots of devices `a` and `b`, which must differ.
fn pair(
    devices: &mut [DeviceSlot],
    a: DeviceId,
    b: DeviceId,
) -> (&mut DeviceSlot, &mut DeviceSlot) {
    let ai = devices.iter().position(|d| d.id == a).expect("device a");
    let bi = devices.iter().position(|d| d.id == b).expect("device b");
    if bi < ai {
        let (l, r) = devices.split_at_mut(ai);
        (&mut r[0], &mut l[bi])
    } else {
        let (l, r) = devices.split_at_mut(bi);
        (&mut l[ai], &mut r[0])
    }
}

fn device(devices: &mut [DeviceSlot], id: DeviceId) -> &mut DeviceSlot {
    devices
        .iter_mut()
        .find(|d| d.id == id)
        .expect("every placed device has a slot")
}

/// Moves the residual stream (`len` floats) to `to` if it is elsewhere: the one explicit
/// copy at a device boundary, straight into or out of whichever side holds it in host
/// memory (staged through the host only between two GPUs). The time since `since` is
/// charged to the device left, the copy included; the copy is also a span on `to`.
fn cross(
    devices: &mut [DeviceSlot],
    ledger: &Ledger,
    here: &mut DeviceId,
    to: DeviceId,
    len: usize,
    since: &mut Instant,
    trace: &mut Option<Recorder>,
) -> Result<(), RunError> {
    if *here == to {
        return Ok(());
    }
    let t = Instant::now();
    let (b, a) = pair(devices, to, *here);
    if let Some(x) = a.backend.host_x() {
        b.backend.write_x(&x[..len])?;
    } else if let Some(x) = b.backend.host_x_mut() {
        a.backend.read_x(&mut x[..len])?;
    } else {
        let mut staged = vec![0.0f32; len];
        a.backend.read_x(&mut staged)?;
        b.backend.write_x(&staged)?;
    }
    ledger.count_copy(to, len as u64 * 4);
    trace::transfer(trace, to, t, || format!("copy x → {to}"));
    let now = Instant::now();
    a.busy += now - *since;
    *since = now;
    *here = to;
    Ok(())
}
