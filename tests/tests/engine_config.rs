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
