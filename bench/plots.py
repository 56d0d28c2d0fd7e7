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


def _models(path: Path, machine: str, figs: list[Figure]) -> Path:
    """Throughput vs batch size, one panel per model (units differ), one line per backend."""
    plt = _pyplot()
    models = sorted({f.params["model"] for f in figs})
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [f for f in figs if f.params["model"] == model]
        for backend in sorted({f.params["backend"] for f in mine}):
            line = sorted((f for f in mine if f.params["backend"] == backend), key=lambda f: f.params["batch"])
            xs, st = [f.params["batch"] for f in line], [f.stats for f in line]
            ax.errorbar(xs, [s.median for s in st], yerr=[[s.median - s.p10 for s in st], [s.p90 - s.median for s in st]],
                        marker="o", capsize=2, label=backend)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(mine[0].unit)
        ax.set_title(model, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"models: throughput vs batch size (median, p10-p90)\n{machine}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stages(path: Path, machine: str, kinds: dict[str, dict[str, Figure]]) -> Path:
    """One panel per item kind: the session's rate beside each stage's alone, in the kind's unit."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3.4), squeeze=False)
    for ax, (kind, paths) in zip(axes[0], kinds.items()):
        gpu = sorted(n for n in paths if n.startswith("session-gpu"))  # the same items on a GPU Session
        names = ["session", *gpu, *sorted(n for n in paths if n != "session" and n not in gpu)]
        st = [paths[n].stats for n in names]
        ax.bar(names, [s.median for s in st], yerr=[[s.median - s.p10 for s in st], [s.p90 - s.median for s in st]],
               capsize=2, color=["black", *["tab:green"] * len(gpu), *["tab:blue"] * (len(names) - 1 - len(gpu))])
        ax.set_yscale("log")
        ax.set_ylabel(paths[names[0]].unit)
        ax.set_title(kind, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    fig.suptitle(f"end to end (session, black; on the GPU, green) vs each stage alone on the same items "
                 f"(median, p10-p90)\n{machine}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _load(path: Path, machine: str, figs: dict[str, Figure]) -> Path:
    """p50 and p99 latency vs items/s, one line per configuration, points labelled by concurrency."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    configs = sorted({name.split("/")[1] for name in figs if name.endswith("/items_per_s")})
    for config in configs:
        levels = sorted({f.params["concurrency"] for n, f in figs.items() if n.startswith(f"load/{config}/")})
        for q, style in (("p50", "-o"), ("p99", "--s")):
            pts = [(figs[f"load/{config}/c{c}/items_per_s"].stats.median, figs[f"load/{config}/c{c}/{q}_ms"].stats.median, c)
                   for c in levels if f"load/{config}/c{c}/{q}_ms" in figs]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{config} {q}")
            for x, y, c in pts:
                ax.annotate(f"c{c}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.set_yscale("log")
    ax.set_xlabel("items/s (median of the agreeing windows)")
    ax.set_ylabel("latency ms")
    ax.set_title(f"load: latency vs throughput per concurrency\n{machine}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def suite_plots(figures: list[Figure], out_dir: Path, machine: str) -> list[Path]:
    """One PNG per measured family: preprocess frames/s (CPU, and GPU when measured), GPU bandwidth
    as a fraction of copy, decode throughput, model throughput vs batch, end-to-end vs its stages,
    load latency vs throughput, same-run speed-ups."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    pre: dict[str, dict[str, Figure]] = defaultdict(dict)
    dec: dict[str, dict[str, Figure]] = defaultdict(dict)
    ratios: dict[str, dict[str, Figure]] = defaultdict(dict)
    e2e: dict[str, dict[str, Figure]] = defaultdict(dict)
    models = [f for f in figures if f.suite == "models" and f.unit not in ("x", "ms", "audio-s/s")]
    load = {f.name: f for f in figures if f.suite == "load"}
    gpu_pre: dict[str, dict[str, Figure]] = defaultdict(dict)
    gpu_copy: dict[str, dict[str, Figure]] = defaultdict(dict)
    for f in figures:
        parts = f.name.split("/")
        if f.suite == "kernels" and parts[1] == "gpu":
            # kernels/gpu/<op>[/<config>...]/<path>, <path>/bandwidth, <path>÷copy, <path>÷dram_copy,
            # <path>÷torch
            case, last = f.name[len("kernels/gpu/"):].rsplit("/", 1)
            if last.endswith(("÷copy", "÷dram_copy")):
                path, copy = last.split("÷")
                gpu_copy[case][path if copy == "copy" else f"{path} (1 GiB copy)"] = f
            elif parts[2] == "preprocess" and f.unit == "frames/s":
                gpu_pre[f"{parts[3]} {parts[4]}"][last] = f
            elif f.unit == "x":
                ratios[f.suite][f.name.split("/", 1)[1]] = f
        elif f.unit == "x":
            ratios[f.suite][f.name.split("/", 1)[1]] = f
        elif f.suite == "kernels" and parts[1] == "preprocess":
            pre[f"{parts[2]} {parts[3]}"][parts[4]] = f
        elif f.suite == "decode" and f.unit == "video-s/s":
            dec[parts[1]][parts[2]] = f
        elif f.suite == "e2e":
            e2e[parts[1]][parts[2]] = f
    if pre:
        written.append(_bars(out_dir / "kernels_preprocess.png",
                             f"preprocess -> 224² NCHW fp32 (median, p10-p90)\n{machine}", "frames/s", pre))
    if gpu_pre:
        written.append(_bars(out_dir / "kernels_gpu_preprocess.png",
                             f"GPU preprocess -> 224² NCHW fp32 (median, p10-p90)\n{machine}", "frames/s", gpu_pre))
    if gpu_copy:
        written.append(_bars(out_dir / "kernels_gpu_bandwidth.png",
                             f"GPU kernels: achieved bandwidth ÷ same-run device copy of the same bytes (and of 1 GiB)"
                             f" (median, p10-p90)\n{machine}",
                             "fraction of copy", gpu_copy))
    if dec:
        written.append(_bars(out_dir / "decode.png", f"decode throughput (median, p10-p90)\n{machine}",
                             "clip seconds per second", dec))
    if models:
        written.append(_models(out_dir / "models.png", machine, models))
    if e2e:
        written.append(_stages(out_dir / "e2e_stages.png", machine, e2e))
    if any(n.endswith("/items_per_s") for n in load):
        written.append(_load(out_dir / "load.png", machine, load))
    for suite, figs in ratios.items():
        written.append(_bars(out_dir / f"{suite}_ratios.png", f"{suite}: same-run ratios\n{machine}",
                             "x (higher is better)", {name: {"ratio": f} for name, f in figs.items()}))
    return written
