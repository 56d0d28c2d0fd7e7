"""TensorRT optimisation profiles (min/opt/max shape per input) from a Triton ``config.pbtxt``.

Pure data: no TensorRT import. A TensorRT engine built with dynamic axes needs, per input, the
smallest, the most common and the largest shape it will see; kernels are tuned for ``opt``
and any shape between ``min`` and ``max`` (per axis) runs.

Where the numbers come from:

* the batch axis (present when ``max_batch_size > 0``): ``min = 1``, ``max = max_batch_size``,
  ``opt`` = the pipeline's batch size (``[vision] batch_size = 16``) or ``max_batch_size``;
* every other ``-1`` dim: a ``(min, opt, max)`` range the caller gives, per input or for all
  (MiniLM's sequence axis: ``(1, 128, 256)`` with ``max_seq_length = 256``);
* fixed dims: ``min = opt = max = dim``.

A range that cannot hold (``min > opt``, ``opt > max``, a dim < 1, ``opt`` batch above
``max_batch_size``) raises :class:`~engine.errors.InputError`; a config that cannot give a
profile (a ``-1`` dim with no range) raises :class:`~engine.errors.ConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

from engine.errors import ConfigError, InputError

Range = tuple[int, int, int]  # (min, opt, max)
#: a range for all dynamic axes of an input, or {axis index in the full shape: range}
DynamicSpec = Union[Range, Mapping[int, Range]]


def _check_range(where: str, r) -> Range:
    try:
        lo, opt, hi = (int(v) for v in r)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected (min, opt, max), got {r!r}") from None
    if lo < 1:
        raise InputError(f"{where}: min must be >= 1, got {lo}")
    if not lo <= opt <= hi:
        raise InputError(f"{where}: need min <= opt <= max, got ({lo}, {opt}, {hi})")
    return lo, opt, hi


@dataclass(frozen=True)
class ShapeRange:
    """Shapes of one input, batch axis included (when the model has one)."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self):
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise InputError(f"profile input {self.name!r}: min/opt/max have different ranks "
                             f"{self.min}, {self.opt}, {self.max}")
        for axis, r in enumerate(zip(self.min, self.opt, self.max)):
            _check_range(f"profile input {self.name!r} axis {axis}", r)

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def to_json(self) -> list:
        return [self.name, list(self.min), list(self.opt), list(self.max)]


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: a ShapeRange per input, kept sorted by input name.

    Sorting makes two profiles built from the same shapes equal (and hash to the same engine
    cache key) whatever order the inputs were listed in.
    """

    inputs: tuple[ShapeRange, ...]

    def __post_init__(self):
        names = [r.name for r in self.inputs]
        if len(set(names)) != len(names):
            raise InputError(f"profile lists an input twice: {names}")
        object.__setattr__(self, "inputs", tuple(sorted(self.inputs, key=lambda r: r.name)))

    def __getitem__(self, name: str) -> ShapeRange:
        for r in self.inputs:
            if r.name == name:
                return r
        raise KeyError(name)

    def check(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """InputError unless every shape is within this profile."""
        for name, shape in shapes.items():
            try:
                r = self[name]
            except KeyError:
                raise InputError(f"input {name!r} is not in the engine's profile "
                                 f"({[x.name for x in self.inputs]})") from None
            if not r.contains(tuple(shape)):
                raise InputError(f"input {name!r} shape {tuple(shape)} is outside the engine's "
                                 f"profile min {r.min} .. max {r.max}")

    def to_json(self) -> list:
        return [r.to_json() for r in self.inputs]


def profile_from_config(config, *, opt_batch: int | None = None,
                        dynamic: DynamicSpec | Mapping[str, DynamicSpec] | None = None,
                        path: str = "<config.pbtxt>") -> Profile:
    """One :class:`Profile` for every input of a Triton ``ModelConfig``.

    Parameters
    ----------
    config : tritonclient ``model_config_pb2.ModelConfig``.
    opt_batch : the batch size to tune for (default ``max_batch_size``); ignored without a
        batch axis.
    dynamic : ``(min, opt, max)`` for every ``-1`` dim of every input, or a mapping
        ``input name -> (min, opt, max)`` or ``input name -> {axis: (min, opt, max)}``
        (axis counted in the full shape, batch axis = 0).
    path : the config file, for error messages.
    """
    mbs = int(config.max_batch_size)
    if mbs < 0:
        raise ConfigError(path, "max_batch_size", f"must be >= 0, got {mbs}")
    batch: Range | None = None
    if mbs > 0:
        opt = mbs if opt_batch is None else int(opt_batch)
        if not 1 <= opt <= mbs:
            raise InputError(f"{config.name}: opt batch {opt} must be in 1..max_batch_size={mbs}")
        batch = (1, opt, mbs)
    per_input = isinstance(dynamic, Mapping) and all(isinstance(k, str) for k in dynamic)
    known = {t.name for t in config.input}
    if per_input:
        unknown = sorted(set(dynamic) - known)
        if unknown:
            raise InputError(f"{config.name}: dynamic ranges for unknown input(s) {unknown}; "
                             f"inputs are {sorted(known)}")
    ranges: list[ShapeRange] = []
    if not config.input:
        raise ConfigError(path, "input", "no inputs: nothing to build a profile for")
    for i, t in enumerate(config.input):
        dims = [int(d) for d in t.dims]
        spec = dynamic.get(t.name) if per_input else dynamic
        lo: list[int] = []
        op: list[int] = []
        hi: list[int] = []
        if batch is not None:
            lo.append(batch[0]), op.append(batch[1]), hi.append(batch[2])
        for j, d in enumerate(dims):
            axis = j + (1 if batch is not None else 0)
            if d == -1:
                r = spec.get(axis) if isinstance(spec, Mapping) else spec
                if r is None:
                    raise ConfigError(path, f"input[{i}].dims",
                                      f"input {t.name!r} axis {axis} is dynamic (-1) and no "
                                      "(min, opt, max) range was given for it")
                r = _check_range(f"{config.name}: input {t.name!r} axis {axis}", r)
            elif d >= 1:
                r = (d, d, d)
            else:
                raise ConfigError(path, f"input[{i}].dims", f"input {t.name!r}: invalid dim {d}")
            lo.append(r[0]), op.append(r[1]), hi.append(r[2])
        ranges.append(ShapeRange(t.name, tuple(lo), tuple(op), tuple(hi)))
    return Profile(tuple(ranges))


def text_profile(config, max_seq_length: int, *, opt_seq: int | None = None,
                 opt_batch: int | None = None, path: str = "<config.pbtxt>") -> Profile:
    """Token inputs ``[B, S]``: every dynamic axis gets ``(1, opt_seq, max_seq_length)``.

    ``opt_seq`` defaults to half of ``max_seq_length`` (moderation texts are mostly short;
    MiniLM: 128 of 256).
    """
    max_seq_length = int(max_seq_length)
    opt = max(1, max_seq_length // 2) if opt_seq is None else int(opt_seq)
    return profile_from_config(config, opt_batch=opt_batch, dynamic=(1, opt, max_seq_length), path=path)
