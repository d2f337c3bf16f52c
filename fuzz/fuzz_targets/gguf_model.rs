//! Arbitrary bytes through everything a model file goes through before the first token
//! and in it: the planner (from the header alone, as `bench plan` does), the config and
//! the binding of every weight, the loader (with a host budget, as `generate` has), and two
//! forward passes. Each step must end in a value or an error, never a panic, an abort, an
//! out-of-bounds read, a hang or an allocation sized by an unchecked header value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_engine::gguf::GgufFile;
use strata_engine::ledger::Ledger;
use strata_engine::load::{decode_settings, load};
use strata_engine::model::Model;
use strata_engine::plan::{plan, Device, NumGpu, PlanModel, RunSettings};

/// What the loader may use: enough for the seeds, small enough that a header asking for
/// more is refused by the plan rather than by the fuzzer's memory limit.
const HOST: u64 = 256 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    if let Ok(pm) = PlanModel::from_gguf(&f) {
        let devices = [Device::cpu(64 << 30), Device::gpu(0, 8 << 30)];
        for n_ctx in [64, 1 << 20] {
            let s = RunSettings {
                n_ctx,
                ..RunSettings::default()
            };
            let _ = plan(&pm, &devices, &s);
        }
    }
    let Ok(model) = Model::bind(&f, |_| {}) else {
        return;
    };
    // The training context, as `generate -c 0` takes it.
    let s = decode_settings(model.cfg.n_ctx_train, 4, NumGpu::Layers(0));
    let Ok(loaded) = load(&f, &model, Device::cpu(HOST), &[], &s, &Ledger::new()) else {
        return;
    };
    let mut runner = loaded.runner;
    let n_vocab = model.cfg.n_vocab as u32;
    let _ = runner.eval(&[0, 1 % n_vocab]);
    let _ = runner.eval(&[2 % n_vocab]);
});
