"""The MLX path, for real when the extension is built with `--features athena/mlx` and MLX
has a device; skipped otherwise."""

import numpy as np
import pytest

import athena

MLX_REASON = athena.mlx_unavailable_reason()
pytestmark = pytest.mark.skipif(MLX_REASON is not None, reason=f"MLX unavailable: {MLX_REASON}")


@pytest.fixture(scope="module")
def mlx_model(base):
    model = athena.OLMoEModel(athena.OLMoEConfig(base, use_mlx=True))
    assert model.load()
    return model


def test_mlx_is_tried_first_and_carries_no_head(mlx_model, base):
    assert mlx_model.backend == "mlx"
    assert mlx_model.action_head is None
    assert mlx_model.load_report == [
        {"backend": "mlx", "outcome": "loaded", "reason": f"loaded {base}"}
    ]


def test_mlx_encode_matches_candle(mlx_model, candle_model):
    texts = ["The user lives in Paris.", "a fact"]
    got = mlx_model.encode(texts)
    assert got.dtype == np.float32 and got.shape == (2, 64)
    np.testing.assert_allclose(got, candle_model.encode(texts), rtol=1e-4, atol=1e-4)


def test_the_head_needs_candle(mlx_model, tmp_path):
    with pytest.raises(athena.AthenaUserError, match="needs the candle path"):
        mlx_model.act("The user moved to Rome.", [])
    with pytest.raises(athena.AthenaUserError, match="use_mlx=false"):
        athena.train_head(mlx_model, tmp_path / "t.jsonl", tmp_path / "e.jsonl", tmp_path / "out")
