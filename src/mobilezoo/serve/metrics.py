"""A few Prometheus metrics in the text exposition format (version 0.0.4), written by hand: no extra dependency.

Counters, gauges and histograms with a fixed set of labels each; safe to update from any thread.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

__all__ = ["CONTENT_TYPE", "Counter", "Gauge", "Histogram", "Registry"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, doc, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in items)]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = (), fn: Callable[[], float] | None = None):
        super().__init__(name, doc, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}
        self._fn = fn  # read the value at scrape time (e.g. a queue's depth)

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)

    def render(self) -> list[str]:
        if self._fn is not None:
            return [*self.header(), f"{self.name} {_num(self._fn())}"]
        with self._lock:
            items = sorted(self._values.items())
        return [*self.header(), *(f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in items)]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: Iterable[float], labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, doc, labelnames)
        self.buckets = sorted(float(b) for b in buckets)
        self._data: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # key -> (counts per bucket, [sum])
        if not labelnames:
            self._data[()] = ([0] * (len(self.buckets) + 1), [0.0])

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        i = bisect.bisect_left(self.buckets, value)  # first bucket with value <= upper bound
        with self._lock:
            counts, total = self._data.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[i] += 1
            total[0] += value

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, (list(c), s[0])) for k, (c, s) in self._data.items())
        for key, (counts, total) in items:
            cum = 0
            for bound, n in zip([*self.buckets, math.inf], counts):
                cum += n
                le = 'le="' + _num(bound) + '"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {cum}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_num(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {cum}")
        return lines


M = TypeVar("M", bound=_Metric)


class Registry:
    def __init__(self) -> None:
        self.metrics: list[_Metric] = []

    def add(self, metric: M) -> M:
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.render()) + "\n"
