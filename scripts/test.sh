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
# Each test file runs in its own pytest process: with every native runtime (ncnn, OpenVINO, ONNX Runtime int8,
# TorchScript) loaded into one process, a later test segfaulted in native code (see the issue notes). One file per
# process keeps a crash to its file and names it; the run still fails if any file fails.
if [ $# -eq 0 ]; then
  failed=()
  for f in tests/test_*.py; do
    echo "=== $f"
    python3 -m pytest -q "$f" || failed+=("$f")
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED test files: ${failed[*]}" >&2
    exit 1
  fi
  echo "all test files passed"
else
  python3 -m pytest "$@"
fi
