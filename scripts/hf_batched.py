#!/usr/bin/env python3
"""HF transformers greedy decode of B sequences at once (prompts of P tokens, D steps), for
the batched rows beside athena's `bench --batch B`. Prints one JSON line.

usage: hf_batched.py MODEL_DIR B [P] [D] [dtype] [device]
"""
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    path, B = sys.argv[1], int(sys.argv[2])
    P = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    D = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    dt = getattr(torch, sys.argv[5]) if len(sys.argv) > 5 else torch.bfloat16
    dev = sys.argv[6] if len(sys.argv) > 6 else "cuda"
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dt).to(dev).eval()
    V = m.config.vocab_size
    # the same prompts as `athena bench --batch B`
    ids = torch.tensor([[(i * 7919 + b * 104729) % V for i in range(P)] for b in range(B)],
                       device=dev)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        sync(); t0 = time.perf_counter()
        out = m(ids, use_cache=True)
        sync(); tp = time.perf_counter() - t0
        past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        sync(); t0 = time.perf_counter()
        for _ in range(D):
            out = m(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        sync(); td = time.perf_counter() - t0
        # Distinct experts the routers pick in one more (untimed) decode step, per layer.
        try:
            out = m(tok, past_key_values=past, use_cache=True, output_router_logits=True)
            k = m.config.num_experts_per_tok
            distinct = [len(torch.unique(r.topk(k, dim=-1).indices)) for r in out.router_logits]
            distinct = round(sum(distinct) / len(distinct), 1)
        except Exception as e:  # the timing stands without it
            distinct = f"unavailable: {e}"
    print(json.dumps({"engine": f"transformers {transformers.__version__} torch {torch.__version__}",
                      "dtype": str(dt), "device": dev, "batch": B, "prompt_tokens": P,
                      "gen_tokens": D, "prefill_tok_s": round(B * P / tp, 1),
                      "decode_tok_s": round(B * D / td, 2),
                      "distinct_experts_per_layer": distinct,
                      "num_experts": m.config.num_experts}))


if __name__ == "__main__":
    main()
