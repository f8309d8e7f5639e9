#!/usr/bin/env bash
# Set up everything the tests need and run them: the README's test command, and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[dev]"
# Debian's packages the tests use: chromium for the serving page's headless browser test (Playwright drives it: no
# browser download); qemu-user to run int8 artifacts on an emulated AVX2 CPU without VNNI (scripts/emulate_int8.py)
apt_need=()
command -v chromium >/dev/null || apt_need+=(chromium)
command -v qemu-x86_64 >/dev/null || apt_need+=(qemu-user)
if [ ${#apt_need[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_need[@]}"
fi
# the README's test command: a dependency the tests need that is missing fails them, it does not skip them
export MOBILEZOO_TESTS_STRICT=1
bash scripts/paddle_env.sh
ruff check src tests scripts
ruff format --check src tests scripts
export MOBILEZOO_PADDLE_PYTHON="$PWD/.cache/paddle-env/bin/python"
lint-imports
# Each test file runs in its own pytest process. The native crash of several engines in one process is reproduced
# (tests/test_quant.py then tests/test_runtime.py::test_every_engine... in one process: SIGSEGV while waiting on the
# pnnx converter child) but not yet fixed; see the issue notes. The run still fails if any file fails.
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
