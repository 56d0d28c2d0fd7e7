"""``python -m bench [--quick] [--suite ...] [--out DIR]``: run suites with a progress bar and
write ``<stem>.json``, ``<stem>.md`` and PNG plots into the output directory."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import load, machine, plots
from bench.results import Report, machine_line
from bench.suites import IMPLEMENTED, RunConfig, module

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse_suites(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return list(IMPLEMENTED)
    unknown = [n for n in names if n not in IMPLEMENTED]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown suite(s) {unknown}; known: {IMPLEMENTED}")
    return names


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--quick", action="store_true",
                    help="smaller shapes, fewer repetitions (every suite in well under 5 minutes on 2 cores)")
    ap.add_argument("--suite", type=parse_suites, default=list(IMPLEMENTED),
                    help=f"comma-separated suites or 'all' (default): {', '.join(IMPLEMENTED)}")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default bench/results)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads of the all-cores (per-machine) figures; comparisons run on one")
    ap.add_argument("--repeats", type=int, default=None, help="repetitions per figure (default 5 quick, 9 full)")
    ap.add_argument("--no-plots", action="store_true", help="JSON and markdown only")
    ap.add_argument("--label", default=None, help="free text stored in the JSON (what the run is for)")


def config(args: argparse.Namespace) -> RunConfig:
    repeats = args.repeats or (5 if args.quick else 9)
    return RunConfig(quick=args.quick, threads=args.threads, repeats=repeats,
                     min_time=0.1 if args.quick else 0.2)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    # see bench/preprocess.py: sleeping OpenMP workers, or idle pools steal the cores being timed
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    cfg = config(args)
    report = Report(machine=machine.describe(), argv=["python -m bench", *argv], quick=cfg.quick,
                    label=args.label)
    t_run = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        for name in args.suite:
            suite = module(name)
            task = progress.add_task(name, total=suite.steps(cfg))
            t0, cpu0 = time.perf_counter(), load.sample()
            result = suite.run(cfg, lambda label, task=task, name=name: progress.update(
                task, advance=1, description=f"{name}: {label}"))
            report.figures += result.figures
            report.suites[name] = {"status": "ok", "seconds": time.perf_counter() - t0, "notes": result.notes,
                                   "background_cpu": load.background_share(cpu0, load.sample())}
    stem = "bench-" + time.strftime("%Y%m%d-%H%M%S") + ("-quick" if cfg.quick else "")
    report.seconds = time.perf_counter() - t_run
    js, md = report.write(args.out, stem)
    pngs = [] if args.no_plots else plots.suite_plots(report.figures, args.out / stem,
                                                      machine_line(report.machine))
    print(md.read_text())
    print(f"wrote {js}\nwrote {md}" + "".join(f"\nwrote {p}" for p in pngs))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 epilog="Also: python -m bench compare OLD.json NEW.json; "
                                        "python -m bench plan --profile RESULTS.json --traffic TRAFFIC.yaml "
                                        "--p99-ms N (each with --help).")
    add_arguments(ap)
    return run(ap.parse_args(argv), argv)
