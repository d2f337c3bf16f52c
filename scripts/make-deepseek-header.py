#!/usr/bin/env python3
"""Writes a header-only GGUF with the tensor names, shapes and types of DeepSeek-R1 671B
quantized to Q8_0: the metadata and tensor infos, no tensor data (a few tens of KiB
instead of 713 GB). The planner needs nothing more: `bench plan -m` on this file answers
"how would this model split over these GPUs?" before anything is downloaded.

Facts used (DeepSeek-R1's published config.json, and llama.cpp's `deepseek2` tensor list
in llama-model.cpp and gguf-py's constants, read for names and shapes):
  61 blocks, the first 3 dense (FFN 18432), 58 MoE blocks of 256 routed experts (FFN 2048,
  stacked per block as 3-D tensors) + 1 shared expert (FFN 2048) + a router; hidden 7168;
  128 heads; MLA with q_lora_rank 1536, kv_lora_rank 512, qk_nope_head_dim 128,
  qk_rope_head_dim 64, v_head_dim 128; vocabulary 129280; untied output. The next-token
  prediction (MTP) block 61 is left out, as llama.cpp's converter leaves it out.
Types as a Q8_0 conversion gives them: every matrix Q8_0, except the router
(`ffn_gate_inp`, kept F32 by both llama.cpp's converter and llama-quantize); 1-D tensors
(norms, the router's bias `exp_probs_b`) F32.

Written with gguf-py's own writer (PyPI `gguf`, version pinned in golden/requirements.txt),
so Strata's reader is checked against a file it did not write.

Usage: python3 scripts/make-deepseek-header.py [OUT]
(default golden/data/deepseek-r1-671b-q8_0.header.gguf)
"""

import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

N_LAYER = 61
N_DENSE = 3
N_EMBD = 7168
N_FF = 18432
N_FF_EXP = 2048
N_EXPERT = 256
N_EXPERT_SHARED = 1
N_EXPERT_USED = 8
N_HEAD = 128
Q_LORA = 1536
KV_LORA = 512
QK_NOPE = 128
QK_ROPE = 64
V_HEAD = 128
N_VOCAB = 129280
ARCH = "deepseek2"


def tensors():
    """(name, ggml dims with the row length first, type) in llama.cpp's order."""
    yield "token_embd.weight", [N_EMBD, N_VOCAB], T.Q8_0
    for i in range(N_LAYER):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", [N_EMBD], T.F32
        yield b + "attn_q_a_norm.weight", [Q_LORA], T.F32
        yield b + "attn_kv_a_norm.weight", [KV_LORA], T.F32
        yield b + "attn_q_a.weight", [N_EMBD, Q_LORA], T.Q8_0
        yield b + "attn_q_b.weight", [Q_LORA, N_HEAD * (QK_NOPE + QK_ROPE)], T.Q8_0
        yield b + "attn_kv_a_mqa.weight", [N_EMBD, KV_LORA + QK_ROPE], T.Q8_0
        yield b + "attn_kv_b.weight", [KV_LORA, N_HEAD * (QK_NOPE + V_HEAD)], T.Q8_0
        yield b + "attn_output.weight", [N_HEAD * V_HEAD, N_EMBD], T.Q8_0
        yield b + "ffn_norm.weight", [N_EMBD], T.F32
        if i < N_DENSE:
            yield b + "ffn_gate.weight", [N_EMBD, N_FF], T.Q8_0
            yield b + "ffn_up.weight", [N_EMBD, N_FF], T.Q8_0
            yield b + "ffn_down.weight", [N_FF, N_EMBD], T.Q8_0
        else:
            yield b + "ffn_gate_inp.weight", [N_EMBD, N_EXPERT], T.F32
            yield b + "exp_probs_b.bias", [N_EXPERT], T.F32
            yield b + "ffn_gate_exps.weight", [N_EMBD, N_FF_EXP, N_EXPERT], T.Q8_0
            yield b + "ffn_up_exps.weight", [N_EMBD, N_FF_EXP, N_EXPERT], T.Q8_0
            yield b + "ffn_down_exps.weight", [N_FF_EXP, N_EMBD, N_EXPERT], T.Q8_0
            shexp = N_FF_EXP * N_EXPERT_SHARED
            yield b + "ffn_gate_shexp.weight", [N_EMBD, shexp], T.Q8_0
            yield b + "ffn_up_shexp.weight", [N_EMBD, shexp], T.Q8_0
            yield b + "ffn_down_shexp.weight", [shexp, N_EMBD], T.Q8_0
    yield "output_norm.weight", [N_EMBD], T.F32
    yield "output.weight", [N_EMBD, N_VOCAB], T.Q8_0


def n_bytes(dims, ty):
    block, size = gguf.GGML_QUANT_SIZES[ty]
    n = 1
    for d in dims:
        n *= d
    assert dims[0] % block == 0
    return n // block * size


def main():
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "golden/data/deepseek-r1-671b-q8_0.header.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(out, ARCH)
    w.add_name("DeepSeek-R1 671B Q8_0 (tensor shapes only, no data)")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_block_count(N_LAYER)
    w.add_context_length(163840)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_expert_used_count(N_EXPERT_USED)
    w.add_leading_dense_block_count(N_DENSE)
    w.add_vocab_size(N_VOCAB)
    w.add_q_lora_rank(Q_LORA)
    w.add_kv_lora_rank(KV_LORA)
    w.add_key_length(QK_NOPE + QK_ROPE)
    w.add_value_length(V_HEAD)
    w.add_expert_feed_forward_length(N_FF_EXP)
    w.add_expert_count(N_EXPERT)
    w.add_expert_shared_count(N_EXPERT_SHARED)
    w.add_expert_weights_scale(2.5)
    w.add_expert_weights_norm(True)
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_rope_dimension_count(QK_ROPE)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(40.0)
    w.add_rope_scaling_orig_ctx_len(4096)
    w.add_rope_scaling_yarn_log_mul(0.1)

    total = 0
    for name, dims, ty in tensors():
        nb = n_bytes(dims, ty)
        total += nb
        # gguf-py takes numpy order (row length last) and reverses it when writing.
        w.add_tensor_info(name, list(reversed(dims)), np.float32, nb, raw_dtype=ty)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    print(f"{out}: {out.stat().st_size} bytes of header; the tensors would take "
          f"{total} bytes ({total / 1e9:.1f} GB, {total / 2**30:.1f} GiB)")


if __name__ == "__main__":
    main()
