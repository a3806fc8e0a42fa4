"""encode, act, generate and the tokenizer on the candle path, against the `athena` CLI."""

import json
import threading
import time

import numpy as np
import pytest

import athena
from conftest import cli_json, run_cli

TEXTS = ["The user lives in Paris.", "a fact", "Another, longer fact about the user's cat."]


def test_encode_is_the_cli_encode_bit_for_bit(candle_model, base):
    got = candle_model.encode(TEXTS)
    assert isinstance(got, np.ndarray)
    assert got.dtype == np.float32 and got.shape == (3, 64)
    args = ["encode", "--model", base, "--use-mlx", "false", "--json"]
    for t in TEXTS:
        args += ["--text", t]
    want = np.array(cli_json(*args)["embeddings"], dtype=np.float32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    # The array owns writable memory of its own.
    got[0, 0] = 1.0


def test_encode_of_nothing_is_an_empty_matrix(candle_model):
    assert candle_model.encode([]).shape == (0, 64)


def test_act_is_the_cli_act(candle_model, base, tmp_path):
    memories = [
        {"id": "m1", "text": "The user lives in Paris."},
        {"id": "m2", "text": "The user likes tea."},
    ]
    got = candle_model.act("The user moved to Rome.", memories)
    path = tmp_path / "memories.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in memories))
    want = cli_json("act", "--model", base, "--use-mlx", "false", "--fact",
                    "The user moved to Rome.", "--memories", str(path), "--json")
    # The command line also says which backend ran; the decision is the rest.
    assert want.pop("backend") == candle_model.backend == "candle"
    assert set(got) == set(want) == {"op", "target", "probabilities", "target_probabilities"}
    assert got["op"] == want["op"] and got["target"] == want["target"]
    for key in ["probabilities", "target_probabilities"]:
        assert set(got[key]) == set(want[key])
        for k in got[key]:
            assert np.float32(got[key][k]) == np.float32(want[key][k])
    assert abs(sum(got["probabilities"].values()) - 1.0) < 1e-5
    assert set(got["target_probabilities"]) == {"m1", "m2"}


def test_generate_is_the_cli_greedy_output(candle_model, base):
    prompt = "The capital of France is"
    got = candle_model.generate(prompt, max_tokens=12)
    want = run_cli("generate", "--model", base, "--prompt", prompt, "--max-tokens", "12")
    assert want.endswith("\n")
    assert got == want[:-1]
    assert len(got) > 0
    streamed = list(candle_model.stream_generate(prompt, max_tokens=12))
    assert "".join(streamed) == got
    assert "".join(candle_model.generate(prompt, max_tokens=12, stream=True)) == got


def test_generate_samples_with_a_seed(candle_model):
    a = candle_model.generate("Hello", max_tokens=8, temperature=0.9, top_p=0.95, seed=3)
    b = candle_model.generate("Hello", max_tokens=8, temperature=0.9, top_p=0.95, seed=3)
    assert a == b


def test_a_dropped_stream_stops(candle_model):
    stream = candle_model.stream_generate("Once upon a time", max_tokens=100)
    first = next(stream)
    assert isinstance(first, str)
    stream.close()
    del stream
    # The model is free for the next call.
    assert candle_model.generate("Once upon a time", max_tokens=2) is not None


def test_tokenizer_round_trip(candle_model):
    tok = candle_model.tokenizer
    ids = tok.encode("hello world")
    assert all(isinstance(i, int) for i in ids) and len(ids) >= 2
    assert tok.decode(ids).strip() == "hello world"
    assert tok.encode("hello world", add_special_tokens=False) == ids[-len(tok.encode("hello world", add_special_tokens=False)):]


def test_model_work_releases_the_gil(candle_model):
    started = threading.Event()
    texts = [f"fact {i} about the user" for i in range(3000)]

    def work():
        started.set()
        candle_model.encode(texts)

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    began = time.monotonic()
    time.sleep(0.02)
    # Had encode kept the GIL, this thread would wake only once the worker is done.
    woke_while_working = worker.is_alive()
    worker.join()
    total = time.monotonic() - began
    assert total > 0.2, f"encode took {total:.3f} s: too short to tell"
    assert woke_while_working
