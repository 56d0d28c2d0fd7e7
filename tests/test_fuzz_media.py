"""scripts/fuzz_media.py reports what it exists to find: untyped errors and slow inputs."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

import engine
from engine.errors import CorruptMediaError

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("fuzz_media", ROOT / "scripts" / "fuzz_media.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Fake:
    """A Session stand-in: typed errors for most inputs, one untyped error, one slow input."""

    calls = 0

    def moderate(self, data: bytes):
        _Fake.calls += 1
        _Fake.clock[0] += 30.0 if _Fake.calls == 5 else 1.0  # seconds this call takes
        if _Fake.calls == 3:
            raise ValueError("untyped")
        raise CorruptMediaError("damaged")


@pytest.fixture
def fake_session(monkeypatch):
    _Fake.calls, _Fake.clock = 0, [0.0]
    monkeypatch.setattr(engine, "Session", _Fake)
    return _Fake


def test_untyped_errors_and_slow_inputs_are_findings(fake_session, tmp_path, monkeypatch, capsys):
    fuzz = _script()
    monkeypatch.setattr(fuzz.time, "monotonic", lambda: fake_session.clock[0])
    rc = fuzz.main(["--seconds", "40", "--seed", "7", "--out", str(tmp_path)])  # 11 calls
    out = capsys.readouterr().out
    assert rc == 1
    assert "UNTYPED" in out and "ValueError: untyped" in out and "SLOW" in out
    assert len(list(tmp_path.glob("untyped-7-*.bin"))) == 1
    assert len(list(tmp_path.glob("slow-7-*.bin"))) == 1
    assert (tmp_path / "last-7.bin").exists() and "seed 7: 11 inputs, 2 findings" in out


def test_mutations_change_the_input_and_stay_bytes():
    fuzz = _script()
    rng = random.Random(3)
    data = bytes(range(256)) * 64
    changed = 0
    for _ in range(200):
        b = fuzz.mutate(bytearray(data), rng, [data[::-1]])
        assert isinstance(b, bytearray) and len(b) >= 1
        changed += bytes(b) != data
    assert changed >= 190  # a flip that cancels itself, or a run of equal bytes, may leave it as it was
