"""Regenerate src/mobilezoo/resources/paddleclas_weights.csv from the spec in ../shared.

One row per published PaddleClas checkpoint name: the PaddleClas constructor it loads into and that network's
trainable params and conv+linear MACs as *PaddleClas's own network* measured them (spec/paddleclas/params_flops.json).
The weights catalog ships this table so that a test can check every entry against the network mobilezoo builds.

    python scripts/make_weights_table.py [--spec ../shared/spec]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", type=Path, default=REPO.parent / "shared" / "spec")
    args = ap.parse_args()
    measured = {r["name"]: r for r in json.loads((args.spec / "paddleclas" / "params_flops.json").read_text())}
    with (args.spec / "paddleclas_mobile_reference.csv").open() as f:
        published = [r["model"] for r in csv.DictReader(f)]
    rows = []
    for name in published:
        base = name.removesuffix("_int8").removesuffix("_ssld")
        base = {"ShuffleNetV2": "ShuffleNetV2_x1_0"}.get(base, base)  # the table's name for PaddleClas's x1_0
        r = measured[base]
        rows.append({"name": name, "paddle_arch": base, "params": r["trainable"], "macs": r["conv_linear_macs"]})
    out = REPO / "src" / "mobilezoo" / "resources" / "paddleclas_weights.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
