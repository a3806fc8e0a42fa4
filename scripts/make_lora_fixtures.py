#!/usr/bin/env python3
"""Generate the LoRA adapter fixtures under fixtures/lora/.

How to run (from the repository root, after scripts/make_fixtures.py has written
fixtures/models/base):

    python -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt
    .venv/bin/python scripts/make_lora_fixtures.py

The script rewrites fixtures/lora/ from scratch. It is deterministic: every random
draw is seeded, torch runs on one CPU thread and the script re-executes itself with
PYTHONHASHSEED=0 (PEFT keeps target lists in Python sets, whose order would otherwise
change from run to run).

Adapters on fixtures/models/base (hidden 64, 4 heads, 8 experts of width 32, top-2,
2 layers, vocab 512):

* peft_attn        PEFT LoRA on q/k/v/o_proj, r=4, alpha=8.
* peft_all         PEFT LoRA on attention, the router and the experts, with rslora,
                   rank_pattern/alpha_pattern entries and layers_to_transform=[1].
                   transformers 5 stores the experts fused (`mlp.experts.gate_up_proj`
                   [E, 2I, H], `mlp.experts.down_proj` [E, H, I]) and the router as a
                   custom module, so PEFT 0.21 rewrites the targets `gate`, `gate_proj`,
                   `up_proj`, `down_proj` into `target_parameters` and wraps the 3D
                   parameters (see fixtures/lora/README.md for the key layout).
* peft_v4_experts  The per-expert layout PEFT wrote for OLMoE under transformers 4
                   (`mlp.experts.<e>.gate_proj.lora_A.weight`, ...), with a config saved
                   by PEFT; PEFT 0.21 loads it onto the fused transformers-5 model by its
                   own weight conversion, and the references come from that.
* mlx_attn         mlx-lm LoRA (mlx_lm.tuner.utils.linear_to_lora_layers) on the
                   attention projections of both layers.
* mlx_all          mlx-lm LoRA with mlx-lm's default keys (every linear and switch
                   layer: attention, router, switch_mlp experts) on the last layer only.

LoRA B starts at zero in both libraries; here it is drawn at random so that every
adapter changes the logits. Each directory holds the adapter as its library writes it
and reference.safetensors: `ids_a` (fixtures/models/base/reference.json), the logits of
the adapted model on ids_a before (`logits_unmerged`) and after merging
(`logits_merged`), and `delta.<module>` = merged weight - base weight [out, in] for a few
modules, in the per-expert HF orientation (gate/up [I, H], down [H, I]).
"""

from __future__ import annotations

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import peft
import safetensors.torch
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import OlmoeForCausalLM

ROOT = Path(__file__).resolve().parent.parent
BASE_REL = "fixtures/models/base"
OUT = ROOT / "fixtures" / "lora"

# The k-th and (k+1)-th router probabilities must stay this far apart on every token,
# so that an implementation's rounding cannot change which experts are chosen.
ROUTER_GAP_MIN = 1e-3
# LoRA B is drawn at random and multiplied by this, so the adapters move the logits
# clearly without swamping the base model.
B_SCALE = 0.1

warnings.filterwarnings("ignore")


# ---------------------------------------------------------------------------
# Shared
# ---------------------------------------------------------------------------


def load_base() -> OlmoeForCausalLM:
    model, info = OlmoeForCausalLM.from_pretrained(
        BASE_REL,
        dtype=torch.float32,
        attn_implementation="eager",
        experts_implementation="eager",
        output_loading_info=True,
    )
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"loading problems {bad}"
    model.eval()
    return model


def ids_a() -> list[int]:
    return json.loads((ROOT / BASE_REL / "reference.json").read_text())["ids_a"]


class RouterGap:
    """Smallest gap between the k-th and (k+1)-th router probability over all calls."""

    def __init__(self, model: torch.nn.Module, top_k: int):
        self.top_k = top_k
        self.gap = math.inf
        self.handles = [
            m.register_forward_hook(self._hook) for n, m in model.named_modules() if n.endswith("mlp.gate")
        ]
        assert self.handles, "no router found"

    def _hook(self, _mod, _inp, out):
        probs = torch.softmax(out[0].detach().float(), dim=-1)
        s = torch.sort(probs, dim=-1, descending=True).values
        self.gap = min(self.gap, (s[:, self.top_k - 1] - s[:, self.top_k]).min().item())

    def remove(self):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def torch_logits(model, ids: list[int], top_k: int) -> tuple[torch.Tensor, float]:
    rec = RouterGap(model, top_k)
    logits = model(torch.tensor([ids])).logits[0].float().clone()
    rec.remove()
    return logits, rec.gap


def hf_weight(model: OlmoeForCausalLM, name: str) -> torch.Tensor:
    """The [out, in] weight of a per-expert HF module name on a (merged) v5 model."""
    parts = name.split(".")
    layer = model.model.layers[int(parts[2])]
    if parts[3] == "self_attn":
        return getattr(layer.self_attn, parts[4]).weight.detach().clone()
    if parts[4] == "gate":
        return layer.mlp.gate.weight.detach().clone()
    expert, proj = int(parts[5]), parts[6]
    experts = layer.mlp.experts
    inter = experts.down_proj.shape[-1]
    if proj == "gate_proj":
        return experts.gate_up_proj[expert, :inter].detach().clone()
    if proj == "up_proj":
        return experts.gate_up_proj[expert, inter:].detach().clone()
    return experts.down_proj[expert].detach().clone()


def randomise_lora_b(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(B_SCALE)


def finish(out: Path, tensors: dict[str, torch.Tensor], facts: dict) -> dict:
    diff = (tensors["logits_unmerged"] - tensors["logits_merged"]).abs().max().item()
    assert diff < 1e-4, f"{out.name}: merged and unmerged logits differ by {diff}"
    facts["max_abs_unmerged_vs_merged"] = float(f"{diff:.3g}")
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(out / "reference.safetensors")
    )
    (out / "README.md").unlink(missing_ok=True)
    return facts


def peft_fixture(name: str, seed: int, config: LoraConfig, deltas: list[str]) -> dict:
    """get_peft_model + save_pretrained, then references from the PEFT model."""
    out = OUT / name
    ids = ids_a()
    base = load_base()
    top_k = base.config.num_experts_per_tok
    base_logits, _ = torch_logits(base, ids, top_k)
    base_w = {d: hf_weight(base, d) for d in deltas}
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    randomise_lora_b(model)
    model.eval()
    model.save_pretrained(str(out))
    unmerged, gap_u = torch_logits(model, ids, top_k)
    merged_model = model.merge_and_unload()
    merged, gap_m = torch_logits(merged_model, ids, top_k)
    tensors = {
        "ids_a": torch.tensor(ids, dtype=torch.int64),
        "logits_unmerged": unmerged,
        "logits_merged": merged,
    }
    for d in deltas:
        tensors[f"delta.{d}"] = hf_weight(merged_model, d) - base_w[d]
        assert tensors[f"delta.{d}"].abs().max() > 1e-4, f"{name}: {d} is not adapted"
    moved = (unmerged - base_logits).abs().max().item()
    assert moved > 1e-2, f"{name}: the adapter barely changes the logits ({moved})"
    gap = min(gap_u, gap_m)
    assert gap > ROUTER_GAP_MIN, f"{name}: router near-tie {gap}"
    return finish(out, tensors, {"min_router_prob_gap": round(gap, 6), "max_abs_logit_change": round(moved, 4)})


# ---------------------------------------------------------------------------
# PEFT, written by transformers 5 + PEFT 0.21
# ---------------------------------------------------------------------------


def make_peft_attn() -> dict:
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,
    )
    return peft_fixture(
        "peft_attn",
        seed=2001,
        config=config,
        deltas=["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"],
    )


def make_peft_all() -> dict:
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate", "gate_proj", "up_proj", "down_proj"],
        layers_to_transform=[1],
        rank_pattern={"v_proj": 2, r"layers\.0\.mlp\.experts\.down_proj": 2},
        alpha_pattern={"o_proj": 16, r"gate\.weight": 2},
        init_lora_weights=False,
    )
    facts = peft_fixture(
        "peft_all",
        seed=2002,
        config=config,
        deltas=[
            "model.layers.1.self_attn.v_proj",
            "model.layers.1.self_attn.o_proj",
            "model.layers.0.mlp.gate",
            "model.layers.0.mlp.experts.5.gate_proj",
            "model.layers.0.mlp.experts.5.up_proj",
            "model.layers.0.mlp.experts.5.down_proj",
            "model.layers.1.mlp.experts.2.down_proj",
        ],
    )
    saved = json.loads((OUT / "peft_all" / "adapter_config.json").read_text())
    assert sorted(saved["target_parameters"]) == ["down_proj", "gate.weight", "gate_up_proj"], saved
    return facts


# ---------------------------------------------------------------------------
# PEFT, per-expert layout of transformers 4, loaded by PEFT 0.21's conversion
# ---------------------------------------------------------------------------


def make_peft_v4_experts() -> dict:
    name = "peft_v4_experts"
    out = OUT / name
    out.mkdir(parents=True)
    r, alpha = 4, 8
    base = load_base()
    cfg = base.config
    hidden, inter, n_exp = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts
    gen = torch.Generator().manual_seed(2003)

    def pair(prefix: str, out_dim: int, in_dim: int, sd: dict) -> None:
        bound_a, bound_b = 1 / math.sqrt(in_dim), 1 / math.sqrt(r)
        a = (torch.rand(r, in_dim, generator=gen) * 2 - 1) * bound_a
        b = (torch.rand(out_dim, r, generator=gen) * 2 - 1) * bound_b * B_SCALE
        sd[f"base_model.model.{prefix}.lora_A.weight"] = a
        sd[f"base_model.model.{prefix}.lora_B.weight"] = b

    sd: dict[str, torch.Tensor] = {}
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}"
        pair(f"{p}.self_attn.q_proj", cfg.num_attention_heads * (hidden // cfg.num_attention_heads), hidden, sd)
        pair(f"{p}.mlp.gate", n_exp, hidden, sd)
        for e in range(n_exp):
            pair(f"{p}.mlp.experts.{e}.gate_proj", inter, hidden, sd)
            pair(f"{p}.mlp.experts.{e}.up_proj", inter, hidden, sd)
            pair(f"{p}.mlp.experts.{e}.down_proj", hidden, inter, sd)
    safetensors.torch.save_file(sd, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=["q_proj", "gate", "gate_proj", "up_proj", "down_proj"],
        alpha_pattern={"q_proj": 16},
        base_model_name_or_path=BASE_REL,
    ).save_pretrained(str(out))

    ids = ids_a()
    top_k = cfg.num_experts_per_tok
    deltas = [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.gate",
        "model.layers.0.mlp.experts.3.gate_proj",
        "model.layers.0.mlp.experts.3.up_proj",
        "model.layers.0.mlp.experts.3.down_proj",
    ]
    base_w = {d: hf_weight(base, d) for d in deltas}
    base_logits, _ = torch_logits(base, ids, top_k)
    model = PeftModel.from_pretrained(base, str(out))
    model.eval()
    unmerged, gap_u = torch_logits(model, ids, top_k)
    merged_model = model.merge_and_unload()
    merged, gap_m = torch_logits(merged_model, ids, top_k)
    tensors = {
        "ids_a": torch.tensor(ids, dtype=torch.int64),
        "logits_unmerged": unmerged,
        "logits_merged": merged,
    }
    for d in deltas:
        got = hf_weight(merged_model, d) - base_w[d]
        # PEFT's conversion must reproduce scale * B @ A of the per-expert file.
        scale = (16 if d.endswith("q_proj") else alpha) / r
        want = scale * sd[f"base_model.model.{d}.lora_B.weight"] @ sd[f"base_model.model.{d}.lora_A.weight"]
        err = (got - want).abs().max().item()
        assert err < 1e-6, f"{name}: PEFT's conversion of {d} differs by {err}"
        tensors[f"delta.{d}"] = got
    moved = (unmerged - base_logits).abs().max().item()
    assert moved > 1e-2, f"{name}: the adapter barely changes the logits ({moved})"
    gap = min(gap_u, gap_m)
    assert gap > ROUTER_GAP_MIN, f"{name}: router near-tie {gap}"
    return finish(out, tensors, {"min_router_prob_gap": round(gap, 6), "max_abs_logit_change": round(moved, 4)})


# ---------------------------------------------------------------------------
# mlx-lm
# ---------------------------------------------------------------------------


def mlx_fixture(name: str, seed: int, num_layers: int, lora_parameters: dict, deltas: list[str]) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_lm import load
    from mlx_lm.lora import CONFIG_DEFAULTS
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import save_config

    out = OUT / name
    out.mkdir(parents=True)
    ids = ids_a()
    mx.random.seed(seed)
    model, _tok = load(BASE_REL)
    model.freeze()
    linear_to_lora_layers(model, num_layers, lora_parameters)
    rank = lora_parameters["rank"]
    for _n, mod in model.named_modules():
        if "lora_b" in mod:
            bound = 1 / math.sqrt(rank)
            mod.lora_b = mx.random.uniform(-bound, bound, mod.lora_b.shape) * B_SCALE
    weights = dict(tree_flatten(model.trainable_parameters()))
    assert all(k.rsplit(".", 1)[-1] in ("lora_a", "lora_b") for k in weights), sorted(weights)
    mx.save_safetensors(str(out / "adapters.safetensors"), weights, metadata={"format": "mlx"})
    args = {
        **CONFIG_DEFAULTS,
        "model": BASE_REL,
        "train": True,
        "fine_tune_type": "lora",
        "seed": seed,
        "num_layers": num_layers,
        "lora_parameters": lora_parameters,
        "adapter_path": f"fixtures/lora/{name}",
    }
    save_config(args, out / "adapter_config.json")

    def to_torch(a) -> torch.Tensor:
        return torch.from_numpy(np.array(a.astype(mx.float32)))

    def weight_of(d: str) -> torch.Tensor:
        parts = d.split(".")
        layer = model.model.layers[int(parts[2])]
        if parts[3] == "self_attn":
            m = getattr(layer.self_attn, parts[4])
            return to_torch((m.linear if hasattr(m, "linear") else m).weight)
        if parts[4] == "gate":
            m = layer.mlp.gate
            return to_torch((m.linear if hasattr(m, "linear") else m).weight)
        m = getattr(layer.mlp.switch_mlp, parts[6])
        return to_torch((m.linear if hasattr(m, "linear") else m).weight[int(parts[5])])

    base_w = {d: weight_of(d) for d in deltas}
    unmerged = to_torch(model(mx.array([ids]))[0])
    fused = [(n, m.fuse()) for n, m in model.named_modules() if hasattr(m, "fuse")]
    model.update_modules(tree_unflatten(fused))
    merged = to_torch(model(mx.array([ids]))[0])
    tensors = {
        "ids_a": torch.tensor(ids, dtype=torch.int64),
        "logits_unmerged": unmerged,
        "logits_merged": merged,
    }
    for d in deltas:
        tensors[f"delta.{d}"] = weight_of(d) - base_w[d]
        assert tensors[f"delta.{d}"].abs().max() > 1e-4, f"{name}: {d} is not adapted"

    # Cross-check in torch: the fused mlx weights in transformers' OLMoE give the same
    # logits, and the routing has no near-ties.
    hf = load_base()
    top_k = hf.config.num_experts_per_tok
    base_logits, _ = torch_logits(hf, ids, top_k)
    flat = dict(tree_flatten(model.parameters()))
    with torch.no_grad():
        for key, val in flat.items():
            parts = key.split(".")
            if len(parts) < 4 or parts[1] != "layers":
                continue
            layer = hf.model.layers[int(parts[2])]
            if "switch_mlp" in key:
                experts = layer.mlp.experts
                inter = experts.down_proj.shape[-1]
                proj = parts[5]
                if proj == "gate_proj":
                    experts.gate_up_proj[:, :inter] = to_torch(val)
                elif proj == "up_proj":
                    experts.gate_up_proj[:, inter:] = to_torch(val)
                else:
                    experts.down_proj.copy_(to_torch(val))
            else:
                hf.get_parameter(key).copy_(to_torch(val))
    torch_merged, gap = torch_logits(hf, ids, top_k)
    cross = (torch_merged - merged).abs().max().item()
    assert cross < 1e-4, f"{name}: mlx-lm and transformers differ by {cross}"
    moved = (unmerged - base_logits).abs().max().item()
    assert moved > 1e-2, f"{name}: the adapter barely changes the logits ({moved})"
    assert gap > ROUTER_GAP_MIN, f"{name}: router near-tie {gap}"
    facts = {
        "min_router_prob_gap": round(gap, 6),
        "max_abs_logit_change": round(moved, 4),
        "max_abs_mlx_vs_transformers": float(f"{cross:.3g}"),
    }
    return finish(out, tensors, facts)


def make_mlx_attn() -> dict:
    return mlx_fixture(
        "mlx_attn",
        seed=2004,
        num_layers=2,
        lora_parameters={
            "rank": 4,
            "dropout": 0.0,
            "scale": 10.0,
            "keys": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"],
        },
        deltas=["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.o_proj"],
    )


def make_mlx_all() -> dict:
    return mlx_fixture(
        "mlx_all",
        seed=2005,
        num_layers=1,
        lora_parameters={"rank": 2, "dropout": 0.0, "scale": 5.0},
        deltas=[
            "model.layers.1.self_attn.k_proj",
            "model.layers.1.mlp.gate",
            "model.layers.1.mlp.experts.2.gate_proj",
            "model.layers.1.mlp.experts.2.up_proj",
            "model.layers.1.mlp.experts.2.down_proj",
        ],
    )


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------

README = """# LoRA adapter fixtures

Generated by `scripts/make_lora_fixtures.py` from `fixtures/models/base` (package
versions pinned in `scripts/requirements-fixtures.txt`); do not edit by hand.

Each directory holds an adapter as PEFT or mlx-lm writes it and
`reference.safetensors`: `ids_a` [11] i64, `logits_unmerged` [11, 512] f32 (the
library's adapted model), `logits_merged` [11, 512] f32 (after merging the adapter
into the weights) and `delta.<module>` [out, in] f32 = merged weight - base weight,
in per-expert HF orientation (gate/up [I, H], down [H, I]). LoRA B is random (scaled
by {b_scale}) so that every adapter changes the logits.

## Key layouts

PEFT, attention and router (both transformers versions), A [r, in], B [out, r],
dW = scale * B @ A:

    base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight
    base_model.model.model.layers.L.mlp.gate.lora_A.weight          (router)

PEFT 0.21 on transformers 5 (experts fused in memory). The targets `gate`,
`gate_proj`, `up_proj`, `down_proj` are rewritten into `target_parameters`
["gate.weight", "gate_up_proj", "down_proj"], with rank_pattern and alpha_pattern
`.*\\.gate_up_proj` = 2r and 2 alpha. Each 3D parameter [E, out, in] gets one
`lora.ParamWrapper`; wrappers on the same module nest, the later one outside, so
with both expert parameters targeted:

    base_model.model.model.layers.L.mlp.experts.lora_A.weight             down_proj:    [E*r, I]
    base_model.model.model.layers.L.mlp.experts.lora_B.weight             down_proj:    [H, r*E]
    base_model.model.model.layers.L.mlp.experts.base_layer.lora_A.weight  gate_up_proj: [E*r, H]
    base_model.model.model.layers.L.mlp.experts.base_layer.lora_B.weight  gate_up_proj: [2I, r*E]

A's rows are expert-major (row e*r + k), B's columns rank-major (column k*E + e):
dW_e = scale * B[:, k*E + e] @ A[e*r + k, :]; for gate_up_proj rows 0..I of dW_e
are gate_proj, rows I..2I up_proj. `layers_to_transform` does not apply to
`target_parameters` (peft_all adapts attention in layer 1 only, router and experts
in both layers).

PEFT with transformers 4 (per-expert modules):

    base_model.model.model.layers.L.mlp.experts.E.gate_proj.lora_A.weight  [r, H]

PEFT 0.21 loads this layout onto transformers 5 by stacking the experts (gate and up
block-diagonally, rank 2r, alpha 2 alpha); with use_rslora that conversion scales
gate/up by sqrt(2) more than the adapter was trained with (2 alpha / sqrt(2r)).

mlx-lm: `adapters.safetensors`, `model.layers.L.self_attn.q_proj.lora_a` [in, r],
`.lora_b` [r, out], dW = scale * (a @ b)^T; router `model.layers.L.mlp.gate.lora_a`;
experts `model.layers.L.mlp.switch_mlp.gate_proj.lora_a` [E, r, in] and `.lora_b`
[E, out, r], dW_e = scale * b[e] @ a[e]. `num_layers` counts from the last layer.

## Fixtures
"""

DESCRIPTIONS = {
    "peft_attn": "PEFT (get_peft_model, save_pretrained): r=4, alpha=8, q/k/v/o_proj of both layers; scale 2.",
    "peft_all": (
        "PEFT: attention (layers_to_transform [1]), router and experts, use_rslora, r=4, alpha=8, "
        "rank_pattern {v_proj: 2, layers\\.0\\.mlp\\.experts\\.down_proj: 2}, alpha_pattern {o_proj: 16, "
        "gate\\.weight: 2}, plus PEFT's own `.*\\.gate_up_proj` entries (r 8, alpha 16). 54 per-expert deltas: "
        "4 attention (layer 1), 2 routers, 48 experts."
    ),
    "peft_v4_experts": (
        "Per-expert transformers-4 layout: q_proj (alpha_pattern 16), router and experts gate/up/down of both "
        "layers, r=4, alpha=8 (52 deltas); references from PEFT 0.21 loading it with its weight conversion."
    ),
    "mlx_attn": "mlx-lm: q/k/v/o_proj of both layers (num_layers 2), rank 4, scale 10.",
    "mlx_all": "mlx-lm default keys (attention, router, switch_mlp experts) on the last layer (num_layers 1), rank 2, scale 5; 29 deltas.",
}


def main() -> None:
    os.chdir(ROOT)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    import mlx.core as mx
    import mlx_lm

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "mlx": mx.__version__,
        "mlx-lm": mlx_lm.__version__,
    }
    facts = {}
    for name, make in (
        ("peft_attn", make_peft_attn),
        ("peft_all", make_peft_all),
        ("peft_v4_experts", make_peft_v4_experts),
        ("mlx_attn", make_mlx_attn),
        ("mlx_all", make_mlx_all),
    ):
        facts[name] = make()
        print(f"{name}: ok {json.dumps(facts[name])}")
    parts = [README.replace("{b_scale}", str(B_SCALE))]
    for name, desc in DESCRIPTIONS.items():
        parts.append(f"\n### `{name}`\n\n{desc}\nChecks: `{json.dumps(facts[name], sort_keys=True)}`\n")
    parts.append(f"\nVersions: `{json.dumps(versions, sort_keys=True)}`\n")
    (OUT / "README.md").write_text("".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
