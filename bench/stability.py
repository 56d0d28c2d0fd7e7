"""Measurement windows that repeat until two in a row agree, and nearest-rank percentiles.

The load suite's closed-loop measurement (like perf_analyzer's concurrency mode) counts the items
that complete inside fixed windows. A window's throughput moves with the machine's other work and
with which items happened to finish inside it, so a level is measured window after window until
two consecutive windows agree: |a - b| <= tolerance * max(a, b), tolerance 5% by default; after
``max_windows`` it gives up and says so (the level's figures are then marked unstable).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

W = TypeVar("W")


def agree(a: float, b: float, tolerance: float) -> bool:
    """Two window throughputs agree when they differ by at most ``tolerance`` of the larger."""
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


@dataclass
class Windows(Generic[W]):
    windows: list[W]
    stable: bool        # the last two windows agree


def until_stable(next_window: Callable[[], W], rate: Callable[[W], float], *, tolerance: float = 0.05,
                 max_windows: int = 6) -> Windows[W]:
    """Call ``next_window`` until the rates of the last two windows agree, or ``max_windows``."""
    if max_windows < 2:
        raise ValueError("two windows at least are needed to compare")
    windows = [next_window()]
    while len(windows) < max_windows:
        windows.append(next_window())
        if agree(rate(windows[-2]), rate(windows[-1]), tolerance):
            return Windows(windows, stable=True)
    return Windows(windows, stable=False)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``q`` % of the samples at or below it.

    Always one of the measured latencies (no interpolation between two items), as load
    generators report them: p50 of [1..10] is 5, p90 is 9, p99 is 10.
    """
    if not samples:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    ordered = sorted(samples)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]
