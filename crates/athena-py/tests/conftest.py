"""Shared fixtures: the fixture model, the `athena` command line to compare against, models
loaded on each path."""

import json
import os
import pathlib
import subprocess

import pytest

import athena

ROOT = pathlib.Path(__file__).resolve().parents[3]
BASE = ROOT / "fixtures" / "models" / "base"


def athena_bin() -> pathlib.Path:
    """The `athena` binary the tests compare against: $ATHENA_BIN, else the debug build in
    $CARGO_TARGET_DIR (or target/)."""
    if os.environ.get("ATHENA_BIN"):
        return pathlib.Path(os.environ["ATHENA_BIN"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "debug" / "athena"


def run_cli(*args: str) -> str:
    """Runs the `athena` command line and returns its stdout (it must succeed)."""
    path = athena_bin()
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build -p athena-cli` or set ATHENA_BIN")
    done = subprocess.run([str(path), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cli_json(*args: str):
    """The last stdout line of an `athena ... --json` command, parsed."""
    return json.loads(run_cli(*args).strip().splitlines()[-1])


@pytest.fixture(scope="session")
def base() -> str:
    """The fixture model's directory."""
    return str(BASE)


@pytest.fixture(scope="session")
def candle_model(base) -> athena.OLMoEModel:
    """The fixture model loaded on the candle path."""
    model = athena.OLMoEModel(athena.OLMoEConfig(base, use_mlx=False))
    assert model.load()
    return model
