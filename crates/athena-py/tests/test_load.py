"""load(): MLX first when enabled and available, candle otherwise, False when nothing loads."""

import logging

import pytest

import athena
from conftest import cli_json

MLX_REASON = athena.mlx_unavailable_reason()


def test_use_mlx_false_loads_candle_with_the_head(base):
    model = athena.OLMoEModel(athena.OLMoEConfig(base, use_mlx=False))
    assert model.backend is None and not model.is_loaded and model.action_head is None
    assert model.load_report == []
    assert model.load() is True
    assert model.is_loaded
    assert model.backend == "candle"
    assert model.load_report == [
        {"backend": "mlx", "outcome": "skipped", "reason": "disabled by use_mlx=false"},
        {"backend": "candle", "outcome": "loaded", "reason": f"loaded {base}"},
    ]
    head = model.action_head
    assert head is not None and not head.trained
    assert head.operations == ["ADD", "UPDATE", "DELETE", "NOOP"]
    assert head.target_operations == ["UPDATE", "DELETE"]
    assert head.input_dim == 64 and head.proj_dim == 64 and head.path is None
    assert repr(head) == ("MemoryActionHead(operations=['ADD', 'UPDATE', 'DELETE', 'NOOP'], "
                          "input_dim=64, proj_dim=64, path=None)")


def test_the_report_is_the_cli_report(base):
    model = athena.OLMoEModel(athena.OLMoEConfig(base, use_mlx=False))
    assert model.load()
    cli = cli_json("load", "--model", base, "--use-mlx", "false", "--json")
    assert cli["attempts"] == model.load_report
    assert cli["backend"] == model.backend
    assert cli["action_head"] is True


@pytest.mark.skipif(MLX_REASON is None, reason="MLX is available in this build")
def test_mlx_unavailable_falls_back_to_candle_and_says_why(base, caplog):
    caplog.set_level(logging.INFO, logger="athena")
    model = athena.OLMoEModel(athena.OLMoEConfig(base))
    assert model.config.use_mlx
    assert model.load()
    assert model.backend == "candle"
    assert model.action_head is not None
    assert model.load_report[0] == {"backend": "mlx", "outcome": "skipped", "reason": MLX_REASON}
    messages = [r.getMessage() for r in caplog.records if r.name == "athena"]
    assert f"MLX skipped: {MLX_REASON}" in messages
    assert f"Loading OLMoE via candle: {base}" in messages


def test_nothing_loadable_is_false_with_the_reason_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="athena")
    missing = str(tmp_path / "no-such-model")
    model = athena.OLMoEModel(athena.OLMoEConfig(missing, use_mlx=False))
    assert model.load() is False
    assert not model.is_loaded and model.backend is None and model.action_head is None
    report = model.load_report
    assert report[0] == {"backend": "mlx", "outcome": "skipped", "reason": "disabled by use_mlx=false"}
    assert report[1]["backend"] == "candle" and report[1]["outcome"] == "failed"
    assert report[1]["reason"].startswith("failed: ") and "no-such-model" in report[1]["reason"]
    errors = [r for r in caplog.records if r.name == "athena" and r.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in caplog.records]
    message = errors[0].getMessage()
    assert message.startswith("No inference backend available (MLX and candle both unavailable): ")
    assert "mlx: disabled by use_mlx=false" in message
    assert f"candle: failed: " in message and "no-such-model" in message


def test_load_again_replaces_the_model(base):
    model = athena.OLMoEModel(athena.OLMoEConfig(base, use_mlx=False))
    assert model.load() and model.load()
    assert model.backend == "candle"
    assert repr(model) == f"OLMoEModel('{base}', backend='candle')"
