"""Statistics of a latency sample, and the rule that calls a measurement noisy.

A measurement is a list of per-call wall times (seconds) taken in a few *rounds* after warm-up. It is called
**noisy** when its rounds disagree (the medians of the rounds differ by more than ``round_tol`` of the smallest) or
when it is wide (``spread = (p90 - min) / median`` above ``spread_tol``). The harness repeats noisy rounds up to a
limit and flags what is still noisy; these functions are pure so the rule is tested on synthetic timings.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Stats", "assess_noise", "percentile", "run_to_run", "summarize", "verdict"]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    """Latency statistics in milliseconds (inputs are seconds)."""

    n: int
    median_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float
    spread: float
    """(p90 - min) / median: how far the slow tail sits from the best call, relative to the typical call."""

    def throughput(self, batch_size: int) -> float:
        """Images per second at the median latency."""
        return batch_size * 1000.0 / self.median_ms if self.median_ms > 0 else math.inf

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(times_s: Sequence[float]) -> Stats:
    """Median, p90, min, max, mean, standard deviation and relative spread of per-call times (seconds)."""
    if not times_s:
        raise ValueError("no timings to summarize")
    if any(t < 0 or not math.isfinite(t) for t in times_s):
        raise ValueError("timings must be finite and non-negative")
    ms = [t * 1e3 for t in times_s]
    med = statistics.median(ms)
    p90 = percentile(ms, 90)
    lo = min(ms)
    return Stats(
        n=len(ms),
        median_ms=med,
        p90_ms=p90,
        min_ms=lo,
        max_ms=max(ms),
        mean_ms=statistics.fmean(ms),
        std_ms=statistics.pstdev(ms) if len(ms) > 1 else 0.0,
        spread=(p90 - lo) / med if med > 0 else 0.0,
    )


def round_disagreement(round_medians: Sequence[float]) -> float:
    """max / min - 1 of the rounds' medians (0 when they agree exactly)."""
    if not round_medians:
        return 0.0
    lo = min(round_medians)
    return max(round_medians) / lo - 1.0 if lo > 0 else 0.0


def assess_noise(
    round_medians: Sequence[float],
    stats: Stats,
    *,
    round_tol: float = 0.10,
    spread_tol: float = 0.5,
) -> tuple[bool, str]:
    """``(noisy, reason)`` for a measurement: rounds that disagree, or a wide spread. ``reason`` is "" when clean."""
    reasons = []
    d = round_disagreement(round_medians)
    if len(round_medians) > 1 and d > round_tol:
        reasons.append(f"round medians differ by {d:.0%} (> {round_tol:.0%})")
    if stats.spread > spread_tol:
        reasons.append(f"spread (p90-min)/median {stats.spread:.0%} (> {spread_tol:.0%})")
    return bool(reasons), "; ".join(reasons)


def run_to_run(round_medians: Sequence[float]) -> float:
    """The run-to-run spread of a timing: the interquartile range of its round medians over their median (what a
    margin between two timings must exceed to count)."""
    rr = sorted(round_medians)
    mid = percentile(rr, 50)
    return (percentile(rr, 75) - percentile(rr, 25)) / mid if mid > 0 else 0.0


def verdict(ratio: float, goal: float, spread: float) -> str:
    """A speed goal (``ratio >= goal``) is reached or missed only when the margin to it exceeds ``spread`` (the
    run-to-run spread of the ratio); a tie otherwise."""
    margin = ratio / goal - 1.0
    if margin > spread:
        return "reached"
    if margin < -spread:
        return f"missed by {goal - ratio:.2f}x"
    return f"tie (margin {margin:+.1%} within the run-to-run spread {spread:.1%})"
