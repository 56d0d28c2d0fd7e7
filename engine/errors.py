"""Typed errors raised by the engine.

Every failure a caller can act on has its own class; all derive from
:class:`EngineError` so a service can catch the whole family at once, and
``moderate_many`` reports them per item as ``{"type": cls.__name__, "message": str(e)}``.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


# --- media -----------------------------------------------------------------
class MediaError(EngineError):
    """The input media cannot be used."""


class UnsupportedMediaError(MediaError):
    """Container, codec, pixel format or input kind is not on the allow-list."""


class ForbiddenSourceError(MediaError):
    """Network protocols, playlists, concat lists and other indirect sources."""


class CorruptMediaError(MediaError):
    """The bytes do not decode (truncated, damaged or not media at all)."""


class EmptyMediaError(MediaError):
    """The input holds no data, or no stream of the kind asked for."""


class UnreadableMediaError(MediaError):
    """The path cannot be read (permissions, I/O error)."""


class MediaNotFoundError(UnreadableMediaError, FileNotFoundError):
    """The path does not exist."""


class MediaLimitError(MediaError):
    """The input exceeds a configured limit (bytes, pixels, duration, frames, text length)."""


# --- configuration and models ------------------------------------------------
class ConfigError(EngineError):
    """A config.pbtxt or pipeline file is invalid. The message names file, field and problem."""

    def __init__(self, path: object, field: str, problem: str):
        self.path, self.field, self.problem = str(path), field, problem
        super().__init__(f"{self.path}: {field}: {problem}")


class ModelError(EngineError):
    """A model cannot be loaded or run."""


class DeviceUnavailableError(ModelError):
    """The Session's device (or the kernels it asks for) is not there: no CUDA device visible
    to torch, an extension or package that is not installed."""


class ModelNotFetchedError(ModelError):
    """The version folder lacks the model files: run `engine models fetch`."""


class IntegrityError(ModelError):
    """A model file's sha256 differs from the lock file."""


class FetchError(EngineError):
    """`engine models fetch` failed (offline, bad wheel, conversion error)."""


class InputError(EngineError, ValueError):
    """Arguments to an engine call (shapes, dtypes, options) are invalid."""


class InternalError(EngineError):
    """An unexpected failure while processing one item (a bug: the traceback is logged)."""


# --- serving -------------------------------------------------------------------
class OverloadedError(EngineError):
    """A model's request queue is full (at once, or still full when the caller's deadline came).

    Back off and retry: the request was never queued, so nothing of it ran.
    """


class DeadlineExceededError(EngineError, TimeoutError):
    """A request's deadline (the caller's, or the queue policy's timeout) passed before it ran."""
