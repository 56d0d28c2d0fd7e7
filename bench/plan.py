"""``python -m bench plan --profile RESULTS.json [--profile ...] --traffic TRAFFIC.yaml --p99-ms N
[--device auto|cpu|gpu] [--plot PNG]``

Machines per pipeline stage for a traffic mix, from a measured profile.

The profile is one or more ``python -m bench`` result files run on the machine type to be bought
(one CPU node, or one GPU machine with its host CPUs, as their ``machine`` section says; several
files, e.g. the kernels and the models runs of ``bench/gpu_check.sh``, must come from the same
machine type). A stage is planned from the figures that carry ``"stage"``: their median
throughput per machine, measured at ``items_per_call`` items per call (several batch sizes make
the latency curve). Stages and the figures they read:

  decode          decode suite, the figure whose codec, sampling and resolution match the traffic
                  (video-s/s for fps=V / all sampling; videos/s for uniform=N)
  preprocess      kernels suite, fused preprocessing at the traffic's resolution (frames/s)
  audio_frontend  kernels suite, yamnet_patches (audio-s/s)
  image_model     models suite, open_nsfw on the default backend (frames/s, per batch size)
  audio_model     models suite, YAMNet on the default backend (audio-s/s: 0.48 s of audio per patch)
  text            models suite, the text classifier (profanity, scikit-learn; texts/s)
  text_model      models suite, MiniLM on the default backend (texts/s)
``--device gpu`` plans GPU machines: the GPU stages (preprocess, image_model, audio_model,
text_model) read the figures measured on the GPU (``params.device`` cuda: the default CUDA
kernels, the torch CUDA backend called with device arrays as the device pipeline does), the
others (decode, audio_frontend, text) the host CPUs' figures, as a ``Session(device="cuda:0")``
runs them. ``auto`` (default) is ``gpu`` when the profile holds GPU stage figures.
A stage absent from the profile is reported as missing, never guessed.

Every machine runs the whole pipeline, as a ``Session`` does: its stages share the machine.
On a CPU node they share the cores; on a GPU machine the host stages (decode, audio_frontend,
text) share the host CPUs and the GPU stages share the GPU, the two running side by side. Per
stage, with load L at peak (items/s), per-machine throughput X, headroom h, target u::

    required    = L (1 + h) / (X u)                         (machine-loads: the stage alone needs
                                                              ceil(required) machines, "alone")
    machines    = ceil(max over resources of the sum of their stages' required)
    share       = L / (machines X)                          (of its resource, at the peak, without headroom)
    utilisation = sum of the shares of a resource's stages  (rho)
    wait        = sum(lam s^2) / (2 (1 - sum(lam s)))       (Pollaczek-Khinchine, per resource: lam
                                                              a stage's calls/s per machine, s its call)
    latency     = service + wait

``s`` = ``call`` = items_per_call / X_p10 (a call at the slow end of the measured repetitions: p90 of
the call time; the bench's few repetitions cannot estimate a p99, so this is the stand-in), and
lam = L / (machines items_per_call). ``service``
is the work of one item of the path: a video of the mix's p99 duration for decode
(duration / X_p10, or one call for uniform sampling) and ceil(its frames / batch) calls for the
frame stages; one call for images, audio and text. Of a stage's batch sizes the planner takes the
highest-throughput one whose latency fits in --p99-ms on the shared machines, else the fastest one
(flagged), the stages choosing in turn until no choice changes.
Path latency (video: decode + preprocess + image_model; image: preprocess + image_model; audio:
audio_frontend + audio_model; text: text + text_model) is checked against --p99-ms.
The bottleneck is the stage with the largest machine-load (where capacity goes). Not counted: the
host time the GPU stages spend enqueueing their work (one host thread drove each GPU figure).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.results import Figure, figures_of, load, machine_line
from bench.traffic import Traffic, load_traffic

EPS = 1e-9  # keeps ceil(3600 / 720) at 5 despite floating point


@dataclass(frozen=True)
class StageDef:
    name: str
    suite: str
    unit: Callable[[Traffic], str]
    load: Callable[[Traffic], float]
    matches: Callable[[Figure, Traffic], bool]
    per_video: bool = False  # service of one video counts ceil(frames / batch) calls


def _frames_per_s(t: Traffic) -> float:
    return t.videos_per_s * t.mean_frames_per_video + t.images_per_s


def _decode_unit(t: Traffic) -> str:
    return "videos/s" if t.sampling[0] == "uniform" else "video-s/s"


def _decode_load(t: Traffic) -> float:
    return t.videos_per_s if t.sampling[0] == "uniform" else t.videos_per_s * t.mean_duration


def _decode_matches(f: Figure, t: Traffic) -> bool:
    mode, value = t.sampling
    wanted = "all" if mode == "all" else f"{mode}={value:g}"
    return (f.params.get("codec") == t.video_codec and f.params.get("sampling") == wanted
            and f.params.get("resolution") == t.resolution)


STAGES = (
    StageDef("decode", "decode", _decode_unit, _decode_load, _decode_matches),
    StageDef("preprocess", "kernels", lambda t: "frames/s", _frames_per_s,
             lambda f, t: f.params.get("resolution") == t.resolution, per_video=True),
    StageDef("audio_frontend", "kernels", lambda t: "audio-s/s", lambda t: t.audio_seconds_per_s,
             lambda f, t: True),
    StageDef("image_model", "models", lambda t: "frames/s", _frames_per_s, lambda f, t: True, per_video=True),
    StageDef("audio_model", "models", lambda t: "audio-s/s", lambda t: t.audio_seconds_per_s, lambda f, t: True),
    StageDef("text", "models", lambda t: "texts/s", lambda t: t.texts_per_s, lambda f, t: True),
    StageDef("text_model", "models", lambda t: "texts/s", lambda t: t.texts_per_s, lambda f, t: True),
)
GPU_STAGES = ("preprocess", "image_model", "audio_model", "text_model")
DEVICES = ("auto", "cpu", "gpu")


def on_gpu(f: Figure) -> bool:
    return str(f.params.get("device", "cpu")).startswith("cuda")


def resolve_device(figures: list[Figure], device: str) -> str:
    """``auto`` -> ``gpu`` when some GPU stage figure was measured on a GPU, else ``cpu``."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    return "gpu" if any(f.stage in GPU_STAGES and on_gpu(f) for f in figures) else "cpu"


PATHS = {
    "video": (("decode", "preprocess", "image_model"), lambda t: t.videos_per_s),
    "image": (("preprocess", "image_model"), lambda t: t.images_per_s),
    "audio": (("audio_frontend", "audio_model"), lambda t: t.audio_seconds_per_s),
    "text": (("text", "text_model"), lambda t: t.texts_per_s),
}


@dataclass(frozen=True)
class StagePlan:
    stage: str
    unit: str
    load: float               # items/s at the peak
    figure: str
    items_per_call: float
    per_machine: float        # median throughput of one machine
    machines: int             # the stage alone: ceil(required)
    required: float           # machine-loads before rounding up
    utilisation: float        # its share of its resource on the plan's machines, at the peak
    call_ms: float            # one call at the p10 throughput
    latency_ms: dict[str, float]  # per path through this stage: service + wait
    fits: bool                # some latency within the budget at this batch
    source: Figure | None = field(default=None, repr=False, compare=False)  # the figure planned from


@dataclass
class Plan:
    traffic: Traffic
    p99_ms: float
    device: str = "cpu"  # what the machines are: CPU nodes or GPU machines
    stages: list[StagePlan] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)  # (stage, why)

    def resource(self, stage: str) -> str:
        """What a stage runs on: "gpu" for the GPU stages of a GPU plan, else "host"."""
        return "gpu" if self.device == "gpu" and stage in GPU_STAGES else "host"

    def per_resource(self, by_stage: dict[str, float]) -> dict[str, float]:
        """Per-stage values summed by the resource each stage runs on."""
        sums: dict[str, float] = {}
        for stage, value in by_stage.items():
            sums[self.resource(stage)] = sums.get(self.resource(stage), 0.0) + value
        return sums

    def machine_loads(self) -> dict[str, float]:
        """Per resource, the sum of its stages' ``required`` (machine-loads before rounding)."""
        return self.per_resource({s.stage: s.required for s in self.stages})

    @property
    def total_machines(self) -> int:
        """Machines running the whole pipeline: the busiest resource's load, rounded up."""
        return machines_for(self.machine_loads())

    def utilisation(self) -> dict[str, float]:
        """Per resource, the fraction of it the peak load uses on :attr:`total_machines`."""
        return self.per_resource({s.stage: s.utilisation for s in self.stages})

    @property
    def bottleneck(self) -> StagePlan | None:
        return max(self.stages, key=lambda s: s.required, default=None)

    def path_latency(self, path: str) -> tuple[float | None, list[str]]:
        """(latency ms, stages missing from the profile) of one item through the path."""
        by = {s.stage: s for s in self.stages}
        names = PATHS[path][0]
        absent = [n for n in names if n not in by]
        return (None if absent else sum(by[n].latency_ms[path] for n in names)), absent


def machines_for(loads: dict[str, float]) -> int:
    """Machines for per-resource machine-loads: the busiest resource's, rounded up."""
    return math.ceil(max(loads.values(), default=0.0) - EPS)


def machines_needed(load: float, per_machine: float, headroom: float, target: float) -> tuple[int, float]:
    required = load * (1 + headroom) / (per_machine * target)
    return math.ceil(required - EPS), required


def pk_wait(calls: Iterable[tuple[float, float]]) -> float:
    """Mean queueing delay on a resource fed by classes of deterministic calls, ``(calls/s, seconds
    per call)`` each: Pollaczek-Khinchine, ``sum(lam s^2) / (2 (1 - sum(lam s)))``; for one class
    the M/D/1 ``rho / (2 (1 - rho)) * s``. Short calls queue behind long ones: every class waits
    the same."""
    calls = list(calls)
    rho = sum(lam * s for lam, s in calls)
    return math.inf if rho >= 1 else sum(lam * s * s for lam, s in calls) / (2 * (1 - rho))


def _service_s(stage: StageDef, fig: Figure, t: Traffic, path: str) -> float:
    p10 = fig.stats.p10
    call = fig.items_per_call / p10
    if stage.name == "decode":
        return 1 / p10 if t.sampling[0] == "uniform" else t.p99_duration / p10
    if stage.per_video and path == "video":
        return math.ceil(t.frames_per_video(t.p99_duration) / fig.items_per_call - EPS) * call
    return call


def make_plan(figures: list[Figure], t: Traffic, p99_ms: float, device: str = "cpu") -> Plan:
    """The plan for CPU nodes (``device="cpu"``) or GPU machines (``"gpu"``: see the module doc).

    Each stage takes, of its measured batch sizes, the highest-throughput one whose latency fits
    the budget on the machines the whole plan needs, with the other stages' choices sharing them;
    the stages re-choose in turn until no choice changes (a few rounds)."""
    plan = Plan(t, p99_ms, device)
    options: dict[str, list[Figure]] = {}
    for stage in STAGES:
        if stage.load(t) <= 0:
            continue
        gpu = device == "gpu" and stage.name in GPU_STAGES
        ours = [f for f in figures if f.stage == stage.name and on_gpu(f) == gpu]
        figs = [f for f in ours if f.unit == stage.unit(t) and stage.matches(f, t)]
        if figs:
            options[stage.name] = figs
            continue
        others = sorted({" ".join(str(f.params[k]) for k in ("codec", "sampling", "resolution") if k in f.params)
                         for f in ours})
        where = "GPU " if gpu else ""
        why = (f"no {stage.unit(t)} figure matching the traffic (profile has: {', '.join(others)})" if others
               else f"no {where}figure in the profile (the {stage.suite} suite measures it"
                    + (" on a GPU: bench/gpu_bench.py)" if gpu else ")"))
        plan.missing.append((stage.name, why))
    chosen = {name: max(figs, key=lambda f: f.stats.median) for name, figs in options.items()}
    for _ in range(4 * len(options) + 1):
        changed = False
        for name, figs in options.items():
            best = _pick(plan, chosen, name, figs)
            changed |= best is not chosen[name]
            chosen[name] = best
        if not changed:
            break
    plan.stages = _evaluate(plan, chosen)
    return plan


def _pick(plan: Plan, chosen: dict[str, Figure], name: str, figs: list[Figure]) -> Figure:
    """Of ``figs``, the highest-throughput one whose latency fits with the others' ``chosen``;
    the fastest (lowest worst latency) when none fits."""
    tried = [(f, next(s for s in _evaluate(plan, {**chosen, name: f}) if s.stage == name)) for f in figs]
    fitting = [(f, s) for f, s in tried if s.fits]
    if fitting:
        return max(fitting, key=lambda fs: fs[1].per_machine)[0]
    return min(tried, key=lambda fs: max(fs[1].latency_ms.values(), default=0.0))[0]


def _evaluate(plan: Plan, chosen: dict[str, Figure]) -> list[StagePlan]:
    """The stages planned from ``chosen`` figures on shared machines (the module doc's formulas)."""
    t = plan.traffic
    defs = {d.name: d for d in STAGES}
    required = {n: machines_needed(defs[n].load(t), f.stats.median, t.headroom, t.utilisation_target)[1]
                for n, f in chosen.items()}
    machines = max(machines_for(plan.per_resource(required)), 1)
    calls: dict[str, list[tuple[float, float]]] = {}
    for n, f in chosen.items():  # per machine: calls/s and seconds per call (slow end: p10 throughput)
        calls.setdefault(plan.resource(n), []).append(
            (defs[n].load(t) / (machines * f.items_per_call), f.items_per_call / f.stats.p10))
    wait = {r: pk_wait(c) for r, c in calls.items()}
    stages = []
    for d in STAGES:
        f = chosen.get(d.name)
        if f is None:
            continue
        load_ = d.load(t)
        paths = [p for p, (names, rate) in PATHS.items() if d.name in names and rate(t) > 0]
        lat = {p: 1e3 * (_service_s(d, f, t, p) + wait[plan.resource(d.name)]) for p in paths}
        stages.append(StagePlan(d.name, d.unit(t), load_, f.name, f.items_per_call, f.stats.median,
                                math.ceil(required[d.name] - EPS), required[d.name],
                                load_ / (machines * f.stats.median), 1e3 * f.items_per_call / f.stats.p10, lat,
                                all(v <= plan.p99_ms for v in lat.values()), f))
    return stages


def report(plan: Plan, machine: str) -> str:
    t = plan.traffic
    kind = ("GPU machines: preprocessing and models on the GPU, decoding, the audio front end and "
            "the text classifier on the host CPUs" if plan.device == "gpu" else "CPU nodes")
    lines = [f"machine type (from the profile): {machine}", f"planning for: {kind}",
             f"traffic at peak: {t.videos_per_s:g} videos/s (mean {t.mean_duration:g} s, p99 {t.p99_duration:g} s, "
             f"{t.video_sampling} -> {t.mean_frames_per_video:g} frames/video, {t.video_codec}, {t.resolution}), "
             f"{t.images_per_s:g} images/s, {t.audio_seconds_per_s:g} audio-s/s, {t.texts_per_s:g} texts/s; "
             f"headroom {t.headroom:.0%}, utilisation target {t.utilisation_target:.0%}, p99 budget {plan.p99_ms:g} ms", "",
             f"{'stage':<15} {'load':>12} {'unit':<10} {'per machine':>12} {'per call':>8} {'alone':>9} "
             f"{'share':>9} {'call ms':>8}  latency ms (per path)"]
    for s in plan.stages:
        lat = ", ".join(f"{p} {v:.0f}" for p, v in s.latency_ms.items())
        flag = "" if s.fits else "  OVER BUDGET at every measured batch"
        lines.append(f"{s.stage:<15} {s.load:>12,.1f} {s.unit:<10} {s.per_machine:>12,.1f} {s.items_per_call:>8g} "
                     f"{s.machines:>9} {s.utilisation:>9.0%} {s.call_ms:>8.1f}  {lat}{flag}")
    for name, why in plan.missing:
        lines.append(f"{name:<15} MISSING: {why}")
    names = {"host": "host CPUs" if plan.device == "gpu" else "CPUs", "gpu": "GPU"}
    lines.append("(alone: machines the stage would need by itself; share: of its resource on the machines "
                 "below, every machine running every stage)")
    lines.append("")
    incomplete = " (incomplete: stages missing above)" if plan.missing else ""
    loads = ", ".join(f"{names[r]} {v:.2f}" for r, v in plan.machine_loads().items())
    lines.append(f"total machines: {plan.total_machines}{incomplete} (machine-loads before rounding: {loads})")
    if plan.bottleneck:
        b = plan.bottleneck
        among = " among the stages in the profile" if plan.missing else ""
        lines.append(f"bottleneck (largest machine-load{among}): {b.stage} ({b.required:.2f})")
        lines.append("utilisation at peak: " + ", ".join(f"{names[r]} {v:.0%}" for r, v in plan.utilisation().items()))
    for path, (_, rate) in PATHS.items():
        if rate(t) <= 0:
            continue
        ms, absent = plan.path_latency(path)
        verdict = (f"unknown: {', '.join(absent)} not in the profile" if ms is None
                   else f"{ms:.0f} ms {'<=' if ms <= plan.p99_ms else '>'} {plan.p99_ms:g} ms "
                        f"{'ok' if ms <= plan.p99_ms else 'OVER BUDGET'}")
        lines.append(f"latency, {path} path: {verdict}")
    return "\n".join(lines)


def scale_plot(figures: list[Figure], t: Traffic, p99_ms: float, path: Path, machine: str,
               scales=tuple(x / 4 for x in range(1, 17)), device: str = "cpu") -> Path:
    """Required machines per stage alone and in total vs traffic scale (1 = the traffic file's peak)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plans = [make_plan(figures, t.scaled(k), p99_ms, device) for k in scales]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in [s.stage for s in plans[-1].stages]:
        ax.step(scales, [next(s.machines for s in p.stages if s.stage == name) for p in plans], where="post",
                label=name)
    ax.step(scales, [p.total_machines for p in plans], where="post", color="black", linewidth=2,
            label="total, every machine running every stage" + (" (incomplete)" if plans[-1].missing else ""))
    ax.axvline(1.0, color="grey", linestyle=":", label="traffic file peak")
    ax.set_xlabel("traffic scale (x the peak in the traffic file)")
    ax.set_ylabel("machines")
    ax.set_title(f"required machines vs traffic\n{machine}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench plan", description=__doc__.split("\n\n")[1],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, action="append",
                    help="a python -m bench result JSON (repeat to merge runs of one machine type)")
    ap.add_argument("--device", choices=DEVICES, default="auto",
                    help="plan CPU nodes or GPU machines (auto: gpu when the profile has GPU figures)")
    ap.add_argument("--traffic", required=True, help="traffic YAML (see bench/traffic.sample.yaml)")
    ap.add_argument("--p99-ms", type=float, required=True, help="latency budget per item")
    ap.add_argument("--plot", type=Path, default=None, help="PNG of machines vs traffic scale")
    args = ap.parse_args(argv)
    docs = [load(p) for p in args.profile]
    machines = {machine_line(d["machine"]) for d in docs}
    if len(machines) > 1:
        ap.error("the profiles come from different machine types: " + " | ".join(sorted(machines)))
    figures, traffic = [f for d in docs for f in figures_of(d)], load_traffic(args.traffic)
    machine = machines.pop()
    device = resolve_device(figures, args.device)
    plan = make_plan(figures, traffic, args.p99_ms, device)
    for path, d in zip(args.profile, docs):
        print(f"profile: {path} ({d['created']})")
    print(report(plan, machine))
    if args.plot:
        print(f"wrote {scale_plot(figures, traffic, args.p99_ms, args.plot, machine, device=device)}")
    return 0
