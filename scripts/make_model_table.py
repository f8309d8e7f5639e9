"""Regenerate src/mobilezoo/resources/model_table.json from the registry, the weights catalog and the built networks.

One row per registry name (family, architecture, aliases, config, published-weights URL and file, PaddleClas
reference row, torchvision/timm peers) and one entry per architecture (params, MACs, FLOPs, memory access, peak
activations, file sizes, per-block table at 224 x 224). ``mobilezoo list`` and ``mobilezoo info`` read this table
instead of importing torch; tests/test_model_table.py rebuilds it and compares it with the shipped file exactly.

    python scripts/make_model_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from mobilezoo.profile.table import build_table

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "mobilezoo" / "resources" / "model_table.json"


def dumps(table: dict) -> str:
    return json.dumps(table, indent=1) + "\n"


def main() -> None:
    table = build_table()
    OUT.write_text(dumps(table))
    print(f"wrote {len(table['models'])} names, {len(table['archs'])} architectures to {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
