"""PNG and APNG with an ICC profile (iCCP) decode without crashing the process (Note [side data
PyAV cannot read safely] in engine/media/orientation.py). The crash was a double free at a later
garbage collection, so each case runs in a subprocess that collects garbage before it exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MAKE = """
import io, gc, sys, numpy as np
from PIL import Image, ImageCms
icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
rng = np.random.default_rng(0)
frames = [Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(3)]
buf = io.BytesIO()
if sys.argv[1] == "apng":
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=100, icc_profile=icc)
else:
    frames[0].save(buf, "PNG", icc_profile=icc)
data = buf.getvalue()
assert b"iCCP" in data
"""

CASES = {
    "png-image": "from engine.media import decode_image; f = decode_image(data); assert f.height == 48",
    "apng-video": "from engine.media import Sampling, decode_video; v = decode_video(data, Sampling(mode='all')); "
                  "assert len(v.frames) == 3",
    "png-probe": "from engine.media import probe; assert probe(data).kind == 'image'",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_png_with_an_icc_profile_does_not_crash(case):
    kind = "apng" if case.startswith("apng") else "png"
    code = MAKE + CASES[case] + "\nfor _ in range(3): gc.collect()\nprint('survived')\n"
    r = subprocess.run([sys.executable, "-c", code, kind], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "survived" in r.stdout, (r.returncode, r.stderr[-2000:])
