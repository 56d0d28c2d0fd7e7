"""Out-of-bounds accesses of the CUDA kernels' block code, caught with guard pages on the host
emulation (engine._C_cuda.*_emulate): every plane, output and pooling input is placed so that the
first byte past what the kernel may touch (or the byte before its first one) is on a PROT_NONE
page. A read or write there kills the process, so the cases run in a child process and the test
names the case it died on. Linux only.

What may be touched (the kernels' stated rules): a plane's rows are [start + r * pitch, ... +
width * channels * bytes); the 32-bit loads of the 8-bit fast path and the vertical-first block
(p.aligned4: 4-byte aligned planes and strides) may reach past a row's last sample but never past
the aligned word holding it (stage_group4, Note [CUDA preprocess: 8-bit fast path]). Layouts:
  end        guard right after the last row's last byte (pitch: the row, +1..3, 4-aligned, ...)
  end4       guard at that end rounded up to 4 bytes (the aligned-word rule; aligned4 reachable
             with any width)
  start      guard right before the first byte
  rows-end4  page-multiple pitch, guard right after EVERY row's 4-byte-rounded end
  rows-start page-multiple pitch, guard right before every row
"""

from __future__ import annotations

import collections
import ctypes
import json
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))

try:
    from engine import _C_cuda
except ImportError:  # pragma: no cover - depends on the build
    _C_cuda = None

pytestmark = [
    pytest.mark.skipif(_C_cuda is None, reason="engine._C_cuda not built"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages via mmap/mprotect (Linux)"),
]

PAGE = mmap.PAGESIZE
LAYOUTS = ("end", "end4", "start", "rows-end4", "rows-start")
FORMATS = ("i420", "nv12", "i422", "i444", "rgb24", "bgr24", "i420_10", "nv12_10", "i422_10", "i444_10")
SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 17, 33, 47)
OUT_SIZES = ((1, 1), (1, 2), (3, 3), (4, 7), (8, 8), (17, 33), (33, 17), (40, 48))
# every block the call planning can pick must be reached (a planning change must not quietly
# route the cases elsewhere); "staged" covers the general staged block and the 8-bit fast path
VARIANTS = {"direct", "staged", "vfirst", "vfirst-planes", "vfirst-prefetch", "vfirst-late"}


# --- guarded memory (child process) ------------------------------------------------------------
class _Maps:
    """Anonymous mappings with PROT_NONE pages; unmapped on close()."""

    def __init__(self):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mmap.restype = ctypes.c_void_p
        self.libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_long)
        self.libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        self.libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        self.maps = []

    def map(self, pages: int) -> int:
        a = self.libc.mmap(None, pages * PAGE, 3, 0x22, -1, 0)  # RW, MAP_PRIVATE | MAP_ANONYMOUS
        assert a not in (None, ctypes.c_void_p(-1).value), "mmap failed"
        self.maps.append((a, pages * PAGE))
        return a

    def guard(self, addr: int) -> None:
        assert self.libc.mprotect(addr, PAGE, 0) == 0, "mprotect failed"

    def plane(self, rows: int, row_bytes: int, pitch: int, layout: str) -> tuple[int, int]:
        """(address, pitch) of `rows` rows of `row_bytes` allowed bytes laid out as `layout`."""
        up = lambda n, m: -(-n // m) * m  # noqa: E731
        if layout in ("end", "end4", "start"):
            n = (rows - 1) * pitch + row_bytes
            n = up(n, 4) if layout == "end4" else n
            body = up(max(n, 1), PAGE)
            base = self.map(body // PAGE + 1)
            if layout == "start":
                self.guard(base)
                return base + PAGE, pitch
            self.guard(base + body)
            return base + body - n, pitch
        end = up(row_bytes, 4)
        k = max(up(end, PAGE) // PAGE, 1)
        pitch = (k + 1) * PAGE
        base = self.map(rows * (k + 1) + 1)
        for r in range(rows):
            self.guard(base + r * pitch + (0 if layout == "rows-start" else k * PAGE))
        return (base + PAGE if layout == "rows-start" else base + k * PAGE - end), pitch

    def array(self, shape, dtype, layout: str) -> np.ndarray:
        """C-contiguous array with a guard page after its end (before its start: *start)."""
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) * dt.itemsize
        addr, _ = self.plane(1, n, n, "start" if layout.endswith("start") else "end")
        return view(addr, 1, n, n, np.uint8).reshape(-1)[:n].view(dt).reshape(shape)

    def close(self) -> None:
        for a, n in self.maps:
            self.libc.munmap(a, n)
        self.maps = []


def view(addr: int, rows: int, cols: int, pitch: int, dtype) -> np.ndarray:
    """(rows, cols) numpy view of guarded memory (touches nothing)."""
    dt = np.dtype(dtype)
    span = max((rows - 1) * pitch + cols * dt.itemsize, 1)
    raw = np.ctypeslib.as_array(ctypes.cast(addr, ctypes.POINTER(ctypes.c_uint8)), shape=(span,))
    return np.lib.stride_tricks.as_strided(raw, (rows, cols * dt.itemsize), (pitch, 1)).view(dt)


# --- cases -------------------------------------------------------------------------------------
def plane_geometry(fmt: str, h: int, w: int) -> list[tuple[int, int]]:
    """(rows, samples per row) of each plane."""
    from engine.ops.cuda import _plane_geometry

    return [(rows, pixels * ch) for rows, pixels, ch in _plane_geometry(fmt.removesuffix("_10"), w, h)]


def cases(layout: str) -> list[dict]:
    rng = np.random.default_rng(LAYOUTS.index(layout) + 1)
    out = []
    sizes = [(h, w) for h in SIZES for w in SIZES] + [(480, 853), (241, 47), (1080, 1920)]
    for fmt in FORMATS:
        for h, w in sizes:
            mode = str(rng.choice(["stretch", "shorter", "letterbox"]))
            size = OUT_SIZES[int(rng.integers(len(OUT_SIZES)))]
            to = None
            if mode != "letterbox" and rng.random() < 0.6:
                to = (size[0] + int(rng.integers(0, 20)),) * 2 if mode == "shorter" else \
                    (int(rng.integers(1, 60)), int(rng.integers(1, 60)))
            out.append(dict(
                fmt=fmt, h=h, w=w, layout=layout, mode=mode, size=size, to=to,
                # pitch: the row + extra bytes, or rounded up to 4 (+4): the 32-bit load paths
                pitch=str(rng.choice(["r4", "r4", "r4+4", "0", "1", "2", "3", "6"])),
                filter=str(rng.choice(["antialias", "bilinear"])), clamp=str(rng.choice(["source", "output"])),
                batch=int(rng.choice([1, 3])), dtype=str(rng.choice(["float32", "float16"])),
                layout_out=str(rng.choice(["nchw", "nhwc"])), direct=bool(rng.random() < 0.1),
                env=str(rng.choice(["", "vfirst-prefetch", "vfirst-late"])), seed=int(rng.integers(1 << 30)),
            ))
    return out


def run_case(c: dict, maps: _Maps) -> str:
    from cuda_ref import NORM, call_args
    from frames import Frame

    from engine.ops.preprocess import PreprocessSpec

    ten = c["fmt"].endswith("_10")
    bps, dt = (2, np.uint16) if ten else (1, np.uint8)
    rng = np.random.default_rng(c["seed"])
    frames = []
    for _ in range(c["batch"]):
        planes = []
        for rows, cols in plane_geometry(c["fmt"], c["h"], c["w"]):
            rb = cols * bps
            r4 = -(-rb // 4) * 4
            pitch = {"r4": r4, "r4+4": r4 + 4}.get(c["pitch"], None) or rb + int(c["pitch"]) * bps
            addr, pitch = maps.plane(rows, rb, pitch, c["layout"])
            v = view(addr, rows, cols, pitch, dt)
            v[...] = rng.integers(0, 1024 if ten else 256, v.shape, dtype=dt)
            planes.append(v)
        frames.append(Frame(format=c["fmt"], planes=tuple(planes), width=c["w"], height=c["h"], matrix="bt709",
                            full_range=False, pts=0.0))
    spec = PreprocessSpec(size=c["size"], resize=c["mode"], resize_to=c["to"], filter=c["filter"],
                          dtype=c["dtype"], layout=c["layout_out"], clamp=c["clamp"], pad_value=0.5, **NORM)
    out = maps.array(spec.output_shape(len(frames)), spec.dtype, c["layout"])
    out[...] = np.nan
    args = call_args(frames, spec, out.ctypes.data, lambda p: p.ctypes.data, lambda p: p.strides[0])
    if c["env"]:
        os.environ["ENGINE_CUDA_PREPROCESS"] = c["env"]
    else:
        os.environ.pop("ENGINE_CUDA_PREPROCESS", None)
    variant = _C_cuda.preprocess_emulate(**args, force_direct=c["direct"])
    assert np.isfinite(out).all(), f"unwritten or non-finite outputs: {json.dumps(c)}"
    return variant


def pool_cases(layout: str) -> list[dict]:
    rng = np.random.default_rng(100 + LAYOUTS.index(layout))
    return [dict(B=int(rng.integers(1, 4)), T=int(rng.integers(0, 30)), D=int(rng.integers(1, 200)),
                 N=int(rng.integers(0, 50)), S=int(rng.integers(0, 7)), mode=int(rng.integers(0, 3)),
                 window=int(rng.integers(1, 8)), normalize=bool(rng.random() < 0.5), seed=int(rng.integers(1 << 30)))
            for _ in range(200)]


def run_pool_case(c: dict, layout: str, maps: _Maps) -> str:
    rng = np.random.default_rng(c["seed"])
    B, T, D, N, S = c["B"], c["T"], c["D"], c["N"], c["S"]
    x = maps.array((B, T, D), np.float32, layout)
    m = maps.array((B, T), np.float32, layout)
    o = maps.array((B, D), np.float32, layout)
    x[...] = rng.standard_normal(x.shape)
    m[...] = rng.random(m.shape) < 0.6
    _C_cuda.masked_mean_emulate(o.ctypes.data, x.ctypes.data, m.ctypes.data, B, T, D, c["normalize"])
    x2 = maps.array((N, D), np.float32, layout)
    off = maps.array((S + 1,), np.int64, layout)
    o2 = maps.array((S, D), np.float32, layout)
    x2[...] = rng.standard_normal(x2.shape)
    off[...] = rng.integers(-3, N + 4, S + 1)  # out of range and decreasing too: clamped
    _C_cuda.segment_pool_emulate(o2.ctypes.data, x2.ctypes.data, off.ctypes.data, N, D, S, c["mode"], c["window"])
    return "pool"


def child(what: str, layout: str) -> None:
    """Runs the cases, printing each one before its call (the parent reports the last one)."""
    todo = pool_cases(layout) if what == "pool" else cases(layout)
    if what == "canary":  # the harness itself: a call claiming one column too many must fault
        todo = [dict(todo[0], fmt="rgb24", h=5, w=8, pitch="3", batch=1, direct=False, mode="stretch", size=(4, 4),
                     to=None, canary=True)]
    seen = collections.Counter()
    for c in todo:
        print("CASE " + json.dumps(c), flush=True)
        maps = _Maps()
        try:
            if what == "pool":
                seen[run_pool_case(c, layout, maps)] += 1
            elif c.get("canary"):
                import cuda_ref

                real = cuda_ref.call_args
                cuda_ref.call_args = lambda *a: dict(real(*a), width=9)
                run_case(c, maps)
            else:
                seen[run_case(c, maps)] += 1
        finally:
            maps.close()
    print("DONE " + json.dumps(seen), flush=True)


def _run_child(what: str, layout: str) -> tuple[subprocess.CompletedProcess, str | None, dict | None]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([_HERE, os.path.join(_ROOT, "tests", "kernels"), _ROOT]))
    env.pop("ENGINE_CUDA_PREPROCESS", None)
    r = subprocess.run([sys.executable, __file__, what, layout], capture_output=True, text=True, env=env,
                       timeout=300)
    lines = r.stdout.splitlines()
    last = next((ln[5:] for ln in reversed(lines) if ln.startswith("CASE ")), None)
    done = next((json.loads(ln[5:]) for ln in lines if ln.startswith("DONE ")), None)
    return r, last, done


@pytest.mark.parametrize("layout", LAYOUTS)
def test_preprocess_block_code_stays_inside_its_planes_and_output(layout):
    r, last, done = _run_child("preprocess", layout)
    assert r.returncode == 0 and done is not None, (
        f"the emulation died (rc {r.returncode}, {-r.returncode if r.returncode < 0 else ''}: a read or write "
        f"outside a plane / the output) on case {last}\n{r.stderr[-2000:]}")
    if layout in ("end4", "start", "rows-end4", "rows-start"):  # aligned planes reachable
        assert VARIANTS <= set(done), f"variants not reached with layout {layout}: {VARIANTS - set(done)}"


@pytest.mark.parametrize("layout", ["end", "start"])
def test_pooling_element_code_stays_inside_its_arrays(layout):
    r, last, done = _run_child("pool", layout)
    assert r.returncode == 0 and done is not None, f"rc {r.returncode} on case {last}\n{r.stderr[-2000:]}"


def test_the_guard_pages_catch_a_read_past_the_last_row():
    r, last, _ = _run_child("canary", "end")
    assert r.returncode == -11, f"expected SIGSEGV, got rc {r.returncode}\n{r.stdout[-500:]}{r.stderr[-500:]}"


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
