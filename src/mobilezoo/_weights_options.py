"""The weights flags every command shares (``predict``, ``export``, ``quantize``, ``serve``, ``bench``): the one
vocabulary of :mod:`mobilezoo.weights.choice` on the command line. Importing this module costs no torch.

- no flag: the published weights of ``--model`` (an error for a name with none, saying so);
- ``--random-weights``: untrained weights, asked for explicitly;
- ``--ckpt PATH``: a ``.pdparams``, ``.pt``/``.pth``, ``.safetensors`` file, a ``save_pretrained`` folder or a
  training ``.ckpt``; those that record their model (``.ckpt``, folders, mobilezoo ``.safetensors``) need no
  ``--model``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_weights_options", "chosen_weights", "model_from_options"]

CKPT_HELP = (
    "weights: a .pdparams/.pt/.pth/.safetensors file, a save_pretrained folder or a training .ckpt "
    "(default: the published weights)"
)


def add_weights_options(p: Any, *, ckpt: bool = True) -> None:
    """Add ``--ckpt PATH`` and ``--random-weights`` to a parser or argument group."""
    if ckpt:
        p.add_argument("--ckpt", type=Path, metavar="PATH", help=CKPT_HELP)
    p.add_argument(
        "--random-weights", action="store_true", help="untrained weights, asked for explicitly (smoke tests, timing)"
    )


def chosen_weights(args: argparse.Namespace) -> str | None:
    """``"random"``, the ``--ckpt`` path, or None (the published weights)."""
    ckpt = getattr(args, "ckpt", None)
    if args.random_weights and ckpt:
        raise ValueError("--random-weights and --ckpt exclude each other: give one")
    if args.random_weights:
        return "random"
    return str(ckpt) if ckpt else None


def model_from_options(args: argparse.Namespace, name: str | None):
    """The eval-mode zoo model the flags ask for; ``name=None`` with ``--ckpt`` takes the model it records."""
    from .weights import load_model

    return load_model(name, chosen_weights(args))
