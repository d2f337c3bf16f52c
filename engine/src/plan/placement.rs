//! Placement: which device holds each block and the output layer, and the plan that
//! results.
//!
//! Rules (the ones llama.cpp and Ollama users know):
//! - `num_gpu = k` puts the last k−1 blocks and the output layer on GPUs (k > n_layer: all);
//!   the token embedding stays on the CPU.
//! - `auto` puts as many as fit, last blocks first: the largest k that fits.
//! - GPUs take consecutive runs of blocks in order (CUDA0 the earliest, the last GPU the
//!   output layer), sharing them by exact bytes in proportion to their free memory or to
//!   `--tensor-split`; a block is never split.
//! - A GPU may use its free memory minus the margin, for weights, the KV cache of its
//!   blocks and its scratch.
//!
//! The split: each GPU in turn takes the next blocks until it holds its share of the bytes
//! not yet placed (a block goes where its middle byte falls), but never more than fits, and
//! more than its share when the GPUs after it could not hold the rest. Filling each GPU to
//! its limit in turn places the most any split into consecutive runs can, so when that
//! greedy fill fails nothing fits, and when it succeeds the split above finds a plan.

use super::bytes::Bytes;
use super::cost::Role;
use super::devices::{Device, DeviceKind};
use super::error::PlanError;
use super::model::PlanModel;
use super::result::{DevicePlan, LimitNote, Plan, TensorPlacement};
use super::settings::{NumGpu, RunSettings};
use super::table::{over_budget_reason, render};

/// What placement is decided from.
struct Costs {
    block_weights: Vec<u64>,
    kv: u64,
    output_gpu: u64,
    output_cpu: u64,
    embedding: u64,
    scratch: u64,
}

impl Costs {
    fn new(model: &PlanModel, s: &RunSettings) -> Result<Costs, PlanError> {
        Ok(Costs {
            block_weights: (0..model.n_layer)
                .map(|i| model.role_bytes(Role::Block(i)))
                .collect(),
            kv: model.buffers.kv_block_bytes(s)?,
            output_gpu: model.output_bytes(false),
            output_cpu: model.output_bytes(true),
            embedding: model.role_bytes(Role::Embedding),
            scratch: model.buffers.scratch_bytes(s),
        })
    }

    /// What goes to the GPUs for `num_gpu = k`, in order: the last k−1 blocks, then the
    /// output layer (`None`), with each one's bytes on a GPU.
    fn gpu_items(&self, k: usize) -> Vec<(Option<usize>, u64)> {
        let n = self.block_weights.len();
        if k == 0 {
            return Vec::new();
        }
        let first = n - (k - 1).min(n);
        let mut items: Vec<_> = (first..n)
            .map(|i| (Some(i), self.block_weights[i] + self.kv))
            .collect();
        items.push((None, self.output_gpu));
        items
    }
}

/// A GPU as the split sees it.
struct Slot {
    /// Index into the device list.
    device: usize,
    /// Free minus margin.
    cap: u64,
    /// Its proportion of the layers (free memory or `--tensor-split`); 0: takes none.
    weight: f64,
}

/// Most items from `start` that fit on `slot` (its scratch counted when it takes any).
fn max_fit(slot: &Slot, items: &[u64], start: usize, scratch: u64) -> usize {
    let mut used = scratch;
    let mut t = 0;
    for &b in &items[start..] {
        used = used.saturating_add(b);
        if used > slot.cap {
            break;
        }
        t += 1;
    }
    t
}

/// Where the greedy fill of `slots` starting at item `start` runs out of room (`items.len()`
/// when everything is placed).
fn greedy_end(slots: &[&Slot], items: &[u64], start: usize, scratch: u64) -> usize {
    slots
        .iter()
        .fold(start, |j, s| j + max_fit(s, items, j, scratch))
}

/// Splits `items` (bytes, in order) over `slots` into consecutive runs: per item, the
/// index of the slot that takes it. With `capacity`, only splits that fit (`None` if none
/// does); without, the plain proportional split (to show why a request does not fit).
fn split(items: &[u64], slots: &[Slot], scratch: u64, capacity: bool) -> Option<Vec<usize>> {
    let active: Vec<&Slot> = slots.iter().filter(|s| s.weight > 0.0).collect();
    let mut owner = Vec::with_capacity(items.len());
    if items.is_empty() {
        return Some(owner);
    }
    if active.is_empty() || (capacity && greedy_end(&active, items, 0, scratch) < items.len()) {
        return None;
    }
    let slot_index = |s: &Slot| slots.iter().position(|x| std::ptr::eq(x, s)).unwrap_or(0);
    let mut i = 0;
    for (pos, slot) in active.iter().enumerate() {
        let rest = &items[i..];
        let mut take = if pos + 1 == active.len() {
            rest.len()
        } else {
            let weight_left: f64 = active[pos..].iter().map(|s| s.weight).sum();
            let target = slot.weight / weight_left * rest.iter().sum::<u64>() as f64;
            let mut before = 0u64;
            rest.iter()
                .take_while(|&&b| {
                    let mid = before as f64 + b as f64 / 2.0;
                    before += b;
                    mid < target
                })
                .count()
        };
        if capacity {
            let most = max_fit(slot, items, i, scratch);
            take = take.min(most);
            while take < most
                && greedy_end(&active[pos + 1..], items, i + take, scratch) < items.len()
            {
                take += 1;
            }
        }
        owner.extend(std::iter::repeat_n(slot_index(slot), take));
        i += take;
    }
    // With capacity the greedy check above guarantees everything was placed.
    (i == items.len()).then_some(owner)
}

/// Plans `model` onto `devices` (exactly one CPU, first, then the GPUs) for `settings`.
pub fn plan(
    model: &PlanModel,
    devices: &[Device],
    settings: &RunSettings,
) -> Result<Plan, PlanError> {
    check(devices, settings)?;
    let costs = Costs::new(model, settings)?;
    let slots: Vec<Slot> = devices
        .iter()
        .enumerate()
        .skip(1)
        .map(|(d, dev)| Slot {
            device: d,
            cap: dev.free_bytes.saturating_sub(settings.margin),
            weight: match &settings.tensor_split {
                Some(ts) => ts[d - 1],
                None => dev.free_bytes as f64,
            },
        })
        .collect();
    let max_k = model.n_layer + 1;
    let try_k = |k: usize, capacity: bool| {
        let items: Vec<u64> = costs.gpu_items(k).iter().map(|(_, b)| *b).collect();
        split(&items, &slots, costs.scratch, capacity)
    };
    let build =
        |k: usize, owner: &[usize]| build(model, devices, settings, &costs, &slots, k, owner);

    match settings.num_gpu {
        NumGpu::Auto => {
            let (k, owner) = (0..=max_k)
                .rev()
                .find_map(|k| try_k(k, true).map(|o| (k, o)))
                .expect("num_gpu = 0 always fits: it puts nothing on a GPU");
            let mut plan = build(k, &owner);
            if k < max_k && !slots.is_empty() {
                plan.limit = limit_note(k + 1, &costs, &slots, &try_k, &build);
            }
            Ok(plan)
        }
        NumGpu::Layers(requested) => {
            let k = requested.min(max_k);
            if k > 0 && slots.is_empty() {
                return Err(PlanError::BadDevices {
                    why: format!(
                        "num_gpu = {requested} asks for layers on a GPU, but there is none \
                         (give --gpus for a what-if plan)"
                    ),
                });
            }
            if let Some(owner) = try_k(k, true) {
                return Ok(build(k, &owner));
            }
            let largest = (0..k)
                .rev()
                .find(|&k| try_k(k, true).is_some())
                .unwrap_or(0);
            let shown = try_k(k, false).map(|o| build(k, &o));
            let why = match shown
                .as_ref()
                .and_then(|p| p.gpus().find(|d| !d.fits()).cloned())
            {
                Some(d) => over_budget_reason(&d),
                None => "no split of these layers over the GPUs fits".to_string(),
            };
            let table = shown.map(|p| render(&p)).unwrap_or_default();
            Err(PlanError::DoesNotFit {
                requested,
                largest_fitting: largest,
                why,
                table,
            })
        }
    }
}

fn limit_note(
    k: usize,
    costs: &Costs,
    slots: &[Slot],
    try_k: &dyn Fn(usize, bool) -> Option<Vec<usize>>,
    build: &dyn Fn(usize, &[usize]) -> Plan,
) -> Option<LimitNote> {
    let shown = build(k, &try_k(k, false)?);
    let over = shown.gpus().find(|d| !d.fits())?.clone();
    let items = costs.gpu_items(k);
    let bytes: Vec<u64> = items.iter().map(|(_, b)| *b).collect();
    let active: Vec<&Slot> = slots.iter().filter(|s| s.weight > 0.0).collect();
    let end = greedy_end(&active, &bytes, 0, costs.scratch);
    let greedy_leftover = items.get(end).and_then(|(b, _)| *b);
    Some(LimitNote {
        num_gpu: k,
        over,
        greedy_leftover,
    })
}

fn check(devices: &[Device], s: &RunSettings) -> Result<(), PlanError> {
    let bad_dev = |why: String| Err(PlanError::BadDevices { why });
    match devices.first() {
        Some(d) if d.kind == DeviceKind::Cpu => {}
        _ => return bad_dev("the first device must be the CPU".into()),
    }
    if devices.iter().skip(1).any(|d| d.kind == DeviceKind::Cpu) {
        return bad_dev("only one CPU device may be given".into());
    }
    let n_gpu = devices.len() - 1;
    if let Some(ts) = &s.tensor_split {
        if ts.len() != n_gpu {
            return Err(PlanError::BadTensorSplit {
                text: ts
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                why: format!("{} proportions for {n_gpu} GPUs", ts.len()),
            });
        }
        if ts.iter().any(|v| !v.is_finite() || *v < 0.0) || ts.iter().all(|v| *v == 0.0) {
            return Err(PlanError::BadTensorSplit {
                text: format!("{ts:?}"),
                why: "proportions must be non-negative and not all 0".into(),
            });
        }
    }
    let bad = |why: &str| {
        Err(PlanError::BadSettings {
            why: why.to_string(),
        })
    };
    if s.n_ctx == 0 || s.n_seq == 0 || s.n_ubatch == 0 || s.n_batch == 0 || s.n_outputs == 0 {
        return bad("n_ctx, n_batch, n_ubatch, n_seq and n_outputs must be positive");
    }
    if s.n_ubatch > s.n_batch {
        return bad("n_ubatch may not exceed n_batch");
    }
    if s.n_outputs > s.n_ubatch {
        return bad("n_outputs may not exceed n_ubatch");
    }
    Ok(())
}

fn build(
    model: &PlanModel,
    devices: &[Device],
    settings: &RunSettings,
    costs: &Costs,
    slots: &[Slot],
    k: usize,
    owner: &[usize],
) -> Plan {
    let n = model.n_layer;
    let mut block_devices = vec![0; n];
    let mut output_device = 0;
    for ((what, _), &slot) in costs.gpu_items(k).iter().zip(owner) {
        match what {
            Some(i) => block_devices[*i] = slots[slot].device,
            None => output_device = slots[slot].device,
        }
    }
    let mut plans: Vec<DevicePlan> = devices
        .iter()
        .map(|d| DevicePlan {
            device: d.clone(),
            weights_bytes: 0,
            kv_bytes: 0,
            scratch_bytes: 0,
            budget_bytes: match d.kind {
                DeviceKind::Cpu => d.free_bytes,
                DeviceKind::Gpu => d.free_bytes.saturating_sub(settings.margin),
            },
            blocks: Vec::new(),
            output: false,
            embedding: d.kind == DeviceKind::Cpu,
        })
        .collect();

    let mut tensors = Vec::with_capacity(model.tensors.len() + 1);
    for t in &model.tensors {
        let device = match t.role {
            Role::Embedding => 0,
            Role::Block(i) => block_devices[i],
            Role::Output => output_device,
        };
        tensors.push(TensorPlacement {
            name: t.name.clone(),
            role: t.role,
            device,
            bytes: t.bytes,
        });
    }
    if output_device != 0 {
        for t in model
            .output_tensors(false)
            .into_iter()
            .filter(|t| t.role != Role::Output)
        {
            tensors.push(TensorPlacement {
                name: t.name.clone(),
                role: Role::Output,
                device: output_device,
                bytes: t.bytes,
            });
        }
    }
    for t in &tensors {
        plans[t.device].weights_bytes += t.bytes;
    }
    for (i, &d) in block_devices.iter().enumerate() {
        plans[d].blocks.push(i);
        plans[d].kv_bytes += costs.kv;
    }
    plans[output_device].output = true;
    for (d, p) in plans.iter_mut().enumerate() {
        // The CPU always runs the embedding lookup and receives the logits.
        if d == 0 || p.runs_anything() {
            p.scratch_bytes = costs.scratch;
        }
    }
    debug_assert_eq!(
        plans.iter().map(|p| p.weights_bytes).sum::<u64>(),
        costs.embedding
            + costs.block_weights.iter().sum::<u64>()
            + if output_device == 0 {
                costs.output_cpu
            } else {
                costs.output_gpu
            }
    );

    let mut warnings = Vec::new();
    let cpu = &plans[0];
    if !cpu.fits() {
        warnings.push(format!(
            "CPU: the plan needs {} of host memory (weights {}, KV cache {}, scratch {}), more \
             than the {} available: loading it is refused (lower the context, or put more \
             layers on GPUs)",
            Bytes(cpu.total_bytes()),
            Bytes(cpu.weights_bytes),
            Bytes(cpu.kv_bytes),
            Bytes(cpu.scratch_bytes),
            Bytes(cpu.device.free_bytes),
        ));
    }
    Plan {
        arch: model.arch.clone(),
        n_layer: n,
        settings: settings.clone(),
        devices: plans,
        block_devices,
        output_device,
        tensors,
        num_gpu: k,
        block_weights: costs.block_weights.clone(),
        block_kv_bytes: costs.kv,
        output_gpu_bytes: costs.output_gpu,
        scratch_bytes: costs.scratch,
        limit: None,
        warnings,
    }
}
