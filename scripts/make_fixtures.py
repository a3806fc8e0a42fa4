#!/usr/bin/env python3
"""Generate the OLMoE test fixtures under fixtures/.

How to run (from the repository root):

    python -m venv .venv && .venv/bin/pip install -r scripts/requirements-fixtures.txt
    .venv/bin/python scripts/make_fixtures.py

`python scripts/make_fixtures.py` rewrites fixtures/models/ and fixtures/README.md
from scratch. The output is deterministic: every random draw is seeded, torch runs
on one CPU thread, and running the script twice with the pinned package versions
gives byte-identical files.

What it writes:

* A small byte-level BPE tokenizer (GPT-NeoX style: NFC normalizer, ByteLevel
  pre-tokenizer and decoder) trained with the `tokenizers` library on the short
  English corpus below, with the special tokens <|endoftext|> (eos),
  <|padding|> (pad), <|user|>, <|assistant|> and <|system|>, plus a
  tokenizer_config.json carrying an OLMoE-Instruct style chat template.
* Tiny random OlmoeForCausalLM checkpoints built and saved by transformers
  itself, one directory per variant under fixtures/models/<name>/. Together
  the variants cover every OlmoeConfig field that changes the computation and
  every on-disk layout the runtime reads (per-expert, fused, mlx-lm
  switch_mlp, f32/bf16/f16, sharded).
* Per variant a reference.safetensors + reference.json with logits, final
  hidden states, greedy continuations, tokenizer encodings and rendered chat
  prompts computed by transformers (and cross-checked with mlx-lm).

The script asserts the properties the tests rely on: no near-ties in expert
routing (gap between the k-th and (k+1)-th router probability > 1e-3 on every
token of every reference input), a clear argmax at every greedy step, clip_qkv
actually clamping, linear RoPE scaling actually applied, and the fused and mlx
layouts reproducing the per-expert checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np
import safetensors
import safetensors.torch
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, GenerationConfig, OlmoeConfig, OlmoeForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MODELS = FIXTURES / "models"

# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN, "<|user|>", "<|assistant|>", "<|system|>"]
TOKENIZER_VOCAB = 448  # 5 special + 256 byte alphabet + merges
MODEL_VOCAB = 512  # padded model vocabulary, >= TOKENIZER_VOCAB
MAX_POSITIONS = 256

CORPUS = [
    "Memory is the ability of a mind to keep what it has learned and to bring it back "
    "when it is needed. An agent that remembers can answer a question about something "
    "it read long ago, and it can connect a new fact to the facts it already knows.",
    "A fact is a statement that can be checked. The river is long. The mountain is high. "
    "The library opens at nine in the morning and closes at six in the evening. "
    "Facts are stored, recalled, compared and sometimes forgotten.",
    "The agent keeps a notebook of memories. Each memory has a time, a place and a short "
    "description. When the user asks a question, the agent searches the notebook, finds "
    "the memories that matter, and writes an answer that is short and true.",
    "Some memories are strong and some are weak. A memory that is recalled often becomes "
    "stronger; a memory that is never recalled slowly fades. Good agents review what "
    "they know, correct what was wrong, and remember where each fact came from.",
    "The user said: please remember that my favourite colour is green, that my sister "
    "lives in Lisbon, and that the meeting moved to Thursday. The assistant answered: "
    "I will remember these facts and recall them when you ask.",
    "Numbers matter too: 1, 2, 3, 10, 42, 100, 2024. Dates, names and places are the "
    "facts people forget most. A careful agent writes them down at once.",
    "Short-term memory holds a few things for a few seconds. Long-term memory holds many "
    "things for many years. Between the two there is attention: what the agent attends to "
    "is what it stores, and what it stores is what it can recall later.",
    "When two memories disagree, the agent does not guess. It looks for the newer fact, "
    "checks the source, and keeps both memories with a note about which one it trusts. "
    "A question about the past is answered with the best memory, not the first one.",
    "The assistant keeps its answers short. It says what it knows, it says when it does "
    "not know, and it asks the user when a fact is missing. The user can always tell the "
    "assistant to forget a memory, and the assistant forgets it.",
    "Every morning the agent reads its notes from the day before. It merges the facts that "
    "repeat, removes the ones that were wrong, and writes a summary of the rest. Over many "
    "days the summaries become a history of everything the user and the agent have shared.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    assert tok.get_vocab_size() == TOKENIZER_VOCAB, tok.get_vocab_size()
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


EOS_ID = SPECIAL_TOKENS.index(EOS_TOKEN)
PAD_ID = SPECIAL_TOKENS.index(PAD_TOKEN)


def tokenizer_config() -> dict:
    return {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS_TOKEN,
        "model_max_length": MAX_POSITIONS,
        "pad_token": PAD_TOKEN,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


_NUMBER_ARRAY = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def write_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    # Keep arrays of numbers (ids, shapes) on one line.
    text = _NUMBER_ARRAY.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    path.write_text(text + "\n", encoding="utf-8")


def write_tokenizer_files(tok: Tokenizer, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"), pretty=True)
    write_json(out / "tokenizer_config.json", tokenizer_config())


# ---------------------------------------------------------------------------
# Reference inputs
# ---------------------------------------------------------------------------

# Fixed ids spread over the whole model vocabulary (including ids above the
# tokenizer's 448 entries and the last id 511); no eos/pad inside.
IDS_A = [17, 301, 88, 452, 5, 230, 511, 64, 377, 129, 260]
IDS_B = [42, 399, 7, 268, 150]
GREEDY_NEW = 12

TEXT = "The agent remembers: café, naïve, 東京 🙂. Memory  is   facts\n\tand 42 agents!"
# Same words with decomposed accents (e + U+0301, i + U+0308): the NFC
# normalizer must map this to the same ids as the precomposed spelling.
TEXT_NFD = "The agent remembers: cafe\u0301, nai\u0308ve."

CHAT_MESSAGES = [
    {"role": "system", "content": "You are an agent with a good memory."},
    {"role": "user", "content": "What is my favourite colour?"},
]
CHAT_MESSAGES_MULTI = [
    {"role": "system", "content": "You are an agent with a good memory."},
    {"role": "user", "content": "Remember that the meeting moved to Thursday."},
    {"role": "assistant", "content": "I will remember it."},
    {"role": "user", "content": "When is the meeting?"},
]

ROUTER_GAP_MIN = 1e-3
GREEDY_MARGIN_MIN = 1e-3

# ---------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------

COMMON = dict(
    vocab_size=MODEL_VOCAB,
    hidden_size=64,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_experts=8,
    num_experts_per_tok=2,
    max_position_embeddings=MAX_POSITIONS,
    initializer_range=0.1,
    eos_token_id=EOS_ID,
    pad_token_id=PAD_ID,
    bos_token_id=None,
)

# Router weights are scaled after init so routing is decisive (router logits
# std ~2). With initializer_range 0.1 a 10x scale would push router logits to
# std ~8, where every probability past the first is ~1e-5 and no seed keeps
# the k-th/(k+1)-th probability gap above ROUTER_GAP_MIN.
ROUTER_SCALE = 2.5

VARIANTS = {
    "base": dict(
        seed=1000,
        config={},
        save_dtype=torch.float32,
        description=(
            "Defaults: num_key_value_heads == num_attention_heads, norm_topk_prob false, no clip_qkv, "
            "no attention bias, untied embeddings, rope_theta 10000, top-2 of 8 experts, 2 layers. "
            "f32, single model.safetensors, per-expert tensor names as written by transformers "
            "save_pretrained. Also the demo model."
        ),
    ),
    "gqa_normtopk": dict(
        seed=2000,
        config=dict(
            num_key_value_heads=2,
            norm_topk_prob=True,
            num_experts_per_tok=3,
            num_hidden_layers=3,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        ),
        save_dtype=torch.float32,
        description=(
            "Grouped-query attention (2 kv heads for 4 query heads; k_norm over the 32-wide kv "
            "projection), norm_topk_prob true, top-3 of 8 experts, 3 layers, rope_theta 500000. f32."
        ),
    ),
    "clip_bias": dict(
        seed=3000,
        config=dict(clip_qkv=1.25, attention_bias=True, rms_norm_eps=1e-6),
        save_dtype=torch.float32,
        description=(
            "clip_qkv 1.25 (the generator checks that q, k and v all exceed it before clamping on "
            "the reference inputs), attention_bias true with random nonzero q/k/v/o biases, "
            "rms_norm_eps 1e-6. f32."
        ),
    ),
    "tied_bf16": dict(
        seed=4000,
        config=dict(tie_word_embeddings=True),
        save_dtype=torch.bfloat16,
        description=(
            "tie_word_embeddings true (no lm_head.weight in the checkpoint), stored in bfloat16. "
            "Reference outputs come from the bf16 checkpoint loaded into float32."
        ),
    ),
    "sharded_f16": dict(
        seed=5000,
        config=dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        save_dtype=torch.float16,
        max_shard_size="150KB",
        description=(
            "Stored in float16 and sharded (model-0000N-of-0000M.safetensors + "
            "model.safetensors.index.json), linear RoPE scaling with factor 2.0 "
            "(rope_parameters.rope_type 'linear'). Reference outputs come from the f16 checkpoint "
            "loaded into float32."
        ),
    ),
    "v5_fused": dict(
        same_as="base",
        description=(
            "Same weights as base, rewritten in the transformers-v5 fused expert layout: "
            "model.layers.L.mlp.experts.gate_up_proj [E, 2*I, H] (gate rows first, then up) and "
            "model.layers.L.mlp.experts.down_proj [E, H, I]; router model.layers.L.mlp.gate.weight. "
            "f32. Reference outputs are base's (transformers loads this layout and reproduces them "
            "bit for bit)."
        ),
    ),
    "mlx_switch": dict(
        same_as="base",
        description=(
            "Same weights as base converted by mlx_lm.convert (--dtype float32, unquantized): experts "
            "stacked as model.layers.L.mlp.switch_mlp.{gate,up,down}_proj.weight [E, out, in], "
            "safetensors metadata format 'mlx', plus a model.safetensors.index.json although there "
            "is one file. config.json and tokenizer files are kept as mlx-lm writes them: "
            "tokenizer_config.json has tokenizer_class 'TokenizersBackend' and no chat_template; the "
            "template lives in chat_template.jinja instead. Reference outputs are base's; mlx-lm's "
            "own forward matches them."
        ),
    ),
}


def is_norm_weight(name: str) -> bool:
    return name.endswith("norm.weight")


def build_model(cfg: OlmoeConfig, seed: int) -> OlmoeForCausalLM:
    torch.manual_seed(seed)
    model = OlmoeForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_norm_weight(name):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("mlp.gate.weight"):
                p.mul_(ROUTER_SCALE)
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
    return model


def load_f32(path: Path, dtype=torch.float32) -> OlmoeForCausalLM:
    model, info = OlmoeForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        attn_implementation="eager",
        experts_implementation="eager",
        output_loading_info=True,
    )
    bad = {k: v for k, v in info.items() if v}
    assert not bad, f"{path}: loading problems {bad}"
    model.eval()
    return model


# ---------------------------------------------------------------------------
# Checks run through forward hooks
# ---------------------------------------------------------------------------


class RouterRecorder:
    """Collects router logits of every OlmoeTopKRouter call."""

    def __init__(self, model: OlmoeForCausalLM):
        self.top_k = model.config.num_experts_per_tok
        self.calls: list[torch.Tensor] = []
        self.handles = []
        for name, mod in model.named_modules():
            if name.endswith("mlp.gate"):
                self.handles.append(mod.register_forward_hook(self._hook))

    def _hook(self, _mod, _inp, out):
        self.calls.append(out[0].detach().float().clone())

    def clear(self):
        self.calls = []

    def min_gap(self) -> float:
        gaps = []
        for logits in self.calls:
            probs = torch.softmax(logits, dim=-1)
            s = torch.sort(probs, dim=-1, descending=True).values
            gaps.append((s[:, self.top_k - 1] - s[:, self.top_k]).min().item())
        return min(gaps)

    def selections(self) -> list[torch.Tensor]:
        return [torch.sort(torch.topk(c, self.top_k, dim=-1).indices, dim=-1).values for c in self.calls]

    def remove(self):
        for h in self.handles:
            h.remove()


class ClipRecorder:
    """Counts q/k/v elements beyond clip_qkv before the in-place clamp."""

    def __init__(self, model: OlmoeForCausalLM, clip: float):
        self.clip = clip
        self.counts = {"q": 0, "k": 0, "v": 0}
        self.totals = {"q": 0, "k": 0, "v": 0}
        self.handles = []
        for name, mod in model.named_modules():
            for suffix, key in (("self_attn.q_norm", "q"), ("self_attn.k_norm", "k"), ("self_attn.v_proj", "v")):
                if name.endswith(suffix):
                    self.handles.append(mod.register_forward_hook(self._make_hook(key)))

    def _make_hook(self, key):
        def hook(_mod, _inp, out):
            self.counts[key] += int((out.abs() > self.clip).sum().item())
            self.totals[key] += out.numel()

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------------------
# Reference computation
# ---------------------------------------------------------------------------


@torch.no_grad()
def forward(model, ids: list[int]):
    x = torch.tensor([ids], dtype=torch.long)
    logits = model(x).logits[0].float()
    hidden = model.model(x).last_hidden_state[0].float()
    return logits, hidden


@torch.no_grad()
def greedy(model, prompt: list[int]) -> tuple[list[int], float]:
    """Greedy continuation via generate(); cross-checked with a cache-free argmax loop."""
    gen_cfg = GenerationConfig(
        max_new_tokens=GREEDY_NEW,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=PAD_ID,
        bos_token_id=None,
    )
    # Never stop on eos: the runtime is compared on all GREEDY_NEW steps.
    model.generation_config.eos_token_id = None
    out = model.generate(
        torch.tensor([prompt], dtype=torch.long),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        generation_config=gen_cfg,
    )
    new = out[0, len(prompt):].tolist()
    assert len(new) == GREEDY_NEW, new
    seq = list(prompt)
    margin = float("inf")
    for _ in range(GREEDY_NEW):
        logits = model(torch.tensor([seq], dtype=torch.long)).logits[0, -1].float()
        top2 = torch.topk(logits, 2).values
        margin = min(margin, (top2[0] - top2[1]).item())
        seq.append(int(torch.argmax(logits).item()))
    assert seq[len(prompt):] == new, (seq[len(prompt):], new)
    return new, margin


def tokenizer_refs(model_dir: Path) -> dict:
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    text_ids = hf_tok.encode(TEXT, add_special_tokens=False)
    assert text_ids == raw.encode(TEXT, add_special_tokens=False).ids
    nfd_ids = hf_tok.encode(TEXT_NFD, add_special_tokens=False)
    assert nfd_ids == raw.encode(TEXT_NFD, add_special_tokens=False).ids
    assert nfd_ids == hf_tok.encode("The agent remembers: café, naïve.", add_special_tokens=False)
    rendered = hf_tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    rendered_multi = hf_tok.apply_chat_template(CHAT_MESSAGES_MULTI, tokenize=False, add_generation_prompt=True)
    chat_ids = hf_tok.encode(rendered, add_special_tokens=False)
    chat_multi_ids = hf_tok.encode(rendered_multi, add_special_tokens=False)
    assert hf_tok.eos_token_id == EOS_ID and hf_tok.pad_token_id == PAD_ID, (hf_tok.eos_token_id, hf_tok.pad_token_id)
    assert hf_tok.bos_token is None
    return {
        "text": TEXT,
        "text_ids": text_ids,
        "text_decoded": hf_tok.decode(text_ids),
        "text_nfd": TEXT_NFD,
        "text_nfd_ids": nfd_ids,
        "text_nfd_decoded": hf_tok.decode(nfd_ids),
        "chat_messages": CHAT_MESSAGES,
        "chat_rendered": rendered,
        "chat_ids": chat_ids,
        "chat_messages_multi": CHAT_MESSAGES_MULTI,
        "chat_rendered_multi": rendered_multi,
        "chat_ids_multi": chat_multi_ids,
        "tokenizer_vocab_size": len(hf_tok),
    }


def model_refs(model_dir: Path, clip: float | None) -> tuple[dict, dict]:
    """Returns (tensors, facts) computed from the checkpoint on disk, in float32."""
    model = load_f32(model_dir)
    routers = RouterRecorder(model)
    clip_rec = ClipRecorder(model, clip) if clip is not None else None

    if clip_rec is not None:
        with torch.no_grad():
            for ids in (IDS_A, IDS_B):
                model(torch.tensor([ids], dtype=torch.long))
        clip_rec.remove()
    logits_a, hidden_a = forward(model, IDS_A)
    logits_b, hidden_b = forward(model, IDS_B)
    greedy_new, margin = greedy(model, IDS_A)
    routers.clear()
    forward(model, IDS_A)
    forward(model, IDS_B)
    forward(model, IDS_A + greedy_new)
    router_gap = routers.min_gap()
    f32_sel = routers.selections()[: model.config.num_hidden_layers]  # the ids_a logits pass
    routers.remove()

    tensors = {
        "ids_a": torch.tensor(IDS_A, dtype=torch.int64),
        "logits_a": logits_a.contiguous(),
        "hidden_a": hidden_a.contiguous(),
        "ids_b": torch.tensor(IDS_B, dtype=torch.int64),
        "logits_b": logits_b.contiguous(),
        "hidden_b": hidden_b.contiguous(),
        "greedy_ids": torch.tensor(greedy_new, dtype=torch.int64),
    }
    facts = {
        "greedy_prompt": IDS_A,
        "greedy_new": greedy_new,
        "checks": {
            "min_router_prob_gap": round(router_gap, 6),
            "min_greedy_top2_logit_margin": round(margin, 6),
            "logits_a_std": round(logits_a.std().item(), 4),
        },
    }
    if clip_rec is not None:
        facts["checks"]["clip_qkv_exceeded"] = {
            k: f"{clip_rec.counts[k]}/{clip_rec.totals[k]}" for k in ("q", "k", "v")
        }
        facts["_clip_counts"] = dict(clip_rec.counts)
    facts["_f32_selections"] = f32_sel
    return tensors, facts


@torch.no_grad()
def bf16_logits(model_dir: Path, f32_selections) -> tuple[torch.Tensor, bool]:
    model = load_f32(model_dir, dtype=torch.bfloat16)
    routers = RouterRecorder(model)
    logits = model(torch.tensor([IDS_A], dtype=torch.long)).logits[0].float().contiguous()
    sel = routers.selections()
    same = len(sel) == len(f32_selections) and all(torch.equal(a, b) for a, b in zip(sel, f32_selections))
    routers.remove()
    return logits, same


# ---------------------------------------------------------------------------
# Layout rewrites
# ---------------------------------------------------------------------------


def write_fused(base_dir: Path, out: Path, cfg: OlmoeConfig) -> None:
    src = safetensors.torch.load_file(str(base_dir / "model.safetensors"))
    dst = {}
    E = cfg.num_experts
    for name, t in src.items():
        if ".mlp.experts." not in name:
            dst[name] = t
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}.mlp.experts"
        gate = torch.stack([src[f"{p}.{e}.gate_proj.weight"] for e in range(E)])  # [E, I, H]
        up = torch.stack([src[f"{p}.{e}.up_proj.weight"] for e in range(E)])  # [E, I, H]
        down = torch.stack([src[f"{p}.{e}.down_proj.weight"] for e in range(E)])  # [E, H, I]
        dst[f"{p}.gate_up_proj"] = torch.cat([gate, up], dim=1).contiguous()
        dst[f"{p}.down_proj"] = down.contiguous()
    safetensors.torch.save_file(dst, str(out / "model.safetensors"), metadata={"format": "pt"})


def write_mlx(base_dir: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_out = Path(tmp) / "mlx"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mlx_lm",
                "convert",
                "--hf-path",
                str(base_dir),
                "--mlx-path",
                str(tmp_out),
                "--dtype",
                "float32",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        # The model card mlx-lm adds is not part of the checkpoint.
        (tmp_out / "README.md").unlink(missing_ok=True)
        shutil.copytree(tmp_out, out)


def check_mlx(out: Path, ref: dict[str, torch.Tensor]) -> float:
    import mlx.core as mx
    from mlx_lm import load

    model, _tok = load(str(out))
    worst = 0.0
    for ids, key in ((IDS_A, "logits_a"), (IDS_B, "logits_b")):
        logits = model(mx.array([ids]))
        got = torch.from_numpy(np.array(logits[0].astype(mx.float32)))
        diff = (got - ref[key]).abs().max().item()
        worst = max(worst, diff)
    assert worst < 1e-4, f"mlx-lm logits differ from transformers by {worst}"
    return worst


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def versions() -> dict:
    import mlx.core as mx
    import mlx_lm

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "mlx": mx.__version__,
        "mlx-lm": mlx_lm.__version__,
    }


def tensor_index(tensors: dict[str, torch.Tensor]) -> dict:
    return {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in tensors.items()}


def make_variant(name: str, spec: dict, tok: Tokenizer, built: dict) -> dict:
    out = MODELS / name
    cfg_kwargs = {**COMMON, **spec["config"]}
    seed = spec["seed"]
    # Deterministic seed search: the first seed whose model passes every check.
    for attempt in range(50):
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        cfg = OlmoeConfig(**cfg_kwargs)
        model = build_model(cfg, seed + attempt)
        model = model.to(spec["save_dtype"])
        save_kwargs = {}
        if "max_shard_size" in spec:
            save_kwargs["max_shard_size"] = spec["max_shard_size"]
        model.save_pretrained(out, **save_kwargs)
        write_tokenizer_files(tok, out)
        tensors, facts = model_refs(out, cfg.clip_qkv)
        ok = (
            facts["checks"]["min_router_prob_gap"] > ROUTER_GAP_MIN
            and facts["checks"]["min_greedy_top2_logit_margin"] > GREEDY_MARGIN_MIN
        )
        if cfg.clip_qkv is not None:
            ok = ok and all(c > 0 for c in facts["_clip_counts"].values())
        if name == "base":
            logits_bf16, same_routing = bf16_logits(out, facts["_f32_selections"])
            ok = ok and same_routing
        if ok:
            break
        print(f"{name}: seed {seed + attempt} rejected {json.dumps(facts['checks'])}", file=sys.stderr)
    else:
        raise SystemExit(f"{name}: no seed passed the checks")
    facts.pop("_clip_counts", None)
    facts.pop("_f32_selections")
    facts["seed"] = seed + attempt
    if name == "base":
        tensors["logits_a_bf16"] = logits_bf16
        facts["checks"]["bf16_routing_matches_f32_on_ids_a"] = True
        facts["checks"]["bf16_vs_f32_logits_a_max_abs_diff"] = round(
            (logits_bf16 - tensors["logits_a"]).abs().max().item(), 4
        )
    if "rope_parameters" in spec["config"] and spec["config"]["rope_parameters"]["rope_type"] == "linear":
        m = load_f32(out)
        rope = m.model.rotary_emb
        theta = spec["config"]["rope_parameters"]["rope_theta"]
        hd = cfg.hidden_size // cfg.num_attention_heads
        plain = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
        assert rope.rope_type == "linear", rope.rope_type
        assert torch.allclose(rope.inv_freq, plain / 2.0), "linear rope scaling not applied"
        facts["checks"]["linear_rope_inv_freq_halved"] = True
        saved = json.loads((out / "config.json").read_text())
        assert saved["rope_parameters"]["rope_type"] == "linear", saved.get("rope_parameters")
    if "max_shard_size" in spec:
        shards = sorted(p.name for p in out.glob("model-*.safetensors"))
        assert len(shards) >= 2 and (out / "model.safetensors.index.json").exists(), shards
        facts["checks"]["shards"] = shards
    built[name] = dict(cfg=cfg, tensors=tensors, facts=facts, dir=out)
    return built[name]


def make_derived(name: str, spec: dict, built: dict) -> dict:
    base = built[spec["same_as"]]
    out = MODELS / name
    if out.exists():
        shutil.rmtree(out)
    facts = {k: v for k, v in base["facts"].items()}
    facts["checks"] = {k: v for k, v in base["facts"]["checks"].items() if not k.startswith("bf16")}
    if name == "v5_fused":
        out.mkdir(parents=True)
        for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(base["dir"] / f, out / f)
        write_fused(base["dir"], out, base["cfg"])
        m = load_f32(out)
        for ids, key in ((IDS_A, "logits_a"), (IDS_B, "logits_b")):
            logits, hidden = forward(m, ids)
            assert torch.equal(logits, base["tensors"][key]), f"{name}: {key} differs from base"
        facts["checks"]["transformers_loads_fused_bitwise_equal_to_base"] = True
    elif name == "mlx_switch":
        write_mlx(base["dir"], out)
        facts["checks"]["mlx_lm_vs_transformers_max_abs_logit_diff"] = float(f"{check_mlx(out, base['tensors']):.2e}")
    else:
        raise ValueError(name)
    tensors = {k: v for k, v in base["tensors"].items() if k != "logits_a_bf16"}
    facts["reference_from"] = spec["same_as"]
    return dict(cfg=base["cfg"], tensors=tensors, facts=facts, dir=out)


def write_reference(name: str, spec: dict, entry: dict, vers: dict) -> None:
    out = entry["dir"]
    tensors = entry["tensors"]
    safetensors.torch.save_file(tensors, str(out / "reference.safetensors"))
    tok_facts = tokenizer_refs(out)
    meta = {
        "variant": name,
        "description": spec["description"],
        "versions": vers,
        "regenerate": "python scripts/make_fixtures.py",
        "tensors": tensor_index(tensors),
        "ids_a": IDS_A,
        "ids_b": IDS_B,
        **{k: v for k, v in entry["facts"].items() if k in ("greedy_prompt", "greedy_new")},
        **tok_facts,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "notes": {
            "logits": "float32 forward, model.eval(), torch.no_grad(), eager attention and eager experts, "
            "weights as stored on disk upcast to float32",
            "hidden": "final-norm hidden states, model.model(ids).last_hidden_state",
            "greedy": "generate(ids_a, max_new_tokens=12, do_sample=False) with no eos stop; new tokens only",
        },
        **{k: v for k, v in entry["facts"].items() if k in ("seed", "reference_from")},
        "checks": entry["facts"]["checks"],
    }
    if name == "base":
        meta["notes"]["logits_a_bf16"] = "same forward with from_pretrained(dtype=torch.bfloat16), cast to float32"
    write_json(out / "reference.json", meta)


README_HEAD = """# Test fixtures

Everything under `models/` is generated by `scripts/make_fixtures.py` (package
versions pinned in `scripts/requirements-fixtures.txt`); do not edit by hand.
Regenerate with:

    python scripts/make_fixtures.py

The script is deterministic (seeded, single-threaded), so a rerun with the
pinned versions reproduces the files byte for byte.

Every variant directory holds a loadable checkpoint (`config.json`, weights,
`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`) and
reference outputs: `reference.safetensors` (`ids_a` [11] i64, `logits_a`
[11, 512] f32, `hidden_a` [11, 64] f32, `ids_b` [5] i64, `logits_b` [5, 512]
f32, `hidden_b` [5, 64] f32, `greedy_ids` [12] i64; `base` also has
`logits_a_bf16` [11, 512] f32) and `reference.json` (the same ids as lists, the
tokenizer test strings and their ids, rendered chat prompts, the package
versions and the checks the generator ran).

All models share one byte-level BPE tokenizer (448 entries, NFC normalizer,
ByteLevel pre-tokenizer/decoder; `<|endoftext|>`=0 is eos, `<|padding|>`=1 is
pad, then `<|user|>`, `<|assistant|>`, `<|system|>`) and tiny shapes: hidden 64,
4 heads of 16, expert intermediate 32, 8 experts, vocab 512 (ids 448..511 exist
in the model but not in the tokenizer), max positions 256.

## Variants
"""


def write_readme() -> None:
    parts = [README_HEAD]
    for name, spec in VARIANTS.items():
        parts.append(f"\n### `{name}`\n\n{spec['description']}\n")
    (FIXTURES / "README.md").write_text("".join(parts), encoding="utf-8")


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if MODELS.exists():
        shutil.rmtree(MODELS)
    MODELS.mkdir(parents=True)
    vers = versions()
    tok = build_tokenizer()
    built: dict = {}
    for name, spec in VARIANTS.items():
        if "same_as" in spec:
            entry = make_derived(name, spec, built)
        else:
            entry = make_variant(name, spec, tok, built)
        write_reference(name, spec, entry, vers)
        print(f"{name}: ok {json.dumps(entry['facts']['checks'])}")
    write_readme()


if __name__ == "__main__":
    main()
