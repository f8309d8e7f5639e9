"""Throughput and latency of ``mobilezoo serve`` under concurrency, with dynamic batching on versus off.

For each model and each mode (``--max-batch N`` versus ``--max-batch 1``) it starts the real server
(``python -m mobilezoo serve --random-weights``) on a free loopback port, then, for each concurrency level, runs that
many asyncio clients posting the bundled photos (``../shared/data/images``) for a fixed time, after a short warm-up,
alternating between the two modes' servers (``--repeats`` runs each). It records requests/s (median of the runs),
latency percentiles (over all runs), errors, the mean batch size (from the server's /metrics) and the server's CPU
seconds per request (from /proc), and writes ``benchmarks/results/serve_batching.csv`` and ``.json`` with the
machine it ran on.

    python benchmarks/serve/bench_batching.py                      # the committed run
    python benchmarks/serve/bench_batching.py --seconds 5 --concurrency 1 16 --models ShuffleNetV2_x1_0

The clients run in this process, on the same machine as the server: on a small machine they compete with it for
the CPU (the same way in both modes).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO.parent / "shared" / "data" / "images"
RESULTS = REPO / "benchmarks" / "results"


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
        commit = commit.stdout.strip()
    except OSError:
        commit = ""
    import torch

    from mobilezoo import __version__

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mobilezoo": __version__,
        "git_commit": commit,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class Server:
    def __init__(self, model: str, max_batch: int, args: argparse.Namespace, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mobilezoo", "serve", "--model", model, "--random-weights", "--host", "127.0.0.1",
               "--port", str(self.port), "--threads", str(args.threads), "--max-batch", str(max_batch),
               "--max-wait-ms", str(args.max_wait_ms), "--queue-size", "1024", "--no-access-log",
               "--backend", args.backend, "--device", args.device]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited ({self.proc.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("server did not become ready")
            time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=30).text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def drive(url: str, clients: int, seconds: float, bodies: list[bytes]) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    n = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        t_end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal errors, n
            while time.monotonic() < t_end:
                data = bodies[n % len(bodies)]
                n += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/classify", content=data, headers={"Content-Type": "image/jpeg"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - t0)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["MobileNetV3_small_x1_0", "MobileNetV3_large_x1_0"])
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=6.0, help="measured time per run")
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode and concurrency, interleaved")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--max-batch", type=int, default=32, help="the 'batching on' setting")
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="the model backend's threads in the server")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve_batching", help="writes OUT.csv and OUT.json")
    args = ap.parse_args()

    bodies = [p.read_bytes() for p in sorted(PHOTOS.glob("*.jpg"))]
    if not bodies:
        raise SystemExit(f"no photos in {PHOTOS}")
    info = machine()
    rows = []
    logdir = Path(tempfile.mkdtemp(prefix="mobilezoo-serve-bench-"))
    modes = (("batching", args.max_batch), ("no batching", 1))
    for model in args.models:
        # both servers up at once, measurements interleaved (on, off, on, off ...): a noisy neighbour on a shared
        # machine then weighs on both modes alike instead of on whichever ran during the noise
        servers = {mode: Server(model, mb, args, logdir / f"{model}-{mb}.log") for mode, mb in modes}
        try:
            for clients in args.concurrency:
                runs: dict[str, list] = {mode: [] for mode, _ in modes}
                for _ in range(args.repeats):
                    for mode, _ in modes:
                        server = servers[mode]
                        asyncio.run(drive(server.url, clients, args.warmup, bodies))
                        m0, cpu0 = server.metrics(), cpu_seconds(server.proc.pid)
                        lat, errors, wall = asyncio.run(drive(server.url, clients, args.seconds, bodies))
                        m1, cpu1 = server.metrics(), cpu_seconds(server.proc.pid)
                        runs[mode].append((lat, errors, wall, m0, m1, cpu1 - cpu0))
                for mode, max_batch in modes:
                    lat = sorted(x for r in runs[mode] for x in r[0])
                    rates = [len(r[0]) / r[2] for r in runs[mode]]
                    batches = sum(
                        r[4]["mobilezoo_batch_size_count"] - r[3]["mobilezoo_batch_size_count"] for r in runs[mode]
                    )
                    images = sum(
                        r[4]["mobilezoo_batch_size_sum"] - r[3]["mobilezoo_batch_size_sum"] for r in runs[mode]
                    )
                    row = {
                        "model": model,
                        "mode": mode,
                        "max_batch": max_batch,
                        "max_wait_ms": args.max_wait_ms if max_batch > 1 else 0,
                        "clients": clients,
                        "requests": len(lat),
                        "errors": sum(r[1] for r in runs[mode]),
                        "req_per_s": round(statistics.median(rates), 1),
                        "req_per_s_runs": "/".join(f"{x:.1f}" for x in rates),
                        "p50_ms": round(statistics.median(lat) * 1000, 1),
                        "p90_ms": round(pct(lat, 0.90) * 1000, 1),
                        "p99_ms": round(pct(lat, 0.99) * 1000, 1),
                        "mean_batch": round(images / batches, 2) if batches else 0,
                        "server_cpu_ms_per_req": round(sum(r[5] for r in runs[mode]) / max(1, len(lat)) * 1000, 2),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    for model in args.models:  # the speed-up of batching at each concurrency
        for clients in args.concurrency:
            on = next(r for r in rows if r["model"] == model and r["clients"] == clients and r["mode"] == "batching")
            off = next(r for r in rows if r["model"] == model and r["clients"] == clients and r["mode"] != "batching")
            on["speedup_vs_no_batching"] = round(on["req_per_s"] / off["req_per_s"], 2) if off["req_per_s"] else None
            off["speedup_vs_no_batching"] = 1.0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys() | set().union(*rows))
    order = list(rows[0].keys()) + [f for f in fields if f not in rows[0]]
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=order)
        w.writeheader()
        w.writerows(rows)
    root = Path(__file__).resolve().parents[2]

    def rel(p: Path) -> str:  # results record repo-relative paths, not this machine's
        p = p.resolve()
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    config = {k: (rel(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["photos"] = [p.name for p in sorted(PHOTOS.glob("*.jpg"))]
    config["weights"] = "random (--random-weights): throughput does not depend on the weights"
    config["clients_in"] = "the benchmark process, on the same machine as the server"
    doc = {"benchmark": "mobilezoo serve: dynamic batching on vs off", "machine": info, "config": config, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.json')}")
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
