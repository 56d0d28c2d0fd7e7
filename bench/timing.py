"""Timing shared by every suite: warm-up, interleaved repetitions, robust statistics.

Every path of one comparison is repeated round-robin (path A, path B, ..., then again), so that a
burst of background load lands on all of them alike; a repetition runs its path for at least
``min_time`` seconds and records the mean seconds per call. Statistics are quantiles, never means:
the development machine is shared and its noise has a long tail.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stats:
    """Quantiles of repeated measurements.

    ``spread`` is the relative half-width of the p10-p90 interval, ``(p90 - p10) / (2 median)``:
    about 1.28 sigma / median for normal noise, and what :mod:`bench.compare` derives its noise
    threshold from.
    """

    median: float
    p10: float
    p90: float
    spread: float
    n: int

    @classmethod
    def of(cls, samples) -> Stats:
        a = np.asarray(samples, dtype=np.float64)
        if a.size == 0:
            raise ValueError("no samples")
        p10, med, p90 = (float(q) for q in np.percentile(a, [10, 50, 90]))
        spread = (p90 - p10) / (2 * abs(med)) if med else math.inf
        return cls(median=med, p10=p10, p90=p90, spread=spread, n=int(a.size))


def in_flight(fn: Callable[[], object], threads: int, calls: int = 1) -> Callable[[], None]:
    """A call that runs ``fn`` ``calls`` times on each of ``threads`` threads at once: items in
    flight together, as a Session's workers run them (one call does ``threads * calls`` items)."""
    from concurrent.futures import ThreadPoolExecutor

    def call() -> None:
        with ThreadPoolExecutor(threads) as pool:
            for f in [pool.submit(lambda: [fn() for _ in range(calls)]) for _ in range(threads)]:
                f.result()
    return call


def seconds_per_call(fn: Callable[[], object], min_time: float) -> float:
    """Mean seconds per call of ``fn`` over as many calls as fit in ``min_time`` (at least one)."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / calls


def measure(
    paths: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    min_time: float,
    warmup: int = 1,
    on_repeat: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every path, ``repeats`` samples each, repeats interleaved round-robin.

    ``warmup`` untimed calls per path come first (allocations, thread pools, lazy imports, caches).
    ``on_repeat`` is called after each round (progress bars).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    for fn in paths.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            samples[name].append(seconds_per_call(fn, min_time))
        if on_repeat is not None:
            on_repeat()
    return samples


def rates(seconds: list[float], items_per_call: float) -> list[float]:
    """Throughput samples (items/s) from seconds-per-call samples."""
    return [items_per_call / s for s in seconds]
