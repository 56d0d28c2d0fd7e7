"""How busy the machine was with other work while a suite ran, from /proc/stat and os.times().

Same-run ratios cancel load that hits both paths alike, but not load that changes what a path
costs: another process on the sibling core slows a SIMD-bound kernel more than a memory-bound
baseline. On the 2-core development VM such load moved single-thread ratios by up to 2x between
two runs of one build, with tight spreads inside each run; ``bench compare`` reads this figure
to say when a comparison is not conclusive.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSample:
    busy_s: float   # CPU seconds spent busy by all processes (and stolen by the hypervisor)
    own_s: float    # CPU seconds of this process and its waited-for children
    wall_s: float


def sample() -> CpuSample | None:
    """None where /proc/stat is unreadable (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    t = os.times()
    return CpuSample(busy_s=(user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
                     own_s=t.user + t.system + t.children_user + t.children_system,
                     wall_s=time.monotonic())


def background_share(start: CpuSample | None, end: CpuSample | None, cores: int | None = None) -> float | None:
    """Fraction of the machine's CPU time used by other work between two samples (0 = idle)."""
    if start is None or end is None or end.wall_s <= start.wall_s:
        return None
    cores = cores or os.cpu_count() or 1
    other = (end.busy_s - start.busy_s) - (end.own_s - start.own_s)
    return min(1.0, max(0.0, other / ((end.wall_s - start.wall_s) * cores)))
