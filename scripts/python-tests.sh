#!/usr/bin/env bash
# The Python binding's tests (crates/athena-py/tests): builds the extension into a venv of its
# own with maturin, builds the `athena` command line the tests compare against, runs pytest.
#
#   scripts/python-tests.sh [pytest arguments...]
#
# ATHENA_PY_FEATURES adds cargo features to both builds (e.g. `athena/mlx`, with MLX_DIR set);
# ATHENA_BIN names an `athena` binary already built with them; CARGO_TARGET_DIR is used as it
# is set (default: target/ in the clone).
set -euo pipefail
cd "$(dirname "$0")/.."
MATURIN_PIN="1.16.0"
PYTEST_PIN="9.2.0"
NUMPY_PIN="2.4.6"
VENV="$HOME/.cache/athena/venv-py"
if ! "$VENV/bin/python" -c "
import sys, importlib.metadata as m
sys.exit(m.version('maturin') != '$MATURIN_PIN' or m.version('pytest') != '$PYTEST_PIN'
         or m.version('numpy') != '$NUMPY_PIN')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "maturin==$MATURIN_PIN" "pytest==$PYTEST_PIN" "numpy==$NUMPY_PIN"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
features=()
if [ -n "${ATHENA_PY_FEATURES:-}" ]; then
  features=(--features "$ATHENA_PY_FEATURES")
fi
# The command line the tests compare against: ATHENA_BIN when given (a binary built with the
# same features), else built here.
if [ -z "${ATHENA_BIN:-}" ]; then
  cargo build --locked -p athena-cli "${features[@]}"
  export ATHENA_BIN="$CARGO_TARGET_DIR/debug/athena"
fi
# maturin installs into the virtual environment VIRTUAL_ENV names. Features given on its command
# line take the place of pyproject.toml's, so extension-module is named again with them.
module_features=()
if [ -n "${ATHENA_PY_FEATURES:-}" ]; then
  module_features=(--features "extension-module,$ATHENA_PY_FEATURES")
fi
VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" develop --locked -m crates/athena-py/Cargo.toml "${module_features[@]}"
"$VENV/bin/python" -m pytest crates/athena-py/tests "$@"
