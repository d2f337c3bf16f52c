//! Small random-weight models written with the GGUF writer, for tests that need a whole
//! model but not a meaningful one (splits, allocation, placement).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_engine::gguf::{GgufFile, GgufWriter, Value};
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
