#!/usr/bin/env python3
"""Write a random-weight OLMoE checkpoint in the Hugging Face hub layout (config.json, one
safetensors shard per layer, per-expert tensor names) with torch alone, on CPU or a GPU.
Real shapes, random values: for speed and memory measurements, not text.

usage: make_random_olmoe.py OUT_DIR [--preset full|layers4|tiny] [--dtype bfloat16|float32]
                            [--seed N] [--device cpu|cuda]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file

PRESETS = {
    # allenai/OLMoE-1B-7B-0924 shapes
    "full": dict(hidden_size=2048, intermediate_size=1024, num_hidden_layers=16,
                 num_attention_heads=16, num_key_value_heads=16, num_experts=64,
                 num_experts_per_tok=8, vocab_size=50304, max_position_embeddings=4096),
    "layers4": dict(hidden_size=2048, intermediate_size=1024, num_hidden_layers=4,
                    num_attention_heads=16, num_key_value_heads=16, num_experts=64,
                    num_experts_per_tok=8, vocab_size=50304, max_position_embeddings=4096),
    "tiny": dict(hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, num_experts=8,
                 num_experts_per_tok=2, vocab_size=512, max_position_embeddings=256),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--preset", default="tiny", choices=PRESETS)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    cfg = dict(architectures=["OlmoeForCausalLM"], model_type="olmoe", hidden_act="silu",
               rms_norm_eps=1e-5, rope_theta=10000.0, attention_bias=False, clip_qkv=None,
               norm_topk_prob=False, tie_word_embeddings=False, initializer_range=0.02,
               pad_token_id=1, bos_token_id=None, eos_token_id=50279, torch_dtype=a.dtype,
               output_router_logits=False, router_aux_loss_coef=0.01)
    cfg.update(PRESETS[a.preset])
    dt = getattr(torch, a.dtype)
    g = torch.Generator(device=a.device).manual_seed(a.seed)
    std = cfg["initializer_range"]

    def rnd(*shape, scale=1.0):
        t = torch.randn(shape, generator=g, device=a.device) * (std * scale)
        return t.to(dt).cpu().contiguous()

    def ones(n):
        t = 1.0 + 0.1 * torch.randn((n,), generator=g, device=a.device)
        return t.to(dt).cpu().contiguous()

    H, I, E = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_experts"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = H // nh
    os.makedirs(a.out, exist_ok=True)
    weight_map = {}

    def shard(name, w):
        save_file(w, os.path.join(a.out, name), metadata={"format": "pt"})
        weight_map.update({k: name for k in w})

    head = {"model.embed_tokens.weight": rnd(cfg["vocab_size"], H),
            "model.norm.weight": ones(H),
            "lm_head.weight": rnd(cfg["vocab_size"], H)}
    shard("model-embed.safetensors", head)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w = {p + "input_layernorm.weight": ones(H),
             p + "post_attention_layernorm.weight": ones(H),
             p + "self_attn.q_proj.weight": rnd(nh * hd, H),
             p + "self_attn.k_proj.weight": rnd(nkv * hd, H),
             p + "self_attn.v_proj.weight": rnd(nkv * hd, H),
             p + "self_attn.o_proj.weight": rnd(H, nh * hd),
             p + "self_attn.q_norm.weight": ones(nh * hd),
             p + "self_attn.k_norm.weight": ones(nkv * hd),
             # a wider router spreads the tokens over the experts as a trained one does
             p + "mlp.gate.weight": rnd(E, H, scale=10.0)}
        for e in range(E):
            q = f"{p}mlp.experts.{e}."
            w[q + "gate_proj.weight"] = rnd(I, H)
            w[q + "up_proj.weight"] = rnd(I, H)
            w[q + "down_proj.weight"] = rnd(H, I)
        shard(f"model-{l:05d}.safetensors", w)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


if __name__ == "__main__":
    main()
