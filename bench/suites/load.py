"""Load suite: a concurrency sweep through ``Session.submit``, dynamic batching on vs off, same run.

Closed loop, like perf_analyzer's concurrency mode: C client threads each submit one item, wait
for its verdict, and submit the next; items cycle through image, audio and text
(:data:`bench.workload.ITEMS`), each client starting at a different kind so the mix in flight is
even. Per level, after a warm-up, completions are counted in fixed windows until two windows in
a row agree within 5% (:mod:`bench.stability`; at most ``max_windows``, else the level is marked
unstable). The two agreeing windows are the measurement: items/s and p50/p90/p95/p99 latency
(submission to verdict) per window, their median and spread reported.

Batching off is the same Session on a copy of the repository whose configs lack
``dynamic_batching`` (:func:`unbatched_repo`: config.pbtxt rewritten, version folders symlinked),
so every model call goes straight to its backend. The two configurations alternate level by
level so that the machine's load drifts over both alike.

Issue 4's criterion, checked and noted each run: batching on gives more items/s than off at every
concurrency >= 16, and its p99 at concurrency 1 is at most 10% worse.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.results import Figure, ratio_figure
from bench.stability import percentile, until_stable
from bench.suites import RunConfig, SuiteResult, Tick
from bench.workload import ITEMS, MODEL_REPO

SUITE = "load"
CONCURRENCY = (1, 4, 16, 64)
MIX = ("image", "audio", "text")
PERCENTILES = (50, 90, 95, 99)
CONFIGS = ("batching_on", "batching_off")
TOLERANCE = 0.05
P99_SLACK = 0.10  # issue 4: batching may cost at most 10% of p99 at concurrency 1


@dataclass(frozen=True)
class Sweep:
    concurrency: tuple[int, ...] = CONCURRENCY
    warmup_s: float = 2.0
    window_s: float = 3.0
    max_windows: int = 8


def sweep(cfg: RunConfig) -> Sweep:
    return Sweep(warmup_s=0.5, window_s=1.5, max_windows=4) if cfg.quick else Sweep()


def steps(cfg: RunConfig) -> int:
    return len(sweep(cfg).concurrency) * len(CONFIGS)


# ---------------------------------------------------------------- the batching-off repository
def unbatched_repo(repo: Path, into: Path) -> Path:
    """A copy of ``repo`` in ``into`` whose model configs have no ``dynamic_batching``.

    Configs are parsed and written back with protobuf's text format (comments are lost); version
    folders, ``pipeline.toml`` and ``models.lock`` are symlinks, so the fetched weights are shared
    and still verified against the lock.
    """
    from google.protobuf import text_format

    from engine.repo.config import load_config

    into.mkdir(parents=True, exist_ok=True)
    for entry in repo.iterdir():
        if not entry.is_dir():
            (into / entry.name).symlink_to(entry.resolve())
            continue
        (into / entry.name).mkdir()
        for part in entry.iterdir():
            if part.name == "config.pbtxt":
                config = load_config(part)
                config.ClearField("dynamic_batching")
                (into / entry.name / part.name).write_text(text_format.MessageToString(config))
            else:
                (into / entry.name / part.name).symlink_to(part.resolve())
    return into


# ---------------------------------------------------------------- one concurrency level
@dataclass
class Window:
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds


class ClosedLoop:
    """C client threads, each with one item in flight; completions are timestamped."""

    def __init__(self, session, concurrency: int, mix=MIX):
        self._session, self._stop = session, threading.Event()
        self._done: list[tuple[float, float]] = []  # (finished at, latency s), appended in time order
        self._seen = 0
        self._threads = [threading.Thread(target=self._client, args=(k, mix), daemon=True)
                         for k in range(concurrency)]

    def _client(self, k: int, mix) -> None:
        i = k
        while not self._stop.is_set():
            item = ITEMS[mix[i % len(mix)]]
            t0 = time.perf_counter()
            self._session.submit(item).result()
            t1 = time.perf_counter()
            self._done.append((t1, t1 - t0))  # list.append is atomic under the GIL
            i += 1

    def __enter__(self) -> "ClosedLoop":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def window(self, seconds: float) -> Window:
        """The items that completed during the next ``seconds``."""
        start = time.perf_counter()
        time.sleep(seconds)
        end = time.perf_counter()
        done = self._done[self._seen:]
        self._seen += len(done)
        return Window(end - start, [1e3 * lat for t, lat in done if start <= t < end])


def measure_level(session, concurrency: int, plan: Sweep):
    """Warm up, then windows until two agree; returns :class:`bench.stability.Windows`."""
    with ClosedLoop(session, concurrency) as loop:
        loop.window(plan.warmup_s)
        return until_stable(lambda: loop.window(plan.window_s), lambda w: w.rate, tolerance=TOLERANCE,
                            max_windows=plan.max_windows)


def level_figures(config: str, concurrency: int, result, params: dict) -> list[Figure]:
    """items/s and the latency percentiles of the last two windows, one sample per window."""
    measured = [w for w in result.windows[-2:] if w.latencies_ms]
    params = {**params, "batching": config == "batching_on", "concurrency": concurrency,
              "windows": len(result.windows), "stable": result.stable}
    base = f"{SUITE}/{config}/c{concurrency}"
    figs = [Figure(name=f"{base}/items_per_s", suite=SUITE, unit="items/s", better="higher",
                   samples=[w.rate for w in result.windows[-2:]], params=params)]
    if measured:
        figs += [Figure(name=f"{base}/p{q}_ms", suite=SUITE, unit="ms", better="lower",
                        samples=[percentile(w.latencies_ms, q) for w in measured], params=params)
                 for q in PERCENTILES]
    return figs


# ---------------------------------------------------------------- issue 4's criterion
def criterion(figs: dict[str, Figure], concurrency: tuple[int, ...]) -> tuple[bool | None, str]:
    """(held, the numbers): on > off in items/s at every level >= 16, p99 at c1 at most 10% worse.

    None when the sweep lacks concurrency 1 or any level >= 16: nothing to decide on.
    """
    def med(config: str, c: int, what: str) -> float:
        return figs[f"{SUITE}/{config}/c{c}/{what}"].stats.median

    high = [c for c in concurrency if c >= 16]
    if not high or 1 not in concurrency:
        return None, f"not checked: the sweep {list(concurrency)} needs concurrency 1 and a level >= 16"
    gains = {c: med("batching_on", c, "items_per_s") / med("batching_off", c, "items_per_s") for c in high}
    p99 = med("batching_on", 1, "p99_ms") / med("batching_off", 1, "p99_ms")
    held = all(g > 1 for g in gains.values()) and p99 <= 1 + P99_SLACK
    text = ", ".join(f"c{c} items/s on/off {g:.2f}x" for c, g in gains.items())
    return held, text + f", c1 p99 on/off {p99:.2f}x (limit {1 + P99_SLACK:.2f}x)"


def run(cfg: RunConfig, tick: Tick, repo_path=MODEL_REPO, plan: Sweep | None = None) -> SuiteResult:
    from engine import Session

    plan = plan or sweep(cfg)
    out = SuiteResult()
    tmp = Path(tempfile.mkdtemp(prefix="bench-unbatched-"))
    try:
        sessions = {"batching_on": Session(repo_path),
                    "batching_off": Session(unbatched_repo(Path(repo_path), tmp / "repo"))}
        try:
            for s in sessions.values():
                s.warmup()
            figs: dict[str, Figure] = {}
            for i, c in enumerate(plan.concurrency):
                order = CONFIGS if i % 2 == 0 else CONFIGS[::-1]  # alternate who goes first
                for config in order:
                    result = measure_level(sessions[config], c, plan)
                    params = {"mix": list(MIX), "workers": sessions[config]._workers, "window_s": plan.window_s,
                              "tolerance": TOLERANCE}
                    for f in level_figures(config, c, result, params):
                        figs[f.name] = f
                    if not result.stable:
                        out.notes.append(f"{config} c{c}: windows never agreed within {TOLERANCE:.0%} "
                                         f"({len(result.windows)} windows)")
                    tick(f"{config} c{c}")
                on, off = (figs[f"{SUITE}/{config}/c{c}/items_per_s"] for config in CONFIGS)
                figs[f"{SUITE}/c{c}/on÷off"] = ratio_figure(f"{SUITE}/c{c}/on÷off", SUITE, on, off,
                                                            {"concurrency": c})
        finally:
            for s in sessions.values():
                s.close()
        out.figures += figs.values()
        held, numbers = criterion(figs, plan.concurrency)
        verdict = {True: "HELD", False: "NOT HELD", None: "UNDECIDED"}[held]
        out.notes.append(f"issue 4 criterion (batching on: more items/s at c>=16, p99 at c1 within "
                         f"{P99_SLACK:.0%}): {verdict} in this run: {numbers}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
