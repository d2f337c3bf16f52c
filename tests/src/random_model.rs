//! Small random-weight models written with the GGUF writer, for tests that need a whole
//! model but not a meaningful one (splits, allocation, placement).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_engine::config::{Arch, Mla, ModelConfig, Moe};
use strata_engine::gguf::{GgufFile, GgufWriter, Value};
use strata_kernels_cpu::ops::Gating;
use strata_kernels_cpu::{quantize, GgmlType};

/// The shape and formats of a random model.
#[derive(Debug, Clone)]
pub struct RandomModel {
    /// `llama`, `qwen2` (q/k/v biases) or `qwen3` (q/k norms).
    pub arch: &'static str,
    pub n_layer: usize,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_vocab: u64,
    /// The format of block i's matrices is `formats[i % formats.len()]` (K-quants need
    /// n_embd and n_ff multiples of 256).
    pub formats: Vec<GgmlType>,
    /// Format of the token embedding (and of the output layer).
    pub embd_format: GgmlType,
    /// A separate `output.weight` (else tied to the embedding).
    pub separate_output: bool,
    pub seed: u64,
}

impl RandomModel {
    /// A llama with `n_layer` blocks of n_embd 64, 4 heads of 16 (2 KV heads), n_ff 96,
    /// vocabulary 96.
    pub fn small(n_layer: usize, formats: &[GgmlType]) -> RandomModel {
        RandomModel {
            arch: "llama",
            n_layer,
            n_embd: 64,
            n_ff: 96,
            n_head: 4,
            n_head_kv: 2,
            n_vocab: 96,
            formats: formats.to_vec(),
            embd_format: GgmlType::Q8_0,
            separate_output: false,
            seed: 5,
        }
    }

    /// The model as an in-memory GGUF file.
    pub fn build(&self) -> GgufFile {
        let (e, ff, nh, nkv, nv) = (
            self.n_embd,
            self.n_ff,
            self.n_head,
            self.n_head_kv,
            self.n_vocab,
        );
        let hd = e / nh;
        let arch = self.arch;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", Value::from(arch)).unwrap();
        for (k, v) in [
            ("block_count", self.n_layer as u32),
            ("embedding_length", e as u32),
            ("feed_forward_length", ff as u32),
            ("attention.head_count", nh as u32),
            ("attention.head_count_kv", nkv as u32),
            ("context_length", 256),
        ] {
            w.add_kv(format!("{arch}.{k}"), Value::U32(v)).unwrap();
        }
        w.add_kv(
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        )
        .unwrap();
        w.add_kv(format!("{arch}.rope.freq_base"), Value::F32(10000.0))
            .unwrap();
        let mut mat =
            |w: &mut GgufWriter, name: String, ty: GgmlType, cols: u64, rows: u64, scale: f32| {
                let x: Vec<f32> = (0..cols * rows)
                    .map(|_| rng.random_range(-scale..scale))
                    .collect();
                let mut bytes =
                    vec![0u8; ty.bytes_for(cols * rows).expect("whole blocks") as usize];
                quantize(ty, &x, &mut bytes).expect("quantizable format");
                w.add_tensor(name, ty, &[cols, rows], bytes).unwrap();
            };
        let vec_f32 = |w: &mut GgufWriter, name: String, n: u64, around: f32| {
            let x: Vec<u8> = (0..n)
                .flat_map(|i| (around + 0.01 * (i % 7) as f32).to_le_bytes())
                .collect();
            w.add_tensor(name, GgmlType::F32, &[n], x).unwrap();
        };
        mat(
            &mut w,
            "token_embd.weight".into(),
            self.embd_format,
            e,
            nv,
            1.0,
        );
        vec_f32(&mut w, "output_norm.weight".into(), e, 1.0);
        if self.separate_output {
            mat(&mut w, "output.weight".into(), self.embd_format, e, nv, 0.2);
        }
        for i in 0..self.n_layer {
            let ty = self.formats[i % self.formats.len()];
            let b = |s: &str| format!("blk.{i}.{s}");
            vec_f32(&mut w, b("attn_norm.weight"), e, 1.0);
            mat(&mut w, b("attn_q.weight"), ty, e, nh * hd, 0.3);
            mat(&mut w, b("attn_k.weight"), ty, e, nkv * hd, 0.3);
            mat(&mut w, b("attn_v.weight"), ty, e, nkv * hd, 0.3);
            mat(&mut w, b("attn_output.weight"), ty, nh * hd, e, 0.2);
            if arch == "qwen2" {
                vec_f32(&mut w, b("attn_q.bias"), nh * hd, 0.1);
                vec_f32(&mut w, b("attn_k.bias"), nkv * hd, -0.1);
                vec_f32(&mut w, b("attn_v.bias"), nkv * hd, 0.05);
            }
            if arch == "qwen3" {
                vec_f32(&mut w, b("attn_q_norm.weight"), hd, 1.0);
                vec_f32(&mut w, b("attn_k_norm.weight"), hd, 0.9);
            }
            vec_f32(&mut w, b("ffn_norm.weight"), e, 1.0);
            mat(&mut w, b("ffn_gate.weight"), ty, e, ff, 0.3);
            mat(&mut w, b("ffn_up.weight"), ty, e, ff, 0.3);
            mat(&mut w, b("ffn_down.weight"), ty, ff, e, 0.2);
        }
        GgufFile::from_bytes(w.to_bytes()).expect("the writer's file reads back")
    }
}

/// A small random-weight mixture-of-experts model: `qwen3moe`, or `deepseek2` with latent
/// attention when `mla` is set. Its tensors are the ones the engine's config lists for it
/// (`ModelConfig::tensor_shapes`), so the file and the reader cannot disagree on names.
#[derive(Debug, Clone)]
pub struct RandomMoe {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub n_ff_exp: usize,
    /// deepseek2: shared experts, leading dense blocks and their width.
    pub n_shared: usize,
    pub n_dense_lead: usize,
    pub n_ff: usize,
    pub mla: Option<Mla>,
    /// deepseek2: sigmoid gating with a selection bias, normalised weights, scale 2.5,
    /// expert groups (4, 2); else softmax and llama.cpp's defaults.
    pub v3_routing: bool,
    pub format: GgmlType,
    pub seed: u64,
}

impl RandomMoe {
    /// qwen3moe: 2 blocks, n_embd 64, 4 heads of 16 (2 KV), 8 experts of 32, 2 used.
    pub fn qwen3moe(format: GgmlType) -> RandomMoe {
        RandomMoe {
            n_layer: 2,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
            n_vocab: 96,
            n_expert: 8,
            n_expert_used: 2,
            n_ff_exp: 32,
            n_shared: 0,
            n_dense_lead: 0,
            n_ff: 0,
            mla: None,
            v3_routing: false,
            format,
            seed: 7,
        }
    }

    /// deepseek2: 3 blocks (the first dense), n_embd 64, 4 heads; q through a rank-32
    /// projection, latent 64, nope 32, rope 16, v 32; `split_kv_b` picks the file kind.
    pub fn deepseek2(format: GgmlType, split_kv_b: bool) -> RandomMoe {
        RandomMoe {
            n_layer: 3,
            n_head_kv: 4,
            head_dim: 48,
            n_shared: 1,
            n_dense_lead: 1,
            n_ff: 96,
            mla: Some(Mla {
                q_lora_rank: 32,
                kv_lora_rank: 64,
                qk_nope: 32,
                qk_rope: 16,
                v_head: 32,
                split_kv_b,
            }),
            v3_routing: true,
            seed: 11,
            ..RandomMoe::qwen3moe(format)
        }
    }

    fn config(&self) -> ModelConfig {
        let arch = if self.mla.is_some() {
            Arch::Deepseek2
        } else {
            Arch::Qwen3Moe
        };
        ModelConfig {
            arch,
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_ff: self.n_ff,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
            n_rot: self.mla.map_or(self.head_dim, |m| m.qk_rope),
            rms_eps: 1e-6,
            rope_freq_base: 10000.0,
            rope_freq_scale: 1.0,
            yarn_orig_ctx: None,
            yarn_log_mul: 0.0,
            n_ctx_train: 256,
            n_vocab: self.n_vocab,
            tied_output: true,
            qkv_bias: false,
            qk_norm: arch == Arch::Qwen3Moe,
            moe: Some(Moe {
                n_expert: self.n_expert,
                n_expert_used: self.n_expert_used,
                n_ff_exp: self.n_ff_exp,
                n_shared: self.n_shared,
                n_dense_lead: self.n_dense_lead,
                gating: if self.v3_routing {
                    Gating::Sigmoid
                } else {
                    Gating::Softmax
                },
                norm_weights: true,
                weights_scale: if self.v3_routing { 2.5 } else { 1.0 },
                groups: self.v3_routing.then_some((4, 2)),
            }),
            mla: self.mla,
        }
    }

    /// The model as an in-memory GGUF file.
    pub fn build(&self) -> GgufFile {
        let cfg = self.config();
        let arch = cfg.arch.name();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", Value::from(arch)).unwrap();
        let mut u32s = vec![
            ("block_count", self.n_layer),
            ("embedding_length", self.n_embd),
            ("attention.head_count", self.n_head),
            ("attention.head_count_kv", self.n_head_kv),
            ("context_length", 256),
            ("expert_count", self.n_expert),
            ("expert_used_count", self.n_expert_used),
            ("expert_feed_forward_length", self.n_ff_exp),
        ];
        match &self.mla {
            None => u32s.extend([
                ("attention.key_length", self.head_dim),
                ("attention.value_length", self.head_dim),
            ]),
            Some(m) => {
                u32s.extend([
                    ("feed_forward_length", self.n_ff),
                    ("expert_shared_count", self.n_shared),
                    ("leading_dense_block_count", self.n_dense_lead),
                    ("attention.q_lora_rank", m.q_lora_rank),
                    ("attention.kv_lora_rank", m.kv_lora_rank),
                    ("rope.dimension_count", m.qk_rope),
                    ("expert_gating_func", 2),
                    ("expert_group_count", 4),
                    ("expert_group_used_count", 2),
                ]);
                if m.split_kv_b {
                    u32s.extend([
                        ("attention.key_length", m.kv_lora_rank + m.qk_rope),
                        ("attention.value_length", m.kv_lora_rank),
                        ("attention.key_length_mla", m.qk_nope + m.qk_rope),
                        ("attention.value_length_mla", m.v_head),
                    ]);
                } else {
                    u32s.extend([
                        ("attention.key_length", m.qk_nope + m.qk_rope),
                        ("attention.value_length", m.v_head),
                    ]);
                }
                w.add_kv(format!("{arch}.expert_weights_norm"), Value::Bool(true))
                    .unwrap();
                w.add_kv(format!("{arch}.expert_weights_scale"), Value::F32(2.5))
                    .unwrap();
            }
        }
        for (k, v) in u32s {
            w.add_kv(format!("{arch}.{k}"), Value::U32(v as u32))
                .unwrap();
        }
        w.add_kv(
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        )
        .unwrap();
        w.add_kv(format!("{arch}.rope.freq_base"), Value::F32(10000.0))
            .unwrap();
        let mut tensors = cfg.tensor_shapes();
        for i in 0..self.n_layer {
            tensors.extend(cfg.optional_tensors(i));
        }
        for (name, dims) in tensors {
            let n: u64 = dims.iter().product();
            if dims.len() == 1 {
                // Norms near 1, the selection bias small.
                let around = if name.ends_with(".bias") { 0.0 } else { 1.0 };
                let x: Vec<u8> = (0..n)
                    .flat_map(|_| (around + rng.random_range(-0.1f32..0.1)).to_le_bytes())
                    .collect();
                w.add_tensor(name, GgmlType::F32, &dims, x).unwrap();
                continue;
            }
            // Routers stay F32, as llama.cpp's quantizer leaves them; the embedding Q8_0.
            let ty = if name.contains("ffn_gate_inp") {
                GgmlType::F32
            } else if name == "token_embd.weight" {
                GgmlType::Q8_0
            } else {
                self.format
            };
            let scale = if name == "token_embd.weight" {
                1.0
            } else {
                1.5 / (dims[0] as f32).sqrt()
            };
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
            let mut bytes = vec![0u8; ty.bytes_for(n).expect("whole blocks") as usize];
            quantize(ty, &x, &mut bytes).expect("quantizable format");
            w.add_tensor(name, ty, &dims, bytes).unwrap();
        }
        GgufFile::from_bytes(w.to_bytes()).expect("the writer's file reads back")
    }
}
