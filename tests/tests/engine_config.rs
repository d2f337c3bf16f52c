//! Model config from metadata: the good case and a named error for every bad one.

use std::collections::HashMap;

use strata_engine::config::{blocks_in, Arch, ConfigError, ModelConfig, ModelSource};
use strata_kernels_cpu::GgmlType;

/// Metadata and tensor shapes in maps, so each test can break one thing.
#[derive(Clone, Default)]
struct Src {
    strs: HashMap<String, String>,
    uints: HashMap<String, u64>,
    floats: HashMap<String, f32>,
    bools: HashMap<String, bool>,
    tensors: HashMap<String, (GgmlType, Vec<u64>)>,
}

impl ModelSource for Src {
    fn meta_str(&self, key: &str) -> Option<String> {
        self.strs.get(key).cloned()
    }
    fn meta_uint(&self, key: &str) -> Option<u64> {
        self.uints.get(key).copied()
    }
    fn meta_f32(&self, key: &str) -> Option<f32> {
        self.floats.get(key).copied()
    }
    fn meta_bool(&self, key: &str) -> Option<bool> {
        self.bools.get(key).copied()
    }
    fn tensor_shape(&self, name: &str) -> Option<(GgmlType, Vec<u64>)> {
        self.tensors.get(name).cloned()
    }
    fn blocks_present(&self) -> usize {
        blocks_in(self.tensors.keys().map(String::as_str))
    }
}

/// A tiny llama-like model: 2 blocks, n_embd 64, 4 heads of 16, 2 KV heads, vocab 100.
fn tiny(arch: &str) -> Src {
    let mut s = Src::default();
    s.strs.insert("general.architecture".into(), arch.into());
    for (k, v) in [
        ("block_count", 2),
        ("embedding_length", 64),
        ("feed_forward_length", 128),
        ("attention.head_count", 4),
        ("attention.head_count_kv", 2),
        ("context_length", 256),
    ] {
        s.uints.insert(format!("{arch}.{k}"), v);
    }
    s.floats
        .insert(format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5);
    s.floats.insert(format!("{arch}.rope.freq_base"), 10000.0);
    s.tensors
        .insert("token_embd.weight".into(), (GgmlType::Q8_0, vec![64, 100]));
    // The config lists what it needs; give exactly that.
    let probe = ModelConfig {
        arch: Arch::Llama,
        n_layer: 2,
        n_embd: 64,
        n_ff: 128,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        n_rot: 16,
        rms_eps: 1e-5,
        rope_freq_base: 1e4,
        rope_freq_scale: 1.0,
        n_ctx_train: 256,
        n_vocab: 100,
        tied_output: true,
        qkv_bias: arch == "qwen2",
        qk_norm: arch == "qwen3",
        yarn_orig_ctx: None,
        yarn_log_mul: 0.0,
        moe: None,
        mla: None,
    };
    for (name, dims) in probe.tensor_shapes() {
        let ty = if dims.len() == 1 {
            GgmlType::F32
        } else {
            GgmlType::Q4_1
        };
        s.tensors.insert(name, (ty, dims));
    }
    s
}

#[test]
fn reads_each_supported_arch() {
    for (arch, want) in [
        ("llama", Arch::Llama),
        ("qwen2", Arch::Qwen2),
        ("qwen3", Arch::Qwen3),
    ] {
        let cfg = ModelConfig::from_source(&tiny(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(cfg.arch, want);
        assert_eq!(
            (cfg.n_layer, cfg.n_embd, cfg.head_dim, cfg.n_vocab),
            (2, 64, 16, 100)
        );
        assert!(cfg.tied_output);
        assert_eq!(cfg.qkv_bias, arch == "qwen2");
        assert_eq!(cfg.qk_norm, arch == "qwen3");
    }
}

#[test]
fn every_bad_input_is_a_named_error() {
    let good = tiny("llama");

    let mut s = good.clone();
    s.strs.remove("general.architecture");
    assert_eq!(
        ModelConfig::from_source(&s),
        Err(ConfigError::NoArchitecture)
    );

    let mut s = good.clone();
    s.strs.insert("general.architecture".into(), "gpt2".into());
    assert_eq!(
        ModelConfig::from_source(&s),
        Err(ConfigError::UnsupportedArch("gpt2".into()))
    );

    for key in [
        "llama.block_count",
        "llama.embedding_length",
        "llama.context_length",
    ] {
        let mut s = good.clone();
        s.uints.remove(key);
        assert_eq!(
            ModelConfig::from_source(&s),
            Err(ConfigError::MissingKey(key.into()))
        );
    }

    // A count beyond the file's blocks is refused before anything is sized by it.
    let mut s = good.clone();
    s.uints.insert("llama.block_count".into(), 4_000_000_000);
    let e = ModelConfig::from_source(&s).unwrap_err();
    assert!(
        matches!(&e, ConfigError::BadValue { key, value, why }
            if key == "llama.block_count" && value == "4000000000" && why.contains("block 1")),
        "{e}"
    );

    let mut s = good.clone();
    s.floats.remove("llama.attention.layer_norm_rms_epsilon");
    assert_eq!(
        ModelConfig::from_source(&s),
        Err(ConfigError::MissingKey(
            "llama.attention.layer_norm_rms_epsilon".into()
        ))
    );

    let mut s = good.clone();
    s.uints.insert("llama.attention.head_count_kv".into(), 3);
    let e = ModelConfig::from_source(&s).unwrap_err();
    assert!(
        matches!(&e, ConfigError::BadValue { key, .. } if key == "llama.attention.head_count_kv"),
        "{e}"
    );

    let mut s = good.clone();
    s.uints.insert("llama.attention.head_count".into(), 0);
    let e = ModelConfig::from_source(&s).unwrap_err();
    assert!(e.to_string().contains("llama.attention.head_count"), "{e}");

    let mut s = good.clone();
    s.uints.insert("llama.rope.dimension_count".into(), 17);
    let e = ModelConfig::from_source(&s).unwrap_err();
    assert!(e.to_string().contains("rope.dimension_count"), "{e}");

    let mut s = good.clone();
    s.tensors.remove("blk.1.ffn_down.weight");
    assert_eq!(
        ModelConfig::from_source(&s),
        Err(ConfigError::MissingTensor("blk.1.ffn_down.weight".into()))
    );

    let mut s = good.clone();
    s.tensors
        .insert("blk.0.attn_k.weight".into(), (GgmlType::Q4_1, vec![64, 64]));
    let e = ModelConfig::from_source(&s).unwrap_err();
    assert!(
        matches!(&e, ConfigError::TensorShape { name, .. } if name == "blk.0.attn_k.weight"),
        "{e}"
    );

    let mut s = good.clone();
    s.uints.insert("llama.vocab_size".into(), 99);
    let e = ModelConfig::from_source(&s).unwrap_err();
    assert!(e.to_string().contains("llama.vocab_size"), "{e}");

    let mut s = tiny("qwen2");
    s.tensors.remove("blk.0.attn_v.bias");
    assert_eq!(
        ModelConfig::from_source(&s),
        Err(ConfigError::MissingTensor("blk.0.attn_v.bias".into()))
    );

    let mut s = good;
    s.tensors
        .insert("blk.0.attn_q.weight".into(), (GgmlType::Q8_1, vec![64, 64]));
    let e = ModelConfig::from_source(&s).unwrap_err();
    assert!(matches!(&e, ConfigError::TensorType { .. }), "{e}");
}

/// The metadata and tensor shapes of a written file, as a map source to break.
fn from_file(f: &strata_engine::gguf::GgufFile) -> Src {
    let mut s = Src::default();
    for (k, v) in f.metadata().iter() {
        if let Some(x) = v.as_str() {
            s.strs.insert(k.into(), x.into());
        } else if let Some(x) = v.as_u64() {
            s.uints.insert(k.into(), x);
        } else if let Some(x) = v.as_f32() {
            s.floats.insert(k.into(), x);
        } else if let Some(x) = v.as_bool() {
            s.bools.insert(k.into(), x);
        }
    }
    for t in f.tensors() {
        s.tensors.insert(t.name.clone(), (t.ty, t.dims.clone()));
    }
    s
}

fn bad_key(s: &Src) -> String {
    match ModelConfig::from_source(s) {
        Err(ConfigError::BadValue { key, .. }) => key,
        Err(ConfigError::MissingKey(key)) => key,
        other => panic!("expected a named key error, got {other:?}"),
    }
}

#[test]
fn reads_experts_and_latent_attention() {
    use strata_kernels_cpu::ops::Gating;
    use strata_tests::random_model::RandomMoe;
    let q =
        ModelConfig::from_source(&from_file(&RandomMoe::qwen3moe(GgmlType::Q8_0).build())).unwrap();
    assert_eq!(q.arch, Arch::Qwen3Moe);
    let m = q.moe.as_ref().unwrap();
    assert_eq!((m.n_expert, m.n_expert_used, m.n_ff_exp), (8, 2, 32));
    assert!(m.norm_weights && m.gating == Gating::Softmax && q.qk_norm && q.mla.is_none());
    assert_eq!(q.n_ff, 0, "qwen3moe has no dense FFN");

    for split in [false, true] {
        let f = RandomMoe::deepseek2(GgmlType::Q8_0, split).build();
        let d = ModelConfig::from_source(&from_file(&f)).unwrap();
        let (m, a) = (d.moe.as_ref().unwrap(), d.mla.unwrap());
        assert_eq!((m.n_shared, m.n_dense_lead, m.groups), (1, 1, Some((4, 2))));
        assert!(m.gating == Gating::Sigmoid && m.norm_weights && m.weights_scale == 2.5);
        assert_eq!(
            (
                a.q_lora_rank,
                a.kv_lora_rank,
                a.qk_nope,
                a.qk_rope,
                a.v_head
            ),
            (32, 64, 32, 16, 32)
        );
        assert_eq!((a.split_kv_b, d.head_dim, d.n_rot), (split, 48, 16));
        assert!(!d.is_moe_block(0) && d.is_moe_block(1));
    }
}

#[test]
fn bad_expert_and_latent_metadata_are_named_errors() {
    use strata_tests::random_model::RandomMoe;
    let q = from_file(&RandomMoe::qwen3moe(GgmlType::Q8_0).build());
    let d = from_file(&RandomMoe::deepseek2(GgmlType::Q8_0, true).build());

    let mut s = q.clone();
    s.uints.remove("qwen3moe.expert_count");
    assert_eq!(bad_key(&s), "qwen3moe.expert_count");
    let mut s = q.clone();
    s.uints.insert("qwen3moe.expert_used_count".into(), 9);
    assert_eq!(bad_key(&s), "qwen3moe.expert_used_count");
    // Without its width the experts' width falls back to n_ff / used, as in llama.cpp;
    // without either it is named.
    let mut s = q.clone();
    s.uints.remove("qwen3moe.expert_feed_forward_length");
    assert_eq!(bad_key(&s), "qwen3moe.feed_forward_length");
    let mut s = q.clone();
    s.tensors.insert(
        "blk.1.ffn_up_exps.weight".into(),
        (GgmlType::Q8_0, vec![64, 32, 7]),
    );
    assert!(matches!(
        ModelConfig::from_source(&s),
        Err(ConfigError::TensorShape { name, .. }) if name == "blk.1.ffn_up_exps.weight"
    ));

    for (key, value) in [
        ("deepseek2.expert_gating_func", 3),
        ("deepseek2.expert_group_used_count", 5),
        ("deepseek2.leading_dense_block_count", 4),
        ("deepseek2.attention.kv_lora_rank", 0),
        ("deepseek2.attention.key_length", 81),
    ] {
        let mut s = d.clone();
        s.uints.insert(key.into(), value);
        assert_eq!(bad_key(&s), key, "{key} = {value}");
    }
    for key in [
        "deepseek2.attention.kv_lora_rank",
        "deepseek2.expert_shared_count",
        "deepseek2.attention.value_length_mla",
    ] {
        let mut s = d.clone();
        s.uints.remove(key);
        assert_eq!(bad_key(&s), key, "{key} removed");
    }
    // The older kind states the per-head key length: a rope part as wide leaves no rest.
    let mut s = from_file(&RandomMoe::deepseek2(GgmlType::Q8_0, false).build());
    s.uints.insert("deepseek2.rope.dimension_count".into(), 48);
    assert_eq!(bad_key(&s), "deepseek2.rope.dimension_count");
    let mut s = d.clone();
    s.floats
        .insert("deepseek2.expert_weights_scale".into(), -1.0);
    assert_eq!(bad_key(&s), "deepseek2.expert_weights_scale");
    let mut s = d.clone();
    s.strs
        .insert("deepseek2.rope.scaling.type".into(), "longrope".into());
    assert_eq!(bad_key(&s), "deepseek2.rope.scaling.type");
    // A file of the split kind without its split tensors.
    let mut s = d.clone();
    s.tensors.remove("blk.2.attn_k_b.weight");
    assert_eq!(
        ModelConfig::from_source(&s),
        Err(ConfigError::MissingTensor("blk.2.attn_k_b.weight".into()))
    );
    let mut s = d.clone();
    s.tensors
        .insert("blk.1.exp_probs_b.bias".into(), (GgmlType::F32, vec![7]));
    assert!(matches!(
        ModelConfig::from_source(&s),
        Err(ConfigError::TensorShape { name, .. }) if name == "blk.1.exp_probs_b.bias"
    ));
}
