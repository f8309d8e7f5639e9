"""Build one PaddleClas network with random weights and record what it computes.

Runs in the PaddlePaddle reference environment (``.ci/paddle_env.sh`` builds it), never in mobilezoo's own process:
mobilezoo must read the resulting ``.pdparams`` without paddle.

    python make_reference.py NAME OUT_DIR [--seed N] [--size 224]

writes ``OUT_DIR/model.pdparams`` (``paddle.save(model.state_dict(), f)``) and ``OUT_DIR/io.npz`` (``x``: input,
``logits``: eval-mode output, ``trainable``: trainable parameter count). The network code is the installed
``paddleclas`` package's own backbone file; only its pretrained-weight downloader and logger are stubbed, because
``import paddleclas`` pulls in cv2/faiss/visualdl, which the networks do not use.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

FILES = {
    "MobileNetV1": "legendary_models.mobilenet_v1",
    "MobileNetV3": "legendary_models.mobilenet_v3",
    "MobileNetV2": "model_zoo.mobilenet_v2",
    "ShuffleNetV2": "model_zoo.shufflenet_v2",
    "GhostNet": "model_zoo.ghostnet",
}


def _backbone_module(constructor: str) -> types.ModuleType:
    spec = importlib.util.find_spec("paddleclas")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("paddleclas is not installed in this interpreter")
    root = Path(next(iter(spec.submodule_search_locations)))

    def package(name: str, path: Path) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
        return mod

    package("paddleclas", root)
    package("paddleclas.ppcls", root / "ppcls")
    utils = package("paddleclas.ppcls.utils", root / "ppcls" / "utils")
    package("paddleclas.ppcls.arch", root / "ppcls" / "arch")
    bb = root / "ppcls" / "arch" / "backbone"
    package("paddleclas.ppcls.arch.backbone", bb)
    for sub in ("legendary_models", "model_zoo", "base"):
        package(f"paddleclas.ppcls.arch.backbone.{sub}", bb / sub)
    save_load = types.ModuleType("paddleclas.ppcls.utils.save_load")
    save_load.load_dygraph_pretrain = lambda *a, **k: None  # no downloads
    sys.modules[save_load.__name__] = save_load
    utils.save_load = save_load
    logger = importlib.import_module("paddleclas.ppcls.utils.logger")
    logger.init_logger()  # PaddleClas's own logger, as its tools/ scripts initialise it
    family = next(f for f in FILES if constructor.startswith(f))
    return importlib.import_module(f"paddleclas.ppcls.arch.backbone.{FILES[family]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name", help="PaddleClas constructor, e.g. MobileNetV3_large_x1_0")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()

    import paddle

    paddle.set_device("cpu")
    paddle.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    mod = _backbone_module(args.name)
    model = getattr(mod, args.name)(pretrained=False)
    model.eval()

    # Randomise every tensor that a default init leaves at a constant, BN running statistics included: a misnamed
    # or mis-transposed tensor must change the logits.
    state = model.state_dict()
    new = {}
    for k, v in state.items():
        shape = list(v.shape)
        if k.endswith("_mean"):
            a = rng.uniform(-0.2, 0.2, shape)
        elif k.endswith("_variance"):
            a = rng.uniform(0.5, 1.5, shape)
        elif k.endswith(".bias") or k.endswith("_offset"):
            a = rng.normal(0.0, 0.1, shape)
        elif len(shape) == 1:  # BN gamma
            a = rng.uniform(0.5, 1.5, shape)
        else:
            a = v.numpy()
        new[k] = paddle.to_tensor(np.asarray(a, dtype="float32"))
    model.set_state_dict(new)

    # Random BN statistics alone make deep nets nearly input-independent (every layer re-centres on the wrong mean),
    # and then a swapped tensor hardly moves the logits. So: calibrate the statistics on a random batch (momentum 0
    # turns running stats into batch stats), then jitter them. Logits then depend on the input and every tensor.
    bns = [m for m in model.sublayers() if hasattr(m, "_mean") and hasattr(m, "_variance") and hasattr(m, "_momentum")]
    for m in bns:
        m._momentum = 0.0
    model.train()
    with paddle.no_grad():
        model(paddle.to_tensor(rng.standard_normal((4, 3, args.size, args.size)).astype("float32")))
    model.eval()
    for m in bns:
        var = m._variance.numpy()
        m._mean.set_value((m._mean.numpy() + rng.normal(0, 0.1, var.shape) * np.sqrt(var)).astype("float32"))
        m._variance.set_value((var * rng.uniform(0.75, 1.25, var.shape)).astype("float32"))

    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype("float32")
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x)).numpy()
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    args.out.mkdir(parents=True, exist_ok=True)
    paddle.save(model.state_dict(), str(args.out / "model.pdparams"))
    np.savez(args.out / "io.npz", x=x, logits=logits, trainable=trainable)
    print(f"{args.name}: logits {logits.shape}, trainable {trainable}")


if __name__ == "__main__":
    main()
