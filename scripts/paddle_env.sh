#!/usr/bin/env bash
# Builds the PaddlePaddle reference environment the parity tests compare against (.cache/paddle-env):
# the real paddlepaddle and paddleclas packages, kept out of mobilezoo's own environment (paddleclas pins numpy 1.24
# and opencv, and the parity tests must read .pdparams files in a process without paddle).
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=.cache/paddle-env
if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -c "import paddle, importlib.util as u; assert u.find_spec('paddleclas')" 2>/dev/null; then
  exit 0
fi
mkdir -p .cache
python3 -m venv "$env_dir"
"$env_dir/bin/python" -m pip install -q --disable-pip-version-check paddlepaddle==3.3.1
# the network code only: paddleclas's other dependencies (cv2, faiss, visualdl) are not used by the backbones
"$env_dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps paddleclas==2.6.0
"$env_dir/bin/python" -c "import paddle; print('paddle', paddle.__version__, 'ready in', '$env_dir')"
