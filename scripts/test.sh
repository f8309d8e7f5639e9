#!/usr/bin/env bash
# Set up everything the tests need and run them: the README's test command, and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[dev]"
# Debian's chromium for the serving page's headless browser test (Playwright drives it: no browser download)
command -v chromium >/dev/null || { SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
bash scripts/paddle_env.sh
ruff check src tests scripts
ruff format --check src tests scripts
export MOBILEZOO_PADDLE_PYTHON="$PWD/.cache/paddle-env/bin/python"
# test_runtime.py (ncnn/OpenVINO/ONNX Runtime/TorchScript in one process) runs in its own process: after the bench
# and quant tests in the same process, a native library segfaulted in its ncnn test (not reproduced in isolation).
if [ $# -eq 0 ]; then
  python3 -m pytest --ignore=tests/test_runtime.py
  python3 -m pytest tests/test_runtime.py
else
  python3 -m pytest "$@"
fi
