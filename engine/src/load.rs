//! Loading a model onto its devices as a plan says: every buffer (weights, KV caches,
//! scratch) allocated once, up front, before the first token, through the [`Ledger`].
//!
//! If an allocation fails anyway (the device allows less than it reported: another process,
//! fragmentation), everything allocated is freed, the failing device is re-planned with less
//! room than it was just given (so at least one layer leaves it, to the CPU or to another
//! accelerator), and the load is tried again. One line on stderr says what moved; the run
//! goes on. Each retry takes at least one layer off a device, so it ends: at worst with
//! everything on the CPU. The CPU's part of every plan is checked against the host's
//! memory before anything is allocated; a refusal on the CPU itself ends the load with
//! what to change, as there is nowhere to move its layers.

use std::time::Duration;

use thiserror::Error;

use crate::backend::{self, BackendError, Source};
use crate::buffers::{kv_cache_bytes, kv_type_of};
use crate::devices::Accelerator;
use crate::gguf::{GgufError, GgufFile};
use crate::ledger::{AllocError, DeviceId, Ledger};
use crate::model::Model;
use crate::plan::table::describe_layers;
use crate::plan::{plan, Bytes, Device, NumGpu, Plan, PlanError, PlanModel, RunSettings};
use crate::runner::{BlockPlace, DeviceSlot, Placement, Runner, RunnerOptions};

#[derive(Debug, Error)]
pub enum LoadError {
    /// A device refused an allocation: answered by re-planning ([`load`]).
    #[error(transparent)]
    Alloc(AllocError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Backend(BackendError),
    #[error("the plan cannot be run: {0}")]
    Unsupported(String),
    /// The host's part of the plan needs more memory than the host has for it.
    #[error(
        "the plan needs {} of host memory ({}), more than the {} available\n{table}",
        Bytes(*need),
        parts,
        Bytes(*available)
    )]
    HostMemory {
        need: u64,
        available: u64,
        /// What the need is made of, e.g. "weights 1.2 GiB, KV cache 16 GiB, scratch …".
        parts: String,
        /// The plan, as a table.
        table: String,
    },
}

impl From<BackendError> for LoadError {
    fn from(e: BackendError) -> LoadError {
        match e {
            BackendError::Alloc(e) => LoadError::Alloc(e),
            BackendError::Unsupported(why) => LoadError::Unsupported(why),
            e => LoadError::Backend(e),
        }
    }
}

impl From<AllocError> for LoadError {
    fn from(e: AllocError) -> LoadError {
        LoadError::Alloc(e)
    }
}

/// The runner's placement for a plan.
pub fn placement(plan: &Plan) -> Placement {
    let id = DeviceId::from_plan_index;
    Placement {
        blocks: plan
            .blocks
            .iter()
            .map(|b| BlockPlace {
                attention: id(b.attention),
                ffn: id(b.ffn),
                experts: b
                    .experts
                    .iter()
                    .map(|r| (r.experts.clone(), id(r.device)))
                    .collect(),
            })
            .collect(),
        output: id(plan.output_device),
    }
}

/// The runner's options for a plan: the physical batch (`n_ubatch`) is what one forward
/// call processes and what scratch is sized for.
pub fn runner_options(plan: &Plan) -> Result<RunnerOptions, LoadError> {
    let s = &plan.settings;
    // A decode step of every sequence in one batch wants a row of logits each.
    let per_seq = s.step_outputs();
    if s.n_outputs != per_seq && s.n_outputs != s.n_ubatch {
        return Err(LoadError::Unsupported(format!(
            "{} rows of logits per call (the runner computes one a sequence, {per_seq}, or \
             all {})",
            s.n_outputs, s.n_ubatch
        )));
    }
    Ok(RunnerOptions {
        n_ctx: s.n_ctx,
        n_batch: s.n_ubatch,
        kv_type: s.kv_type,
        placement: placement(plan),
        all_logits: s.n_outputs == s.n_ubatch && s.n_outputs > per_seq,
        overlap: s.overlap,
        n_seq: s.n_seq,
    })
}

/// Allocates every buffer `plan` asks for on `ledger` (its accelerators, `accels`, already
/// added) and builds the runner. Nothing is kept if any allocation fails. `progress` hears
/// the number of blocks whose weights are in place (copied, repacked or uploaded).
pub fn allocate<'m>(
    file: &GgufFile,
    model: &'m Model<'m>,
    plan_model: &PlanModel,
    plan: &Plan,
    accels: &[Accelerator],
    ledger: &Ledger,
    progress: &mut dyn FnMut(usize),
) -> Result<Runner<'m>, LoadError> {
    let cfg = &model.cfg;
    if plan.n_layer != cfg.n_layer {
        return Err(LoadError::Unsupported(format!(
            "the plan has {} blocks, the model {}",
            plan.n_layer, cfg.n_layer
        )));
    }
    let opts = runner_options(plan)?;
    let place = &opts.placement;
    let kv_type = opts.kv_type;
    if kv_type_of(kv_type).is_none() {
        return Err(LoadError::Unsupported(format!(
            "KV cache type {kv_type} (only F32 and F16)"
        )));
    }
    let mut devices: Vec<DeviceSlot> = Vec::new();
    for id in place.devices() {
        let accel = match id {
            DeviceId::Cpu => None,
            DeviceId::Accel(i) => Some(accels.get(i as usize).ok_or_else(|| {
                LoadError::Unsupported(format!(
                    "the plan uses {id}, but {} accelerator(s) were given",
                    accels.len()
                ))
            })?),
        };
        devices.push(DeviceSlot {
            id,
            backend: backend::open(id, accel, model, ledger)?,
            busy: Duration::ZERO,
        });
    }
    let slot = |devices: &[DeviceSlot], id: DeviceId| -> usize {
        devices
            .iter()
            .position(|d| d.id == id)
            .expect("placed device")
    };

    // Weights: each device takes its blocks' and, after them, the output layer's; the CPU
    // the token embedding last (a tied output it holds may serve the lookup).
    let src = Source {
        file,
        plan_model,
        model,
        ledger,
    };
    for (i, b) in place.blocks.iter().enumerate() {
        for dev in devices.iter_mut() {
            let parts = b.parts_on(dev.id, model, i);
            if parts.attention || parts.ffn || parts.experts.is_some() {
                dev.backend.hold_block(&src, i, &parts)?;
            }
        }
        progress(i + 1);
    }
    let d = slot(&devices, place.output);
    devices[d].backend.hold_output(&src)?;
    devices[0].backend.hold_embedding(&src)?;

    // KV caches, each on its block's device, sized by the function the planner used.
    let per_block = kv_cache_bytes(cfg, opts.n_ctx * opts.n_seq, kv_type);
    for (i, b) in place.blocks.iter().enumerate() {
        let d = slot(&devices, b.attention);
        devices[d]
            .backend
            .alloc_kv(model, i, (opts.n_ctx, opts.n_seq), kv_type, per_block)?;
    }

    // One scratch per device that runs anything (and the CPU's, which receives logits).
    let layout = opts.scratch_layout(cfg);
    for d in devices.iter_mut() {
        d.backend.alloc_scratch(model, layout)?;
    }
    Ok(Runner::from_parts(model, opts, devices, ledger.clone()))
}

/// A loaded runner, the plan it follows, and the recoveries on the way there.
pub struct Loaded<'m> {
    pub runner: Runner<'m>,
    pub plan: Plan,
    /// One line per allocation failure recovered from (also printed to stderr).
    pub recoveries: Vec<String>,
}

/// Plans `model` onto the CPU (`host`) and the accelerators `accels` (CUDA devices or
/// posing ones), allocates, and recovers from allocation failures by re-planning with one
/// layer less on the failing device. `ledger` gets an account per accelerator, with its
/// real budget.
pub fn load<'m>(
    file: &GgufFile,
    model: &'m Model<'m>,
    host: Device,
    accels: &[Accelerator],
    settings: &RunSettings,
    ledger: &Ledger,
) -> Result<Loaded<'m>, LoadError> {
    load_with_progress(file, model, host, accels, settings, ledger, &mut |_| {})
}

/// [`load`], telling `progress` how many blocks' weights are in place (copied, repacked
/// or uploaded: the long part of a load), from 0 again after each recovery.
pub fn load_with_progress<'m>(
    file: &GgufFile,
    model: &'m Model<'m>,
    host: Device,
    accels: &[Accelerator],
    settings: &RunSettings,
    ledger: &Ledger,
    progress: &mut dyn FnMut(usize),
) -> Result<Loaded<'m>, LoadError> {
    let plan_model = PlanModel::from_gguf(file)?;
    // The host's budget is enforced like a GPU's; u64::MAX means none is known.
    let host_budget = (host.free_bytes != u64::MAX).then_some(host.free_bytes);
    ledger.add_device(DeviceId::Cpu, "CPU", host_budget);
    let mut devices = vec![host];
    for (i, a) in accels.iter().enumerate() {
        ledger.add_device(DeviceId::Accel(i as u32), &a.name(), Some(a.budget()));
        devices.push(a.plan_device());
    }
    let mut settings = settings.clone();
    let mut current = plan(&plan_model, &devices, &settings)?;
    let mut recoveries = Vec::new();
    loop {
        check_host(&current)?;
        let err = match allocate(file, model, &plan_model, &current, accels, ledger, progress) {
            Ok(runner) => {
                return Ok(Loaded {
                    runner,
                    plan: current,
                    recoveries,
                })
            }
            Err(LoadError::Alloc(e)) => e,
            Err(e) => return Err(e),
        };
        // Everything allocated is freed by now (dropped with the failed attempt).
        let d = match err.device {
            DeviceId::Accel(i) => i as usize + 1,
            DeviceId::Cpu => return Err(err.into()),
        };
        let planned = current.devices[d].total_bytes();
        if !current.devices[d].runs_anything() {
            return Err(err.into());
        }
        // Give the device strictly less room than the plan that failed used, so the
        // planner takes at least one layer off it.
        devices[d].free_bytes = devices[d]
            .free_bytes
            .min((planned - 1).saturating_add(settings.margin));
        let next = match plan(&plan_model, &devices, &settings) {
            Ok(p) => p,
            Err(PlanError::DoesNotFit {
                largest_fitting, ..
            }) => {
                settings.num_gpu = NumGpu::Layers(largest_fitting);
                plan(&plan_model, &devices, &settings)?
            }
            Err(e) => return Err(e.into()),
        };
        let line = recovery_line(&err, &current, &next, d);
        eprintln!("{line}");
        recoveries.push(line);
        current = next;
    }
}

/// Refuses a plan whose host part (weights it copies or reads mapped, KV caches, scratch)
/// exceeds the host's budget, before anything is allocated.
fn check_host(plan: &Plan) -> Result<(), LoadError> {
    let cpu = &plan.devices[0];
    if cpu.fits() {
        return Ok(());
    }
    Err(LoadError::HostMemory {
        need: cpu.total_bytes(),
        available: cpu.budget_bytes,
        parts: format!(
            "weights {}, KV cache {}, scratch {}",
            Bytes(cpu.weights_bytes),
            Bytes(cpu.kv_bytes),
            Bytes(cpu.scratch_bytes)
        ),
        table: crate::plan::table::render(plan),
    })
}

/// `strata: allocation of 1.50 MiB (KV cache of block 3) on ACCEL0 failed (10.00 MiB in
/// use, budget 11.00 MiB); moved block 3 (1) to CPU and re-planned (num_gpu 4 → 3)`.
fn recovery_line(err: &AllocError, before: &Plan, after: &Plan, d: usize) -> String {
    let mut moved = Vec::new();
    for (to, dev) in after.devices.iter().enumerate() {
        if to == d {
            continue;
        }
        let blocks: Vec<usize> = before.devices[d]
            .blocks
            .iter()
            .copied()
            .filter(|b| after.block_devices[*b] == to)
            .collect();
        let output = before.output_device == d && after.output_device == to;
        if !blocks.is_empty() || output {
            moved.push(format!(
                "{} to {}",
                describe_layers(&blocks, output),
                dev.device.name
            ));
        }
        // Routed experts that left `d` for `to`, counted over the blocks.
        let experts: usize = (0..before.n_layer)
            .map(|i| {
                let was = before.blocks[i].experts_on(d).unwrap_or_default();
                let now = after.blocks[i].experts_on(to).unwrap_or_default();
                now.filter(|x| was.contains(x)).count()
            })
            .sum();
        if experts > 0 {
            moved.push(format!("{experts} routed expert(s) to {}", dev.device.name));
        }
    }
    let why = match &err.refused {
        Some(why) => format!("{why}; {} in use", Bytes(err.in_use)),
        None => format!("{} in use, budget {}", Bytes(err.in_use), Bytes(err.budget)),
    };
    format!(
        "strata: allocation of {} ({}) on {} failed ({why}); moved {} and re-planned \
         (num_gpu {} → {})",
        Bytes(err.requested),
        err.what,
        err.name,
        moved.join(", "),
        before.num_gpu,
        after.num_gpu
    )
}

/// The plan settings of a runner that decodes one sequence of up to `n_ctx` positions in
/// forward calls of up to `n_batch` tokens, keeping the last row's logits, with an F16 KV
/// cache (what `generate` runs).
pub fn decode_settings(n_ctx: usize, n_batch: usize, num_gpu: NumGpu) -> RunSettings {
    RunSettings {
        n_ctx,
        n_batch,
        n_ubatch: n_batch,
        kv_type: strata_kernels_cpu::GgmlType::F16,
        n_seq: 1,
        n_outputs: 1,
        num_gpu,
        ..RunSettings::default()
    }
}
