"""The batching policy of one model, read from its config.pbtxt.

Triton's fields, Triton's meaning (``ModelDynamicBatching``, ``ModelQueuePolicy``,
``ModelInstanceGroup``), with one deliberate difference: ``max_queue_size: 0`` means
"unbounded" in Triton and :data:`DEFAULT_MAX_QUEUE_SIZE` here, because a queue that grows
without bound turns an overload into an out-of-memory crash instead of an
:class:`~engine.errors.OverloadedError` the caller can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from engine.errors import ConfigError

#: Requests one priority level may hold when the config leaves ``max_queue_size`` at 0.
DEFAULT_MAX_QUEUE_SIZE = 1024


@dataclass(frozen=True)
class QueuePolicy:
    """``ModelQueuePolicy`` of one priority level.

    ``timeout_s``: how long a request may wait before its first rows run (None: no limit);
    ``delay_on_timeout``: a timed-out request goes behind every request that has not timed out
    (Triton's DELAY) instead of failing with DeadlineExceededError (REJECT, the default).
    """

    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    timeout_s: float | None = None
    delay_on_timeout: bool = False


@dataclass(frozen=True)
class BatchingPolicy:
    """How the scheduler of one model forms batches.

    ``dynamic`` is False for a model without ``dynamic_batching`` (or without a batch axis):
    every request then runs alone, whole, exactly as ``backend.infer`` would run it.
    Priority levels count from 1 (highest) to ``priority_levels``, as in Triton.
    """

    model: str
    max_batch_size: int = 0
    dynamic: bool = False
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    priority_levels: int = 1
    default_priority: int = 1
    queues: tuple[QueuePolicy, ...] = (QueuePolicy(),)  # index = priority level - 1
    instance_count: int = 1

    def queue(self, priority: int) -> QueuePolicy:
        return self.queues[priority - 1]

    @property
    def target_batch_size(self) -> int:
        """Rows at which a batch goes without waiting out the queue delay."""
        return max(self.preferred_batch_sizes, default=self.max_batch_size)

    def batch_size_for(self, pending: int, boundaries: set[int]) -> int:
        """Rows to take when ``pending`` compatible rows are due.

        With enough work queued, the target: the largest preferred size, else max_batch_size
        (a request is split at the cut; its other rows lead the next batch). With less, the
        largest preferred size that ends on a request ``boundary`` (splitting a request only to
        hit a preferred size would run its rows twice as late), else everything pending.
        """
        if pending >= self.target_batch_size:
            return self.target_batch_size
        fitting = [p for p in self.preferred_batch_sizes if p in boundaries]
        return max(fitting, default=pending)

    @classmethod
    def from_config(cls, config: mc.ModelConfig, path: str | Path = "<config>") -> "BatchingPolicy":
        """The policy of ``config``; ConfigError names the field of any inconsistent value."""
        instances = _instance_count(config, path)
        has_dynamic = config.HasField("dynamic_batching")
        if not has_dynamic:
            return cls(config.name, int(config.max_batch_size), instance_count=instances)
        if config.max_batch_size <= 0:
            raise ConfigError(path, "dynamic_batching",
                              "needs max_batch_size > 0 (a model without a batch axis cannot batch)")
        db = config.dynamic_batching
        preferred = tuple(sorted(set(int(p) for p in db.preferred_batch_size)))
        for p in preferred:
            if not 1 <= p <= config.max_batch_size:
                raise ConfigError(path, "dynamic_batching.preferred_batch_size",
                                  f"{p} is outside 1..max_batch_size ({config.max_batch_size})")
        levels = max(int(db.priority_levels), 1)  # 0 = priorities off = one level
        default = int(db.default_priority_level) if db.priority_levels else 1
        if not 1 <= default <= levels:
            raise ConfigError(path, "dynamic_batching.default_priority_level",
                              f"{default} is outside 1..priority_levels ({levels})")
        for level in db.priority_queue_policy:
            if not 1 <= level <= levels:
                raise ConfigError(path, "dynamic_batching.priority_queue_policy",
                                  f"priority level {level} is outside 1..priority_levels ({levels})")
        base = _queue_policy(db.default_queue_policy)
        queues = tuple(_queue_policy(db.priority_queue_policy[level])
                       if level in db.priority_queue_policy else base
                       for level in range(1, levels + 1))
        return cls(config.name, int(config.max_batch_size), True, preferred,
                   db.max_queue_delay_microseconds / 1e6, levels, default, queues, instances)


def _queue_policy(qp: mc.ModelQueuePolicy) -> QueuePolicy:
    # allow_timeout_override needs no handling: a caller's own deadline is always honoured and can
    # only shorten this timeout (the override Triton allows), never lengthen it.
    return QueuePolicy(
        max_queue_size=int(qp.max_queue_size) or DEFAULT_MAX_QUEUE_SIZE,
        timeout_s=qp.default_timeout_microseconds / 1e6 if qp.default_timeout_microseconds else None,
        delay_on_timeout=qp.timeout_action == mc.ModelQueuePolicy.DELAY)


def _instance_count(config: mc.ModelConfig, path: str | Path) -> int:
    """Sum of ``instance_group`` counts (a group's count 0 means 1, as in Triton; none at all: 1)."""
    total = 0
    for i, group in enumerate(config.instance_group):
        if group.count < 0:
            raise ConfigError(path, f"instance_group[{i}].count", f"must be >= 0, got {group.count}")
        total += group.count or 1
    return total or 1
