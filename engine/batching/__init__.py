"""Dynamic batching: a scheduler per model that forms batches from concurrent callers.

``Scheduler.from_config(backend, config)`` reads the model's config.pbtxt (``dynamic_batching``,
``max_batch_size``, ``instance_group``) through :class:`BatchingPolicy`.
"""

from engine.batching.policy import DEFAULT_MAX_QUEUE_SIZE, BatchingPolicy, QueuePolicy
from engine.batching.scheduler import BatchStats, Scheduler

__all__ = ["DEFAULT_MAX_QUEUE_SIZE", "BatchStats", "BatchingPolicy", "QueuePolicy", "Scheduler"]
