#!/usr/bin/env python3
"""Write a random-weight OLMoE checkpoint already quantized, in mlx-lm's layout (config.json
with `quantization`, experts stacked as `switch_mlp`, affine `weight`/`scales`/`biases`), one
layer at a time, so full OLMoE-1B-7B shapes never need the 14 GB bf16 checkpoint on disk or
in memory. Weights are drawn as `../shared/anchors/make_olmoe.py` draws them (normal, std
0.02) and quantized with `mx.quantize`; good for speed and memory figures, not for text.

usage: make_olmoe_quantized.py OUT_DIR [--layers 16] [--bits 4] [--group-size 64] [--seed 0]
"""
import argparse
import json
import os

import mlx.core as mx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    H, I, E, V = 2048, 1024, 64, 50304
    q = {"group_size": a.group_size, "bits": a.bits, "mode": "affine"}
    cfg = dict(architectures=["OlmoeForCausalLM"], model_type="olmoe", hidden_act="silu",
               hidden_size=H, intermediate_size=I, num_hidden_layers=a.layers,
               num_attention_heads=16, num_key_value_heads=16, num_experts=E,
               num_experts_per_tok=8, vocab_size=V, max_position_embeddings=4096,
               rms_norm_eps=1e-5, rope_theta=10000.0, attention_bias=False, clip_qkv=None,
               norm_topk_prob=False, tie_word_embeddings=False, initializer_range=0.02,
               pad_token_id=1, bos_token_id=None, eos_token_id=50279, torch_dtype="bfloat16",
               quantization=q, quantization_config=q)
    mx.random.seed(a.seed)
    bf = mx.bfloat16
    rnd = lambda *s: (mx.random.normal(s) * 0.02).astype(bf)
    ones = lambda n: (1.0 + 0.1 * mx.random.normal((n,))).astype(bf)

    def quantized(w, name, out):
        wq, s, b = mx.quantize(w, group_size=a.group_size, bits=a.bits)
        out[name + ".weight"], out[name + ".scales"], out[name + ".biases"] = wq, s, b

    os.makedirs(a.out, exist_ok=True)
    index = {}

    def save(tensors, file):
        mx.eval(tensors)
        mx.save_safetensors(os.path.join(a.out, file), tensors, metadata={"format": "mlx"})
        index.update({k: file for k in tensors})

    top = {"model.norm.weight": ones(H)}
    quantized(rnd(V, H), "model.embed_tokens", top)
    quantized(rnd(V, H), "lm_head", top)
    save(top, "model-top.safetensors")
    for l in range(a.layers):
        p = f"model.layers.{l}."
        t = {p + "input_layernorm.weight": ones(H), p + "post_attention_layernorm.weight": ones(H),
             p + "self_attn.q_norm.weight": ones(H), p + "self_attn.k_norm.weight": ones(H)}
        for n in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            quantized(rnd(H, H), p + "self_attn." + n, t)
        quantized(rnd(E, H), p + "mlp.gate", t)
        quantized(rnd(E, I, H), p + "mlp.switch_mlp.gate_proj", t)
        quantized(rnd(E, I, H), p + "mlp.switch_mlp.up_proj", t)
        quantized(rnd(E, H, I), p + "mlp.switch_mlp.down_proj", t)
        save(t, f"model-layer{l:02d}.safetensors")
        print(f"layer {l + 1}/{a.layers}", flush=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": index}, f, indent=2)


if __name__ == "__main__":
    main()
