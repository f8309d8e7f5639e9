"""The timing harness: warm-up, rounds of timed calls, noise detection with repeats, honest thread accounting.

``measure(fn)`` calls ``fn()`` until warm, then times rounds of calls (each round at least ``min_iters`` calls and
``min_round_s`` seconds). After ``rounds`` rounds it checks the measurement (:func:`~.stats.assess_noise`); a noisy
one gets more rounds, up to ``max_rounds``, judged on its last ``rounds`` rounds; what is still noisy is flagged,
never silently reported as clean. Process CPU time is read around the timed calls, so a backend that uses more
cores than it was given is visible (``cpu_util`` above ``threads``); :func:`pinned` limits the process to
``threads`` cores while a configuration is built and timed.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from .stats import Stats, assess_noise, summarize

__all__ = [
    "FULL",
    "QUICK",
    "STANDARD",
    "Measurement",
    "TimingPolicy",
    "idlest_cores",
    "load_average",
    "measure",
    "measure_interleaved",
    "no_gc",
    "pinned",
    "unpinned_cpus",
]


@dataclass(frozen=True)
class TimingPolicy:
    warmup_iters: int = 3
    warmup_s: float = 0.1
    min_iters: int = 10
    min_round_s: float = 0.2
    max_iters_per_round: int = 2000
    rounds: int = 3
    max_rounds: int = 6
    round_tol: float = 0.10
    spread_tol: float = 0.5
    max_time_s: float = 20.0
    """Stop after the round that passes this much timed time (a disturbed or very slow configuration); flagged."""

    def with_(self, **kw) -> TimingPolicy:
        return replace(self, **kw)


QUICK = TimingPolicy(warmup_iters=1, warmup_s=0.02, min_iters=3, min_round_s=0.05, rounds=3, max_rounds=5)
"""The report's default: a few tenths of a second per configuration."""
STANDARD = TimingPolicy()
FULL = TimingPolicy(warmup_iters=10, warmup_s=0.5, min_iters=20, min_round_s=0.5, rounds=5, max_rounds=10)


@dataclass
class Measurement:
    stats: Stats
    round_medians_ms: list[float]
    noisy: bool
    noise_reason: str
    rounds: int
    warmup_iters: int
    wall_s: float
    cpu_s: float
    samples_s: list[float] = field(default_factory=list, repr=False)

    @property
    def cpu_util(self) -> float:
        """Process CPU seconds per wall second during the timed calls (about the number of busy cores)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while calls are timed (as ``timeit`` does): a collection that a
    previous step's garbage triggers would land in one engine's call and not another's."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@no_gc()
def measure(
    fn: Callable[[], object],
    policy: TimingPolicy = STANDARD,
    *,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
) -> Measurement:
    """Time ``fn()`` (``sync()`` after each call, e.g. ``torch.cuda.synchronize``) under ``policy``.

    ``clock`` / ``cpu_clock`` are injectable so the logic is tested on synthetic timings.
    """

    def call() -> float:
        t0 = clock()
        fn()
        if sync is not None:
            sync()
        return clock() - t0

    # warm-up: both a count and a time
    n_warm, t_warm = 0, 0.0
    while n_warm < policy.warmup_iters or (t_warm < policy.warmup_s and n_warm < policy.max_iters_per_round):
        t_warm += call()
        n_warm += 1

    rounds: list[list[float]] = []
    wall = cpu = 0.0
    noisy, reason = False, ""
    while len(rounds) < policy.max_rounds:
        samples: list[float] = []
        spent = 0.0
        c0, w0 = cpu_clock(), clock()
        while len(samples) < policy.min_iters or (
            spent < policy.min_round_s and len(samples) < policy.max_iters_per_round
        ):
            dt = call()
            samples.append(dt)
            spent += dt
        wall += clock() - w0
        cpu += cpu_clock() - c0
        rounds.append(samples)
        if wall > policy.max_time_s and len(rounds) < policy.max_rounds:
            noisy, reason = True, f"stopped at the {policy.max_time_s:g} s time budget"
            if len(rounds) >= policy.rounds:
                medians = [summarize(r).median_ms for r in rounds[-policy.rounds :]]
                flat = [t for r in rounds[-policy.rounds :] for t in r]
                noisy, why = assess_noise(
                    medians, summarize(flat), round_tol=policy.round_tol, spread_tol=policy.spread_tol
                )
                reason = why if noisy else ""
            break
        if len(rounds) < policy.rounds:
            continue
        recent = rounds[-policy.rounds :]
        flat = [t for r in recent for t in r]
        medians = [summarize(r).median_ms for r in recent]
        noisy, reason = assess_noise(medians, summarize(flat), round_tol=policy.round_tol, spread_tol=policy.spread_tol)
        if not noisy:
            break
    recent = rounds[-policy.rounds :]
    flat = [t for r in recent for t in r]
    if noisy:
        reason = f"{reason} after {len(rounds)} rounds"
    return Measurement(
        stats=summarize(flat),
        round_medians_ms=[summarize(r).median_ms for r in rounds],
        noisy=noisy,
        noise_reason=reason,
        rounds=len(rounds),
        warmup_iters=n_warm,
        wall_s=wall,
        cpu_s=cpu,
        samples_s=flat,
    )


def load_average() -> float | None:
    """1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _set_affinity_all_threads(cpus: set[int]) -> None:
    """Linux pins per thread: set every existing thread of this process (new threads inherit from their parent)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def _cpu_times() -> dict[int, tuple[int, int]]:
    """``{cpu: (busy, total)}`` jiffies from /proc/stat, niced work counted as idle (empty off Linux)."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *vals = line.split()
                    v = [int(x) for x in vals]
                    # idle + iowait, and niced work: a normal-priority benchmark preempts it
                    idle = v[3] + (v[4] if len(v) > 4 else 0) + v[1]
                    out[int(name[3:])] = (sum(v) - idle, sum(v))
    except OSError:
        pass
    return out


def idlest_cores(n: int, sample_s: float = 0.05) -> list[int]:
    """The ``n`` allowed cores that were least busy over ``sample_s`` (other processes share this machine)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    a = _cpu_times()
    time.sleep(sample_s)
    b = _cpu_times()
    if not allowed or not a or not b:
        return allowed[:n]

    def busy(c: int) -> float:
        if c not in a or c not in b:
            return 1.0
        db, dt = b[c][0] - a[c][0], b[c][1] - a[c][1]
        return db / dt if dt > 0 else 0.0

    return sorted(sorted(allowed, key=busy)[:n])


_OUTER: list[set[int]] = []
"""The affinity masks :func:`pinned` replaced, outermost first."""


def unpinned_cpus() -> set[int] | None:
    """The cores this process had before the outermost :func:`pinned` block now open (``None`` outside one): for a
    library that caches the process's cores when first loaded (OpenVINO's CPU plugin does)."""
    return set(_OUTER[0]) if _OUTER else None


@contextlib.contextmanager
def pinned(threads: int | None, cores: list[int] | None = None) -> Iterator[list[int]]:
    """Limit this process to ``threads`` cores (and torch to ``threads`` intra-op threads) for the block.

    ``cores``: which ones (default: the first ``threads`` allowed). Yields the cores used. Without affinity support
    (macOS, Windows) only torch's thread count is set.
    """
    import torch

    old_threads = torch.get_num_threads()
    has_affinity = hasattr(os, "sched_getaffinity")
    old_cpus = os.sched_getaffinity(0) if has_affinity else set()
    if cores is None:
        cores = sorted(old_cpus)[: threads or len(old_cpus)] if has_affinity else []
    cores = [c for c in cores if c in old_cpus][: threads or None] if has_affinity else []
    pushed = bool(has_affinity and threads)
    if pushed:
        _OUTER.append(old_cpus)
    try:
        if threads:
            torch.set_num_threads(threads)
        if pushed:
            _set_affinity_all_threads(set(cores))
        yield cores
    finally:
        torch.set_num_threads(old_threads)
        if pushed:
            _set_affinity_all_threads(old_cpus)
            _OUTER.pop()


@no_gc()
def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int = 5,
    min_iters: int = 3,
    min_round_s: float = 0.05,
    warmup_iters: int = 2,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    round_medians: dict[str, list[float]] | None = None,
) -> dict[str, Stats]:
    """Time several callables side by side: each round runs every candidate in turn (order rotating), so a change
    of machine load during the measurement hits all of them alike. Returns each one's statistics over all rounds;
    ``round_medians`` (if given) receives each candidate's per-round medians in ms, for :func:`~.stats.assess_noise`."""
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for n in names:
        for _ in range(warmup_iters):
            fns[n]()
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for n in order:
            spent, k, this = 0.0, 0, []
            while k < min_iters or spent < min_round_s:
                t0 = clock()
                fns[n]()
                if sync is not None:
                    sync()
                dt = clock() - t0
                this.append(dt)
                spent += dt
                k += 1
            samples[n] += this
            if round_medians is not None:
                round_medians.setdefault(n, []).append(summarize(this).median_ms)
    return {n: summarize(s) for n, s in samples.items()}
