"""Session serving: single-item latency and concurrent throughput, against the inline pipeline.

    python bench/serving.py [--rounds 15] [--items 64] [--workers 2 4 8]

Latency, per item kind, interleaved in one run (median ms):
  inline  - ``Session._moderate`` on the caller's thread, every model call straight to the backend:
            what ``moderate`` did before the serving layer;
  served  - ``Session.moderate``: the item goes through ``submit`` to an item worker;
  batched - served, with every model call forced through the model's batcher (what a lone item
            would pay without the serving layer's bypass: max_queue_delay waiting for company).
Throughput: ``--items`` mixed items (video, image, audio, text) submitted at once, items/s per
worker count, against the same items moderated inline one after another (interleaved rounds,
median). The concurrency sweep with batching on vs off is ``python -m bench --suite load``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import ITEMS as KINDS  # noqa: E402  (the load and e2e suites' items too)
from engine import Session  # noqa: E402


def inline(session: Session, item: dict):
    kwargs = dict(item)
    return session._moderate(kwargs.pop("media", None), **kwargs)


def served(session: Session, item: dict):
    return session.submit(item).result()


def batched(session: Session, item: dict):
    server = session._item_server()
    busy = server.busy
    server.busy = lambda: True  # every model call goes through the batcher
    try:
        return session.submit(item).result()
    finally:
        server.busy = busy


def latency(session: Session, rounds: int) -> None:
    modes = {"inline": inline, "served": served, "batched": batched}
    print(f"{'kind':6} " + " ".join(f"{m:>9}" for m in modes) + "  served/inline  batched/inline")
    for kind, item in KINDS.items():
        times: dict[str, list[float]] = {m: [] for m in modes}
        for fn in modes.values():
            fn(session, item)  # warm
        for _ in range(rounds):
            for m, fn in modes.items():  # interleaved: machine noise hits every mode alike
                t = time.perf_counter()
                fn(session, item)
                times[m].append(time.perf_counter() - t)
        med = {m: statistics.median(ts) * 1e3 for m, ts in times.items()}
        print(f"{kind:6} " + " ".join(f"{med[m]:9.1f}" for m in modes)
              + f"  {med['served'] / med['inline']:13.3f}  {med['batched'] / med['inline']:14.3f}")


def throughput(repo: Path, n: int, workers: list[int], rounds: int) -> None:
    items = [list(KINDS.values())[i % len(KINDS)] for i in range(n)]
    sessions = {w: Session(repo, workers=w) for w in workers}
    try:
        for s in sessions.values():
            s.warmup()
            [f.result() for f in [s.submit(i) for i in items[:8]]]  # start workers and batchers
        rates: dict[str, list[float]] = {"inline": [], **{f"{w} workers": [] for w in workers}}
        for _ in range(rounds):  # interleaved: machine noise hits every configuration alike
            t = time.perf_counter()
            for item in items:
                inline(sessions[workers[0]], item)
            rates["inline"].append(n / (time.perf_counter() - t))
            for w, s in sessions.items():
                t = time.perf_counter()
                for f in [s.submit(item) for item in items]:
                    f.result()
                rates[f"{w} workers"].append(n / (time.perf_counter() - t))
    finally:
        for s in sessions.values():
            s.close()
    base = statistics.median(rates["inline"])
    for name, rs in rates.items():
        rate = statistics.median(rs)
        print(f"{name + ':':12} {rate:6.1f} items/s median of {rounds} ({rate / base:.2f}x inline)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=ROOT / "model_repo")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--throughput-rounds", type=int, default=5)
    args = ap.parse_args()
    with Session(args.repo) as session:
        session.warmup()
        latency(session, args.rounds)
    if args.workers:
        throughput(args.repo, args.items, args.workers, args.throughput_rounds)


if __name__ == "__main__":
    main()
