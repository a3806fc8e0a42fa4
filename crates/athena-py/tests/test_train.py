"""train_head: a short SFT run on the synthetic memory task the CLI tests use, the same
report as `athena train-head --json`, and the trained head loaded back."""

import json

import pytest

import athena
from conftest import cli_json, run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for n, seed, name in [("120", "1", "train.jsonl"), ("40", "2", "eval.jsonl")]:
        run_cli("synth-memory", "--n", n, "--seed", seed, "--out", str(d / name))
    return d / "train.jsonl", d / "eval.jsonl"


def test_sft_trains_writes_and_matches_the_cli(candle_model, base, data, tmp_path):
    train, eval_ = data
    out = tmp_path / "head"
    report = athena.train_head(candle_model, train, eval_, out, mode="sft", steps=60, lr=1e-2)
    assert set(report) == {"eval_accuracy", "eval_reward", "initial_eval_accuracy", "steps",
                           "seconds", "epoch_seconds", "epoch2_speedup", "features", "head"}
    assert report["steps"] == 60 and report["head"] == str(out)
    assert report["eval_accuracy"] > report["initial_eval_accuracy"]
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 60 and json.loads(log[-1])["step"] == 60

    cli = cli_json("train-head", "--model", base, "--use-mlx", "false", "--train", str(train),
                   "--eval", str(eval_), "--out", str(tmp_path / "cli-head"), "--mode", "sft",
                   "--steps", "60", "--lr", "1e-2", "--json")
    for key in ["eval_accuracy", "eval_reward", "initial_eval_accuracy", "steps"]:
        assert report[key] == pytest.approx(cli[key], abs=1e-6), key

    with pytest.raises(athena.AthenaUserError, match="already holds a trained head"):
        athena.train_head(candle_model, train, eval_, out, mode="sft", steps=1)

    trained = athena.OLMoEModel(athena.OLMoEConfig(base, use_mlx=False, action_head_path=out))
    assert trained.load()
    assert trained.action_head.trained and trained.action_head.path == str(out)
    action = trained.act("The user moved to Rome.", [{"id": "m1", "text": "The user lives in Paris."}])
    assert action["op"] in {"ADD", "UPDATE", "DELETE", "NOOP"}


def test_bad_runs(candle_model, data, tmp_path):
    train, eval_ = data
    with pytest.raises(athena.AthenaUserError, match="mode"):
        athena.train_head(candle_model, train, eval_, tmp_path / "a", mode="ppo")
    with pytest.raises(athena.AthenaUserError, match="no option `stepz`"):
        athena.train_head(candle_model, train, eval_, tmp_path / "a", stepz=3)
    with pytest.raises(athena.AthenaUserError, match="missing.jsonl"):
        athena.train_head(candle_model, tmp_path / "missing.jsonl", eval_, tmp_path / "a", steps=1)
    with pytest.raises(athena.AthenaUserError, match="batch_size"):
        athena.train_head(candle_model, train, eval_, tmp_path / "a", batch_size=0)
