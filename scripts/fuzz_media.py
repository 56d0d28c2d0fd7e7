"""Damaged-media fuzzing of ``Session.moderate``: every failure must be a typed ``EngineError``
and every input must finish within ``--slow`` seconds.

Each input is a file of the corpus (``samples/`` and any ``--corpus`` folders) put through one to
three random mutations: bits flipped, bytes overwritten, a run of one byte, a piece duplicated,
cut or deleted, header bytes changed, 32-bit fields set to extremes (either byte order), or a
piece of another corpus file spliced in. Inputs that raise anything else, or that are slow, are
written to ``--out`` with the seed; the input being moderated is also written there before each
call (``last-<seed>.bin``), so a crash of the process leaves it behind.

    python scripts/fuzz_media.py --seconds 150 --seed 1 [--corpus DIR ...]

Prints one line per finding and a summary of outcomes per corpus file.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXTREMES = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000)


def mutate(b: bytearray, rng: random.Random, corpus: list[bytes]) -> bytearray:
    """``b`` with one random mutation."""
    n = len(b)
    kind = rng.choice(["flip", "bytes", "run", "dup", "cut", "del", "header", "int32", "splice"])
    if kind == "flip":
        for _ in range(rng.randint(1, 40)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "bytes":
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(n)] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    elif kind == "run":
        i, k = rng.randrange(n), rng.randint(1, 4096)
        b[i:i + k] = bytes([rng.randrange(256)]) * min(k, n - i)
    elif kind == "dup":
        i = rng.randrange(n)
        b[i:i] = b[i:i + rng.randint(1, 8192)]
    elif kind == "cut":
        b = b[: rng.randint(1, n)]
    elif kind == "del":
        i = rng.randrange(n)
        del b[i:i + rng.randint(1, 8192)]
    elif kind == "header":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(min(n, 512))] = rng.randrange(256)
    elif kind == "int32":
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(max(n - 4, 1))
            v = rng.choice([*EXTREMES, rng.randrange(2**32)])
            b[i:i + 4] = v.to_bytes(4, rng.choice(["big", "little"]))
    else:  # splice
        other = rng.choice(corpus)
        i, j = rng.randrange(n), rng.randrange(len(other))
        b = b[:i] + bytearray(other[j:j + rng.randint(1, 65536)]) + b[i:]
    return b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to run")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    ap.add_argument("--corpus", type=Path, action="append", default=[], help="more input folders")
    ap.add_argument("--slow", type=float, default=20.0, help="seconds after which an input is reported")
    ap.add_argument("--out", type=Path, default=Path("/tmp/fuzz_media"), help="where findings go")
    args = ap.parse_args(argv)

    import engine
    from engine.errors import EngineError

    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    files = [p for d in [ROOT / "samples", *args.corpus] for p in sorted(d.glob("*")) if p.is_file()]
    corpus = {p.name: p.read_bytes() for p in files}
    blobs = list(corpus.values())
    args.out.mkdir(parents=True, exist_ok=True)
    session = engine.Session()
    outcomes: Counter = Counter()
    findings = 0
    deadline = time.monotonic() + args.seconds
    count = 0
    while time.monotonic() < deadline:
        name = rng.choice(sorted(corpus))
        b = bytearray(corpus[name])
        for _ in range(rng.randint(1, 3)):
            if len(b) > 1:
                b = mutate(b, rng, blobs)
        data = bytes(b)
        (args.out / f"last-{seed}.bin").write_bytes(data)
        t = time.monotonic()
        try:
            session.moderate(data)
            outcome = "ok"
        except EngineError as e:
            outcome = type(e).__name__
        except Exception as e:  # noqa: BLE001 - the finding this script looks for
            outcome = "UNTYPED"
            keep = args.out / f"untyped-{seed}-{count}-{name}.bin"
            keep.write_bytes(data)
            findings += 1
            print(f"UNTYPED {name} -> {keep}: {type(e).__name__}: {e}\n{traceback.format_exc()}", flush=True)
        elapsed = time.monotonic() - t
        if elapsed > args.slow:
            keep = args.out / f"slow-{seed}-{count}-{name}.bin"
            keep.write_bytes(data)
            findings += 1
            print(f"SLOW {name} -> {keep}: {elapsed:.1f} s, {outcome}", flush=True)
        outcomes[(name, outcome)] += 1
        count += 1
    print(f"seed {seed}: {count} inputs, {findings} findings")
    for (name, outcome), k in sorted(outcomes.items()):
        print(f"  {name:28s} {outcome:24s} {k}")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
