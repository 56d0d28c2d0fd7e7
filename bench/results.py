"""Bench results: figures, the versioned JSON document and its markdown summary.

A *figure* is one measured quantity with its repetition samples, its unit and which direction is
better (``"higher"`` for throughputs and same-run ratios, ``"lower"`` for latencies), so that
``bench compare`` never has to guess. A figure that is a stage's per-machine throughput carries
``stage`` and ``items_per_call`` (the batch it was measured at), which ``bench plan`` reads.

JSON layout (``"schema": "moderation-engine-bench/1"``)::

    {"schema", "created" (UTC ISO 8601), "argv", "quick", "seconds", "label", "machine": {...},
     "suites": {name: {"status": "ok", "seconds", "notes",
                       "background_cpu" (share of the CPUs other work used meanwhile, bench.load)}},
     "figures": [{"name", "suite", "unit", "better", "median", "p10", "p90", "spread", "n",
                  "samples", "params", "stage"?, "items_per_call"?}]}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.timing import Stats

SCHEMA = "moderation-engine-bench/1"
BETTER = ("higher", "lower")


@dataclass
class Figure:
    name: str                     # unique in a run, "/"-separated: suite/what/config/path
    suite: str
    unit: str
    better: str                   # "higher" | "lower"
    samples: list[float]
    params: dict = field(default_factory=dict)
    stage: str | None = None      # plan stage whose per-machine throughput this is
    items_per_call: float | None = None  # stage items per timed call (the batch)

    def __post_init__(self):
        if self.better not in BETTER:
            raise ValueError(f"better must be one of {BETTER}, got {self.better!r}")

    @property
    def stats(self) -> Stats:
        return Stats.of(self.samples)

    def to_json(self) -> dict:
        s = self.stats
        d = {"name": self.name, "suite": self.suite, "unit": self.unit, "better": self.better,
             "median": s.median, "p10": s.p10, "p90": s.p90, "spread": s.spread, "n": s.n,
             "samples": list(self.samples), "params": self.params}
        if self.stage is not None:
            d["stage"] = self.stage
            d["items_per_call"] = self.items_per_call
        return d

    @classmethod
    def from_json(cls, d: dict) -> Figure:
        return cls(name=d["name"], suite=d["suite"], unit=d["unit"], better=d["better"],
                   samples=list(d["samples"]), params=d.get("params", {}), stage=d.get("stage"),
                   items_per_call=d.get("items_per_call"))


def ratio_figure(name: str, suite: str, num: Figure, den: Figure, params: dict | None = None) -> Figure:
    """Same-run ratio ``num / den`` of two throughput figures, one sample per interleaved round.

    Round i of both paths ran back to back, so the per-round ratio cancels most of the machine's
    load swings; its quantiles are tighter than the ratio of two medians would suggest.
    """
    if len(num.samples) != len(den.samples):
        raise ValueError(f"{num.name} and {den.name} have different repetition counts")
    return Figure(name=name, suite=suite, unit="x", better="higher",
                  samples=[a / b for a, b in zip(num.samples, den.samples)], params=params or {})


@dataclass
class Report:
    machine: dict
    argv: list[str]
    quick: bool
    suites: dict[str, dict] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    seconds: float | None = None  # wall time of the whole run
    label: str | None = None      # what the run is for (e.g. the sample profile), when given

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "created": self.created, "argv": self.argv, "quick": self.quick,
                "seconds": self.seconds, "label": self.label, "machine": self.machine, "suites": self.suites,
                "figures": [f.to_json() for f in self.figures]}

    def write(self, out_dir: Path, stem: str) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        js.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        md.write_text(markdown(self))
        return js, md


def load(path: str | Path) -> dict:
    """A result document, refused unless its schema is the one this code reads."""
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {doc.get('schema')!r}, expected {SCHEMA!r}")
    return doc


def figures_of(doc: dict) -> list[Figure]:
    return [Figure.from_json(d) for d in doc["figures"]]


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"


def machine_line(machine: dict) -> str:
    gpu = "; ".join(g["name"] + (f" (driver {g['driver']})" if g.get("driver") else "")
                    for g in machine.get("gpus", [])) or "no GPU"
    return (f"{machine.get('cpu_model', '?')}, {machine.get('cores', '?')} cores, "
            f"{machine.get('memory_gib', '?')} GiB, {gpu}")


def markdown(report: Report) -> str:
    lines = [f"# Bench results {report.created}", "",
             f"Machine: {machine_line(report.machine)}. "
             f"Run: `{' '.join(report.argv) or 'python -m bench'}`"
             f"{' (quick)' if report.quick else ''}"
             f"{f', {report.seconds:.0f} s' if report.seconds is not None else ''}."
             f"{f' Label: {report.label}.' if report.label else ''}", "",
             "Quantiles over interleaved repetitions; spread = (p90 - p10) / (2 median). "
             "Absolute figures hold for this machine only; the ratios are same-run.", ""]
    lines += ["| suite | status | seconds | CPUs used by other work | notes |", "|---|---|---|---|---|"]
    for name, s in report.suites.items():
        secs = f"{s['seconds']:.1f}" if "seconds" in s else ""
        other = f"{s['background_cpu']:.0%}" if s.get("background_cpu") is not None else ""
        lines.append(f"| {name} | {s['status']} | {secs} | {other} | {'; '.join(s.get('notes', []))} |")
    for suite in report.suites:
        figs = [f for f in report.figures if f.suite == suite]
        if not figs:
            continue
        lines += ["", f"## {suite}", "", "| figure | median | p10 | p90 | spread | unit | better |",
                  "|---|---|---|---|---|---|---|"]
        for f in figs:
            s = f.stats
            lines.append(f"| {f.name} | {_num(s.median)} | {_num(s.p10)} | {_num(s.p90)} | "
                         f"{s.spread:.1%} | {f.unit} | {f.better} |")
    return "\n".join(lines) + "\n"
