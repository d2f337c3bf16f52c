//! Placement: which device holds each part of each block and the output layer, and the
//! plan that results.
//!
//! Rules (the ones llama.cpp and Ollama users know):
//! - `num_gpu = k` puts the last k−1 blocks and the output layer on GPUs (k > n_layer: all);
//!   the token embedding stays on the CPU.
//! - `auto` puts as many as fit, last blocks first: the largest k that fits. In a model
//!   with routed experts it does so without them (attention, norms, router, shared experts
//!   and dense FFNs are what every token reads), then fills what is left on each GPU with
//!   routed experts, down to single experts ([`fill_experts`]).
//! - `-ot` rules, `--cpu-moe`, `--n-cpu-moe` pin parts of blocks ([`super::parts::Part`])
//!   to devices first; the layer split places what they leave.
//! - GPUs take consecutive runs of blocks in order (CUDA0 the earliest, the last GPU the
//!   output layer), sharing them by exact bytes in proportion to their free memory or to
//!   `--tensor-split`.
//! - A GPU may use its free memory minus the margin, for weights, the KV cache of its
//!   blocks and its scratch.
//!
//! The split: each GPU in turn takes the next blocks until it holds its share of the bytes
//! not yet placed (a block goes where its middle byte falls), but never more than fits, and
//! more than its share when the GPUs after it could not hold the rest. Filling each GPU to
//! its limit in turn places the most any split into consecutive runs can, so when that
//! greedy fill fails nothing fits, and when it succeeds the split above finds a plan.

use std::ops::Range;

use super::bytes::Bytes;
use super::cost::Role;
use super::devices::{Device, DeviceKind};
use super::error::PlanError;
use super::model::PlanModel;
use super::overrides::{resolve, Pins};
use super::parts::{ranges_of, slice_bytes, BlockCost, BlockPlacement, Part};
use super::result::{DevicePlan, LimitNote, Plan, TensorPlacement};
use super::settings::{AutoFill, NumGpu, RunSettings};
use super::table::{over_budget_reason, render};

/// What placement is decided from.
struct Costs {
    blocks: Vec<BlockCost>,
    block_weights: Vec<u64>,
    kv: u64,
    output_gpu: u64,
    output_cpu: u64,
    embedding: u64,
    scratch: u64,
    pins: Pins,
    /// The routed experts not pinned by a rule are placed after the layers, expert by
    /// expert (`auto`); else they go with their block.
    experts_apart: bool,
}

impl Costs {
    fn new(model: &PlanModel, devices: &[Device], s: &RunSettings) -> Result<Costs, PlanError> {
        let n_expert = model.buffers.0.moe.as_ref().map_or(1, |m| m.n_expert);
        let blocks: Vec<BlockCost> = (0..model.n_layer)
            .map(|i| BlockCost::new(&model.tensors, i, n_expert, model.alignment))
            .collect();
        let pins = resolve(model, devices, &s.overrides)?;
        let experts_apart = s.num_gpu == NumGpu::Auto
            && s.fill == AutoFill::Experts
            && (0..model.n_layer)
                .any(|i| blocks[i].has_experts() && pins.part(i, Part::Experts).is_none());
        Ok(Costs {
            block_weights: (0..model.n_layer)
                .map(|i| model.role_bytes(Role::Block(i)))
                .collect(),
            blocks,
            kv: model.buffers.kv_block_bytes(s)?,
            output_gpu: model.output_bytes(false),
            output_cpu: model.output_bytes(true),
            embedding: model.role_bytes(Role::Embedding),
            scratch: model.buffers.scratch_bytes(s),
            pins,
            experts_apart,
        })
    }

    fn all_experts(&self, i: usize) -> u64 {
        let c = &self.blocks[i];
        c.experts_bytes(c.n_expert)
    }

    /// Bytes of block `i`'s parts that go where the layer split puts the block: those no
    /// rule pins (the routed experts only when they go with their block).
    fn layer_bytes(&self, i: usize) -> u64 {
        let (c, p) = (&self.blocks[i], &self.pins);
        let mut b = 0;
        if p.part(i, Part::Attention).is_none() {
            b += c.attention + self.kv;
        }
        if p.part(i, Part::Ffn).is_none() {
            b += c.ffn;
        }
        if !self.experts_apart && p.part(i, Part::Experts).is_none() {
            b += self.all_experts(i);
        }
        b
    }

    /// Bytes the rules pin on device `d`.
    fn pinned_bytes(&self, d: usize) -> u64 {
        let p = &self.pins;
        let mut b = 0;
        for i in 0..self.blocks.len() {
            if p.part(i, Part::Attention) == Some(d) {
                b += self.blocks[i].attention + self.kv;
            }
            if p.part(i, Part::Ffn) == Some(d) {
                b += self.blocks[i].ffn;
            }
            if p.part(i, Part::Experts) == Some(d) {
                b += self.all_experts(i);
            }
        }
        if p.output == Some(d) {
            b += if d == 0 {
                self.output_cpu
            } else {
                self.output_gpu
            };
        }
        b
    }

    /// What goes to the GPUs for `num_gpu = k`, in order: the last k−1 blocks, then the
    /// output layer (`None`), with each one's bytes on a GPU (what no rule pins).
    fn gpu_items(&self, k: usize) -> Vec<(Option<usize>, u64)> {
        self.gpu_items_shared(k)
            .into_iter()
            .map(|(w, b, _)| (w, b))
            .collect()
    }

    /// [`Costs::gpu_items`] with the bytes each item stands for in the proportional split:
    /// with routed experts placed apart, a block's experts too, so that each GPU gets the
    /// blocks whose experts it will mostly hold.
    fn gpu_items_shared(&self, k: usize) -> Vec<(Option<usize>, u64, u64)> {
        let n = self.block_weights.len();
        if k == 0 {
            return Vec::new();
        }
        let first = n - (k - 1).min(n);
        let mut items: Vec<_> = (first..n)
            .map(|i| {
                let apart = self.experts_apart && self.pins.part(i, Part::Experts).is_none();
                let experts = if apart { self.all_experts(i) } else { 0 };
                (Some(i), self.layer_bytes(i), self.layer_bytes(i) + experts)
            })
            .collect();
        let output = if self.pins.output.is_some() {
            0
        } else {
            self.output_gpu
        };
        items.push((None, output, output));
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
    /// Scratch it needs if it takes any item (0 when parts pinned on it already need it).
    scratch: u64,
}

/// Most items from `start` that fit on `slot` (its scratch counted when it takes any).
fn max_fit(slot: &Slot, items: &[u64], start: usize) -> usize {
    let mut used = slot.scratch;
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
fn greedy_end(slots: &[&Slot], items: &[u64], start: usize) -> usize {
    slots.iter().fold(start, |j, s| j + max_fit(s, items, j))
}

/// Splits `items` (bytes, in order) over `slots` into consecutive runs: per item, the
/// index of the slot that takes it. With `capacity`, only splits that fit (`None` if none
/// does); without, the plain proportional split (to show why a request does not fit).
/// `shares` are what the proportions divide (the items' bytes, or more: see
/// [`Costs::gpu_items`]).
fn split(items: &[u64], shares: &[u64], slots: &[Slot], capacity: bool) -> Option<Vec<usize>> {
    let active: Vec<&Slot> = slots.iter().filter(|s| s.weight > 0.0).collect();
    let mut owner = Vec::with_capacity(items.len());
    if items.is_empty() {
        return Some(owner);
    }
    if active.is_empty() || (capacity && greedy_end(&active, items, 0) < items.len()) {
        return None;
    }
    let slot_index = |s: &Slot| slots.iter().position(|x| std::ptr::eq(x, s)).unwrap_or(0);
    let mut i = 0;
    for (pos, slot) in active.iter().enumerate() {
        let rest = &shares[i..];
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
            let most = max_fit(slot, items, i);
            take = take.min(most);
            while take < most && greedy_end(&active[pos + 1..], items, i + take) < items.len() {
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
    let costs = Costs::new(model, devices, settings)?;
    let slots: Vec<Slot> = devices
        .iter()
        .enumerate()
        .skip(1)
        .map(|(d, dev)| {
            let pinned = costs.pinned_bytes(d);
            let with_scratch = if pinned > 0 { costs.scratch } else { 0 };
            Slot {
                device: d,
                cap: dev
                    .free_bytes
                    .saturating_sub(settings.margin)
                    .saturating_sub(pinned + with_scratch),
                weight: match &settings.tensor_split {
                    Some(ts) => ts[d - 1],
                    None => dev.free_bytes as f64,
                },
                scratch: costs.scratch - with_scratch,
            }
        })
        .collect();
    let max_k = model.n_layer + 1;
    let try_k = |k: usize, capacity: bool| {
        let items = costs.gpu_items_shared(k);
        let bytes: Vec<u64> = items.iter().map(|i| i.1).collect();
        let shares: Vec<u64> = items.iter().map(|i| i.2).collect();
        split(&bytes, &shares, &slots, capacity)
    };
    let layers = |k: usize, owner: &[usize]| {
        let (blocks, output) = layer_placement(model, &costs, &slots, k, owner);
        build(model, devices, settings, &costs, k, blocks, output)
    };

    let plan = match settings.num_gpu {
        NumGpu::Auto => {
            let Some((k, owner)) = (0..=max_k)
                .rev()
                .find_map(|k| try_k(k, true).map(|o| (k, o)))
            else {
                // Only rules can fill a GPU before the first layer: show what they pin.
                let shown = layers(0, &[]);
                return Err(pins_do_not_fit(&shown));
            };
            let (blocks, output) = layer_placement(model, &costs, &slots, k, &owner);
            let mut plan = build(model, devices, settings, &costs, k, blocks.clone(), output);
            if costs.experts_apart {
                // The layers' plan says what room each GPU has left for experts.
                let blocks = fill_experts(&plan, &costs, blocks);
                plan = build(model, devices, settings, &costs, k, blocks, output);
            }
            if k < max_k && !slots.is_empty() {
                plan.limit = limit_note(k + 1, &costs, &slots, &try_k, &layers);
            }
            plan
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
                layers(k, &owner)
            } else {
                return Err(does_not_fit(requested, k, &try_k, &layers));
            }
        }
    };
    // The layers always fit where they go; parts pinned by rules may not.
    match plan.fits() {
        true => Ok(plan),
        false => Err(pins_do_not_fit(&plan)),
    }
}

/// Why an explicit `num_gpu = requested` (`k` layers after clamping) cannot be placed: the
/// first GPU over its budget in the proportional split, its table, and the largest
/// num_gpu that fits.
fn does_not_fit(
    requested: usize,
    k: usize,
    try_k: &dyn Fn(usize, bool) -> Option<Vec<usize>>,
    layers: &dyn Fn(usize, &[usize]) -> Plan,
) -> PlanError {
    let largest = (0..k)
        .rev()
        .find(|&k| try_k(k, true).is_some())
        .unwrap_or(0);
    let shown = try_k(k, false).map(|o| layers(k, &o));
    let why = match shown
        .as_ref()
        .and_then(|p| p.gpus().find(|d| !d.fits()).cloned())
    {
        Some(d) => over_budget_reason(&d),
        None => "no split of these layers over the GPUs fits".to_string(),
    };
    let table = shown.map(|p| render(&p)).unwrap_or_default();
    PlanError::DoesNotFit {
        requested,
        largest_fitting: largest,
        why,
        table,
    }
}

fn pins_do_not_fit(shown: &Plan) -> PlanError {
    let why = match shown.gpus().find(|d| !d.fits()) {
        Some(d) => over_budget_reason(d),
        None => "no GPU can hold what the rules put on it".into(),
    };
    PlanError::OverridesDoNotFit {
        why,
        table: render(shown),
    }
}

/// Where the layer split puts each part: the layers `owner` gives the GPUs, the rest on
/// the CPU, parts pinned by rules where they say; routed experts placed apart go to the
/// CPU here ([`fill_experts`] moves them).
fn layer_placement(
    model: &PlanModel,
    costs: &Costs,
    slots: &[Slot],
    k: usize,
    owner: &[usize],
) -> (Vec<BlockPlacement>, usize) {
    let mut block_devices = vec![0; model.n_layer];
    let mut output = 0;
    for ((what, _), &slot) in costs.gpu_items(k).iter().zip(owner) {
        match what {
            Some(i) => block_devices[*i] = slots[slot].device,
            None => output = slots[slot].device,
        }
    }
    let p = &costs.pins;
    let blocks = (0..model.n_layer)
        .map(|i| {
            let d = block_devices[i];
            let c = &costs.blocks[i];
            let experts_to = match p.part(i, Part::Experts) {
                Some(e) => e,
                None if costs.experts_apart => 0,
                None => d,
            };
            BlockPlacement {
                attention: p.part(i, Part::Attention).unwrap_or(d),
                ffn: p.part(i, Part::Ffn).unwrap_or(d),
                experts: if c.has_experts() {
                    ranges_of(&vec![experts_to; c.n_expert])
                } else {
                    Vec::new()
                },
            }
        })
        .collect();
    (blocks, p.output.unwrap_or(output))
}

/// Fills what the layers leave free on each GPU with routed experts that no rule pins:
/// first those of the blocks whose FFN it runs, then, with room left, those of any block.
/// Experts are taken one per block in turn, so that every block keeps the same share of
/// its experts (±1) on the GPU: under uniform routing each expert moved saves the same
/// bytes per token, and a block whose experts are split has its GPU and CPU shares computed
/// at the same time, which a block wholly on the CPU cannot. What no GPU takes stays on the
/// CPU.
fn fill_experts(
    layers: &Plan,
    costs: &Costs,
    mut blocks: Vec<BlockPlacement>,
) -> Vec<BlockPlacement> {
    let n = blocks.len();
    let movable: Vec<bool> = (0..n)
        .map(|i| !blocks[i].experts.is_empty() && costs.pins.part(i, Part::Experts).is_none())
        .collect();
    let mut owner: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            vec![
                0;
                if movable[i] {
                    costs.blocks[i].n_expert
                } else {
                    0
                }
            ]
        })
        .collect();
    // Experts given away so far of each block, and how many each device took of it.
    let mut next = vec![0usize; n];
    // Each GPU's room left, whether it already has a scratch, what it took of each block.
    let mut room: Vec<(u64, bool, Vec<usize>)> = layers
        .devices
        .iter()
        .map(|p| {
            let left = p.budget_bytes.saturating_sub(p.total_bytes());
            (left, p.scratch_bytes > 0, vec![0; n])
        })
        .collect();
    for pass in 0..2 {
        for (d, (room, runs, taken)) in room.iter_mut().enumerate().skip(1) {
            let mine: Vec<usize> = (0..n)
                .filter(|&i| movable[i] && (pass == 1 || blocks[i].ffn == d))
                .collect();
            loop {
                let mut moved = false;
                for &i in &mine {
                    let c = &costs.blocks[i];
                    if next[i] == c.n_expert {
                        continue;
                    }
                    let grow = c.experts_bytes(taken[i] + 1) - c.experts_bytes(taken[i]);
                    let need = grow + if *runs { 0 } else { costs.scratch };
                    if need > *room {
                        continue;
                    }
                    *room -= need;
                    *runs = true;
                    owner[i][next[i]] = d;
                    next[i] += 1;
                    taken[i] += 1;
                    moved = true;
                }
                if !moved {
                    break;
                }
            }
        }
    }
    for i in (0..n).filter(|&i| movable[i]) {
        blocks[i].experts = ranges_of(&owner[i]);
    }
    blocks
}

fn limit_note(
    k: usize,
    costs: &Costs,
    slots: &[Slot],
    try_k: &dyn Fn(usize, bool) -> Option<Vec<usize>>,
    layers: &dyn Fn(usize, &[usize]) -> Plan,
) -> Option<LimitNote> {
    let shown = layers(k, &try_k(k, false)?);
    let over = shown.gpus().find(|d| !d.fits())?.clone();
    let items = costs.gpu_items(k);
    let bytes: Vec<u64> = items.iter().map(|(_, b)| *b).collect();
    let active: Vec<&Slot> = slots.iter().filter(|s| s.weight > 0.0).collect();
    let end = greedy_end(&active, &bytes, 0);
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

/// The plan for parts placed as `blocks` say and the output layer on `output`.
fn build(
    model: &PlanModel,
    devices: &[Device],
    settings: &RunSettings,
    costs: &Costs,
    k: usize,
    blocks: Vec<BlockPlacement>,
    output_device: usize,
) -> Plan {
    let n = model.n_layer;
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
            ffn_blocks: Vec::new(),
            experts: Vec::new(),
            output: false,
            embedding: d.kind == DeviceKind::Cpu,
        })
        .collect();

    let mut tensors = Vec::with_capacity(model.tensors.len() + 1);
    for t in &model.tensors {
        let at = |device: usize, bytes: u64, experts: Option<Range<usize>>| TensorPlacement {
            name: t.name.clone(),
            role: t.role,
            device,
            bytes,
            experts,
        };
        match (t.role, Part::of(&t.name)) {
            (Role::Block(i), Some((_, Part::Experts))) => {
                let c = &costs.blocks[i];
                let per = t.data_bytes / c.n_expert as u64;
                for r in &blocks[i].experts {
                    if r.experts.len() == c.n_expert {
                        tensors.push(at(r.device, t.bytes, None));
                    } else {
                        let bytes = slice_bytes(per, r.experts.len(), model.alignment);
                        tensors.push(at(r.device, bytes, Some(r.experts.clone())));
                    }
                }
            }
            (Role::Block(i), Some((_, Part::Attention))) => {
                tensors.push(at(blocks[i].attention, t.bytes, None))
            }
            (Role::Block(i), _) => tensors.push(at(blocks[i].ffn, t.bytes, None)),
            (Role::Embedding, _) => tensors.push(at(0, t.bytes, None)),
            (Role::Output, _) => tensors.push(at(output_device, t.bytes, None)),
        }
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
                experts: None,
            });
        }
    }
    for t in &tensors {
        plans[t.device].weights_bytes += t.bytes;
    }
    for (i, b) in blocks.iter().enumerate() {
        plans[b.attention].blocks.push(i);
        plans[b.attention].kv_bytes += costs.kv;
        if b.ffn != b.attention {
            plans[b.ffn].ffn_blocks.push(i);
        }
        for r in &b.experts {
            if r.device != b.ffn {
                plans[r.device].experts.push((i, r.experts.clone()));
            }
        }
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
            + tensors
                .iter()
                .filter(|t| matches!(t.role, Role::Block(_)))
                .map(|t| t.bytes)
                .sum::<u64>()
            + if output_device == 0 {
                costs.output_cpu
            } else {
                costs.output_gpu
            }
    );

    let mut warnings: Vec<String> = costs.pins.followed.iter().cloned().collect();
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
    let moe = model.buffers.0.moe.as_ref();
    Plan {
        arch: model.arch.clone(),
        n_layer: n,
        settings: settings.clone(),
        devices: plans,
        block_devices: blocks.iter().map(|b| b.attention).collect(),
        blocks,
        output_device,
        tensors,
        num_gpu: k,
        block_weights: costs.block_weights.clone(),
        block_kv_bytes: costs.kv,
        output_gpu_bytes: costs.output_gpu,
        scratch_bytes: costs.scratch,
        experts_read: moe.map_or((1, 1), |m| (m.n_expert_used, m.n_expert)),
        limit: None,
        warnings,
    }
}
