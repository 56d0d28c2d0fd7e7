"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from bench.results import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(path: Path, title: str, ylabel: str, groups: dict[str, dict[str, Figure]]) -> Path:
    """Grouped bars of medians with p10-p90 whiskers; one group per x label, one bar per series."""
    plt = _pyplot()
    series = sorted({s for g in groups.values() for s in g})
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups) * len(series) / 2), 4))
    width = 0.8 / max(len(series), 1)
    for k, name in enumerate(series):
        xs, med, lo, hi = [], [], [], []
        for i, g in enumerate(groups.values()):
            if name in g:
                s = g[name].stats
                xs.append(i + k * width)
                med.append(s.median)
                lo.append(s.median - s.p10)
                hi.append(s.p90 - s.median)
        ax.bar(xs, med, width, yerr=[lo, hi], capsize=2, label=name)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(groups))], list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def suite_plots(figures: list[Figure], out_dir: Path, machine: str) -> list[Path]:
    """One PNG per measured family: preprocess frames/s, decode throughput, kernel speed-ups."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    pre: dict[str, dict[str, Figure]] = defaultdict(dict)
    dec: dict[str, dict[str, Figure]] = defaultdict(dict)
    ratios: dict[str, dict[str, Figure]] = defaultdict(dict)
    for f in figures:
        parts = f.name.split("/")
        if f.unit == "x":
            ratios[f.suite][f.name.split("/", 1)[1]] = f
        elif f.suite == "kernels" and parts[1] == "preprocess":
            pre[f"{parts[2]} {parts[3]}"][parts[4]] = f
        elif f.suite == "decode" and f.unit == "video-s/s":
            dec[parts[1]][parts[2]] = f
    if pre:
        written.append(_bars(out_dir / "kernels_preprocess.png",
                             f"preprocess -> 224² NCHW fp32 (median, p10-p90)\n{machine}", "frames/s", pre))
    if dec:
        written.append(_bars(out_dir / "decode.png", f"decode throughput (median, p10-p90)\n{machine}",
                             "clip seconds per second", dec))
    for suite, figs in ratios.items():
        written.append(_bars(out_dir / f"{suite}_ratios.png", f"{suite}: same-run ratios\n{machine}",
                             "x (higher is better)", {name: {"ratio": f} for name, f in figs.items()}))
    return written
