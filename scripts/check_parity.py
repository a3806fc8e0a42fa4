#!/usr/bin/env python3
"""Parity on configurations nobody tuned to: draw random OLMoE configurations, build each with
transformers' own OlmoeForCausalLM, save it, run `athena logits` on it and compare with
transformers' logits. Exits non-zero if any max |Δlogit| exceeds 1e-4 (f32).

usage: python scripts/check_parity.py [--count N] [--seed S] [--athena PATH]
needs: scripts/requirements-fixtures.txt; a built athena binary (cargo build --release).
"""
import argparse, json, os, random, subprocess, sys, tempfile

import numpy as np
import torch
from transformers import OlmoeConfig, OlmoeForCausalLM


def random_config(rng):
    heads = rng.choice([2, 4, 6, 8])
    head_dim = rng.choice([8, 16, 32])
    kv = rng.choice([h for h in range(1, heads + 1) if heads % h == 0])
    experts = rng.choice([4, 8, 16])
    rope = {"rope_type": "default", "rope_theta": rng.choice([10000.0, 500000.0, 1e6])}
    if rng.random() < 0.3:
        rope = {"rope_type": "linear", "factor": rng.choice([2.0, 4.0]), "rope_theta": 10000.0}
    return OlmoeConfig(
        hidden_size=heads * head_dim,
        intermediate_size=rng.choice([16, 32, 48]),
        num_hidden_layers=rng.choice([1, 2, 3]),
        num_attention_heads=heads,
        num_key_value_heads=kv,
        num_experts=experts,
        num_experts_per_tok=rng.choice([k for k in (1, 2, 3, 4) if k <= experts]),
        norm_topk_prob=rng.random() < 0.5,
        clip_qkv=rng.choice([None, None, 2.0, 4.0]),
        attention_bias=rng.random() < 0.3,
        tie_word_embeddings=rng.random() < 0.3,
        rms_norm_eps=rng.choice([1e-5, 1e-6]),
        rope_parameters=rope,
        vocab_size=rng.choice([300, 512, 1000]),
        max_position_embeddings=128,
        initializer_range=0.1,
        pad_token_id=1,
        eos_token_id=0,
        bos_token_id=None,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--athena", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "athena"))
    a = ap.parse_args()
    rng = random.Random(a.seed)
    worst = 0.0
    for i in range(a.count):
        cfg = random_config(rng)
        torch.manual_seed(a.seed + i)
        model = OlmoeForCausalLM(cfg).eval()
        dtype = rng.choice([torch.float32, torch.bfloat16, torch.float16])
        ids = [rng.randrange(cfg.vocab_size) for _ in range(rng.randrange(2, 40))]
        with tempfile.TemporaryDirectory() as d:
            model.to(dtype).save_pretrained(d)
            ref = OlmoeForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
            with torch.no_grad():
                want = ref(torch.tensor([ids])).logits[0].numpy()
            out = os.path.join(d, "logits.npy")
            subprocess.run([a.athena, "logits", "--model", d, "--ids", ",".join(map(str, ids)), "--output", out],
                           check=True, capture_output=True)
            got = np.load(out)
        diff = float(np.abs(got - want).max())
        worst = max(worst, diff)
        desc = {k: getattr(cfg, k) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "num_experts",
                                              "num_experts_per_tok", "norm_topk_prob", "clip_qkv", "attention_bias",
                                              "tie_word_embeddings")}
        desc["rope"] = cfg.rope_parameters
        desc["storage"] = str(dtype).removeprefix("torch.")
        print(json.dumps({"case": i, "tokens": len(ids), "max_abs_diff": diff, "config": desc}))
    print(json.dumps({"cases": a.count, "worst_max_abs_diff": worst, "tolerance": 1e-4}))
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
