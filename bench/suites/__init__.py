"""Bench suites. Each module exposes ``steps(cfg) -> int`` (progress-bar length) and
``run(cfg, tick) -> SuiteResult``; ``tick(label)`` advances the bar by one step."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.results import Figure

# in the order ``python -m bench`` runs them
IMPLEMENTED = ("kernels", "decode", "models", "e2e", "load")


@dataclass(frozen=True)
class RunConfig:
    quick: bool = False
    threads: int = os.cpu_count() or 1
    repeats: int = 7
    min_time: float = 0.2        # seconds each repetition keeps calling its path


@dataclass
class SuiteResult:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Tick = Callable[[str], None]


def module(name: str):
    """The suite module ``bench.suites.<name>`` (imported lazily: suites pull in cv2, av, ...)."""
    if name not in IMPLEMENTED:
        raise KeyError(name)
    import importlib

    return importlib.import_module(f"bench.suites.{name}")
