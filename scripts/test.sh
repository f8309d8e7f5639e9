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
ruff check src tests scripts benchmarks
ruff format --check src tests scripts benchmarks
export MOBILEZOO_PADDLE_PYTHON="$PWD/.cache/paddle-env/bin/python"
lint-imports
# The whole suite in ONE pytest process, as a user runs everything in one Python process (tests/test_one_process.py
# guards the native crash that used to force one process per file: see mobilezoo/backends/openvino.py).
python3 -m pytest -q "$@"
