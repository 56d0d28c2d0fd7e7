"""``python -m bench compare OLD.json NEW.json [--threshold-k K] [--floor F]``

Per figure present in both runs (matched by name, same unit and direction):

    r = new / old   for figures where higher is better (throughputs, same-run ratios)
    r = old / new   for figures where lower is better (latencies)

so r > 1 is always an improvement. The noise threshold comes from both runs' measured spreads
(``spread = (p90 - p10) / (2 median)`` over the repetitions, see bench.timing.Stats)::

    t = max(floor, k * sqrt(spread_old**2 + spread_new**2))
    regression   if r < 1 / (1 + t)
    improvement  if r > 1 + t

k defaults to 2 and floor to 5%. The spread of single repetitions is used, not the (smaller)
uncertainty of the medians, on purpose: a run's repetition-to-repetition swing is the best
measure of the machine's noise we have, and a noisy run should flag only large changes.

Which figures gate the exit status (``--gate``): by default only the same-run ratios (unit
``x``: a kernel over the baseline measured interleaved with it). Absolute throughputs of two
runs on a shared machine differ by whatever else the machine was doing in between (2-5x between
two quick runs on the 2-core development VM), which no within-run spread can see; they are still
compared and marked, but gate only with ``--gate all`` (a dedicated machine).

Same-run ratios still move when other work shares the machine (see bench.load): a suite during
which other processes used more than ``--max-background`` (default 25%) of the CPUs in either run
is *busy*, and its regressions are inconclusive, not gating. Exit status: 1 when a gating figure
regressed, else 2 when only busy suites did (rerun on a quiet machine), else 0.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, replace

from bench.results import Figure, figures_of, load, machine_line

DEFAULT_K = 2.0
DEFAULT_FLOOR = 0.05
DEFAULT_MAX_BACKGROUND = 0.25
GATES = ("ratios", "all")


@dataclass(frozen=True)
class Change:
    name: str
    unit: str
    old: float
    new: float
    ratio: float        # > 1 is better, whatever the figure's direction
    threshold: float    # t of the module docstring
    verdict: str        # "regression" | "improvement" | "same"
    gating: bool        # counts for the exit status
    busy: bool = False  # other work loaded the machine in either run: a regression is inconclusive


def noise_threshold(old: Figure, new: Figure, k: float = DEFAULT_K, floor: float = DEFAULT_FLOOR) -> float:
    return max(floor, k * math.hypot(old.stats.spread, new.stats.spread))


def gates(unit: str, gate: str) -> bool:
    """Whether a figure of this unit gates under ``gate`` (same-run ratios have unit "x")."""
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, got {gate!r}")
    return gate == "all" or unit == "x"


def compare_figure(old: Figure, new: Figure, k: float = DEFAULT_K, floor: float = DEFAULT_FLOOR,
                   gate: str = "ratios") -> Change:
    if (old.unit, old.better) != (new.unit, new.better):
        raise ValueError(f"{old.name}: unit/direction changed ({old.unit}, {old.better}) -> "
                         f"({new.unit}, {new.better})")
    o, n = old.stats.median, new.stats.median
    ratio = n / o if old.better == "higher" else o / n
    t = noise_threshold(old, new, k, floor)
    verdict = "regression" if ratio < 1 / (1 + t) else "improvement" if ratio > 1 + t else "same"
    return Change(old.name, old.unit, o, n, ratio, t, verdict, gates(old.unit, gate))


def busy_suites(doc: dict, max_background: float) -> dict[str, float]:
    """Suites of a result document during which other work used more than max_background of the CPUs."""
    return {name: s["background_cpu"] for name, s in doc.get("suites", {}).items()
            if s.get("background_cpu") is not None and s["background_cpu"] > max_background}


def compare(old: list[Figure], new: list[Figure], k: float = DEFAULT_K, floor: float = DEFAULT_FLOOR,
            gate: str = "ratios", busy: frozenset[str] = frozenset()) -> tuple[list[Change], list[str], list[str]]:
    """Changes of the common figures, then the names only in OLD and only in NEW. Figures of the
    ``busy`` suites never gate."""
    old_by, new_by = {f.name: f for f in old}, {f.name: f for f in new}
    changes = [compare_figure(old_by[n], new_by[n], k, floor, gate) for n in old_by if n in new_by]
    changes = [replace(c, gating=False, busy=True) if old_by[c.name].suite in busy else c for c in changes]
    return changes, [n for n in old_by if n not in new_by], [n for n in new_by if n not in old_by]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--threshold-k", type=float, default=DEFAULT_K, help="k of the noise threshold (default 2)")
    ap.add_argument("--floor", type=float, default=DEFAULT_FLOOR, help="smallest threshold (default 0.05)")
    ap.add_argument("--gate", choices=GATES, default="ratios",
                    help="figures whose regression fails the comparison (default: same-run ratios)")
    ap.add_argument("--max-background", type=float, default=DEFAULT_MAX_BACKGROUND,
                    help="share of the CPUs other work may use during a suite before its regressions "
                         "are inconclusive (default 0.25; 1 never)")
    ap.add_argument("--all", action="store_true", help="list unchanged figures too")
    args = ap.parse_args(argv)
    old_doc, new_doc = load(args.old), load(args.new)
    old_m, new_m = machine_line(old_doc["machine"]), machine_line(new_doc["machine"])
    print(f"old: {args.old} ({old_doc['created']}; {old_m})\nnew: {args.new} ({new_doc['created']}; {new_m})")
    if old_m != new_m:
        print("warning: the runs are from different machines; ratios compare machines, not builds")
    busy_old, busy_new = busy_suites(old_doc, args.max_background), busy_suites(new_doc, args.max_background)
    for label, busy in (("old", busy_old), ("new", busy_new)):
        for suite, share in busy.items():
            print(f"warning: other work used {share:.0%} of the CPUs during the {label} run's {suite} suite: "
                  f"its regressions are inconclusive")
    changes, only_old, only_new = compare(figures_of(old_doc), figures_of(new_doc), args.threshold_k, args.floor,
                                          args.gate, frozenset(busy_old) | frozenset(busy_new))
    print(f"\n{'figure':<52} {'old':>10} {'new':>10} {'unit':<10} {'better x':>8} {'noise t':>7}  verdict")
    for c in changes:
        if args.all or c.verdict != "same":
            verdict = c.verdict.upper() if c.verdict == "regression" and c.gating else c.verdict
            note = ("" if c.gating or c.verdict == "same" else " (machine busy: inconclusive)" if c.busy
                    else " (absolute, not gating)")
            print(f"{c.name:<52} {c.old:>10.4g} {c.new:>10.4g} {c.unit:<10} {c.ratio:>8.3f} {c.threshold:>7.1%}  "
                  f"{verdict}{note}")
    for n in only_old:
        print(f"{n:<52} only in old")
    for n in only_new:
        print(f"{n:<52} only in new")
    counts = {v: sum(c.verdict == v for c in changes) for v in ("regression", "improvement", "same")}
    failing = sum(c.verdict == "regression" and c.gating for c in changes)
    inconclusive = sum(c.verdict == "regression" and c.busy and gates(c.unit, args.gate) for c in changes)
    print(f"\n{len(changes)} figures compared: {counts['regression']} regression(s) ({failing} gating, "
          f"--gate {args.gate}; {inconclusive} inconclusive, machine busy), {counts['improvement']} improvement(s), "
          f"{counts['same']} within noise (k={args.threshold_k}, floor={args.floor:.0%})")
    return 1 if failing else 2 if inconclusive else 0
