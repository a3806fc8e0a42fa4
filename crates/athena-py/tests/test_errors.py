"""The caller's mistakes raise AthenaUserError (a ValueError) with the Rust message; the rest
AthenaError (a RuntimeError)."""

import pytest

import athena


def test_the_exception_types():
    assert issubclass(athena.AthenaUserError, ValueError)
    assert issubclass(athena.AthenaError, RuntimeError)


def test_config_fields_are_checked(tmp_path):
    with pytest.raises(athena.AthenaUserError, match="use_mxl"):
        athena.OLMoEConfig("m", use_mxl=True)
    with pytest.raises(athena.AthenaUserError, match="3bit"):
        athena.OLMoEConfig("m", quantization="3bit")
    with pytest.raises(athena.AthenaUserError, match="model_name"):
        athena.OLMoEConfig("  ")
    with pytest.raises(athena.AthenaUserError, match="missing.toml"):
        athena.OLMoEConfig.from_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text('{"use_mxl": true}')
    with pytest.raises(athena.AthenaUserError, match="bad.json.*use_mxl"):
        athena.OLMoEConfig.from_file(bad)


def test_config_defaults_and_files(tmp_path):
    c = athena.OLMoEConfig()
    assert c.model_name == "allenai/OLMoE-1B-7B-0924-Instruct"
    assert c.use_mlx is True and c.mlx_model_path is None and c.quantization is None
    assert c.lora_path is None and c.device == "auto" and c.dtype == "f32"
    assert c.action_head["proj_dim"] == 64
    path = tmp_path / "athena.toml"
    path.write_text('model_name = "x"\nuse_mlx = false\nquantization = "4bit"\ndevice = "cpu"\n')
    c = athena.OLMoEConfig.from_file(path)
    assert (c.model_name, c.use_mlx, c.quantization, c.device) == ("x", False, "4bit", "cpu")
    assert c == athena.OLMoEConfig("x", use_mlx=False, quantization="4bit", device="cpu")
    assert repr(c).startswith("OLMoEConfig(model_name='x', use_mlx=False")


def test_an_unloaded_model_says_so(base):
    model = athena.OLMoEModel(athena.OLMoEConfig(base, use_mlx=False))
    for call in [lambda: model.encode(["a"]), lambda: model.act("a", []),
                 lambda: model.generate("a"), lambda: model.tokenizer]:
        with pytest.raises(athena.AthenaUserError, match="not loaded"):
            call()


def test_bad_requests(candle_model):
    with pytest.raises(athena.AthenaUserError, match="temperature"):
        candle_model.generate("a", temperature=-1.0)
    with pytest.raises(athena.AthenaUserError, match="memories"):
        candle_model.act("a", [{"id": "m1"}])
    with pytest.raises(TypeError):
        candle_model.encode("not a list")


def test_a_missing_head_directory_is_the_callers_error(base, tmp_path):
    config = athena.OLMoEConfig(base, use_mlx=False, action_head_path=tmp_path / "no-head")
    model = athena.OLMoEModel(config)
    assert model.load() is False
