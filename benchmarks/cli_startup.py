"""How long ``mobilezoo`` commands take from the shell, end to end (process start to exit), hyperfine-style.

Each command runs as its own process (the installed ``mobilezoo`` console script), output discarded, ``--warmup``
untimed runs first, then ``--runs`` timed runs; the commands take turns round by round, so that a slow stretch of the
machine falls on all of them. It records the median, min, max, quartiles and standard deviation of the wall time, and,
from one extra run under ``python -X importtime``, whether the command imported torch. The first ``predict --backend
auto`` (an empty cache: it measures the backends) runs ``--auto-runs`` times, each in a fresh cache folder; the
cached one reuses a warmed folder. Goals (the issue's): ``--help`` <= 0.5 s, ``list`` <= 1 s, and the first ``auto``
within the README's figure. Writes ``benchmarks/results/cli_startup.csv`` and ``.json`` with the machine record
(:func:`mobilezoo.measure.machine.machine_info`).

    python benchmarks/cli_startup.py                       # the committed run (a quiet machine)
    python benchmarks/cli_startup.py --runs 3 --auto-runs 1 --out /tmp/cli   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO.parent / "shared" / "data" / "images" / "cat.jpg"
RESULTS = REPO / "benchmarks" / "results"
MODEL = "MobileNetV3_small_x1_0"
PREDICT = ["predict", str(PHOTO), "--model", MODEL, "--random-weights"]
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    # name: (arguments, goal in seconds or None)
    "--help": (["--help"], 0.5),
    "--version": (["--version"], None),
    "list": (["list"], 1.0),
    "list --pretrained": (["list", "--pretrained"], None),
    "info": (["info", "MobileNetV3_large_x1_0"], None),
    "recipe list": (["recipe", "list"], None),
    "predict --backend torch": ([*PREDICT, "--backend", "torch"], None),
    "predict --backend auto (cached)": ([*PREDICT, "--backend", "auto"], None),
}
AUTO_FIRST = "predict --backend auto (first: measures)"


def _base() -> list[str]:
    exe = shutil.which("mobilezoo")
    return [exe] if exe else [sys.executable, "-m", "mobilezoo"]


def _once(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return took


def _imports_torch(argv: list[str], env: dict[str, str]) -> bool:
    r = subprocess.run(argv, capture_output=True, text=True, env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
    # -X importtime lines: "import time: <self us> | <cumulative us> | <indent><module>"
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in r.stderr.splitlines())


def _stats(name: str, times: list[float], goal: float | None, torch_imported: bool) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    med = statistics.median(times)
    return {
        "command": f"mobilezoo {name}",
        "runs": len(times),
        "median_s": round(med, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "q1_s": round(q[0], 4),
        "q3_s": round(q[2], 4),
        "stdev_s": round(statistics.stdev(times), 4) if len(times) > 1 else 0.0,
        "goal_s": goal,
        "meets_goal": None if goal is None else med <= goal,
        "imports_torch": torch_imported,
    }


def _auto_first(base: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="mz-auto-") as home:
            times.append(_once([*base, *PREDICT, "--backend", "auto"], {**env, "MOBILEZOO_HOME": home}))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--auto-runs", type=int, default=3, help="runs of the first (measuring) auto predict")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    from mobilezoo.measure.machine import machine_info

    base = _base()
    home = tempfile.mkdtemp(prefix="mz-cli-")  # the cached-auto choice lives here (published weights are not used)
    env = {**os.environ, "MOBILEZOO_HOME": home}
    env.pop("MOBILEZOO_AUTO_REMEASURE", None)
    try:
        _once([*base, *COMMANDS["predict --backend auto (cached)"][0]], env)  # measures once: later runs are cached
        for _ in range(args.warmup):  # page cache, bytecode
            for cmd, _goal in COMMANDS.values():
                _once([*base, *cmd], env)
        times: dict[str, list[float]] = {n: [] for n in COMMANDS}
        for _ in range(args.runs):
            for name, (cmd, _goal) in COMMANDS.items():
                times[name].append(_once([*base, *cmd], env))
        rows = [_stats(n, times[n], g, _imports_torch([*base, *c], env)) for n, (c, g) in COMMANDS.items()]
        first = _auto_first(base, env, args.auto_runs)
        rows.append(_stats(AUTO_FIRST, first, None, True))
    finally:
        shutil.rmtree(home, ignore_errors=True)

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "cli_startup.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    doc = {
        "benchmark": "benchmarks/cli_startup.py",
        "invocation": [Path(a).name for a in base],  # the console script by name: no machine paths
        "settings": {"runs": args.runs, "warmup": args.warmup, "auto_runs": args.auto_runs, "model": MODEL},
        "machine": machine_info(),
        "results": rows,
    }
    (args.out / "cli_startup.json").write_text(json.dumps(doc, indent=2) + "\n")
    for r in rows:
        goal = "" if r["goal_s"] is None else f"  goal {r['goal_s']} s: {'met' if r['meets_goal'] else 'MISSED'}"
        print(f"{r['command']:<52} median {r['median_s']:7.3f} s  [{r['min_s']:.3f}, {r['max_s']:.3f}]{goal}")
    print(f"wrote {args.out / 'cli_startup.csv'} and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
