"""Pause and resume: where a queue's consumers and its jobs' schedules are switched off and on.

The database keeps which queues are paused (``conveyor.paused_queues``): the page and ``GET /queues`` read it, the
local pollers and scheduler obey it. On AWS the switch also disables the queue's event source mapping (SQS keeps the
messages; Lambda stops receiving) and the EventBridge schedules of the queue's jobs. Locally there is nothing else to
switch. The AWS calls are made outside any database transaction.

TODO(helper H2): implement ``AwsQueueControls`` (moto-tested) and ``LocalQueueControls``.
"""

from __future__ import annotations

from typing import Protocol

from shared.registry import Registry


class QueueControls(Protocol):
    def set_paused(self, queue: str, paused: bool) -> tuple[int, list[str]]:
        """Switch the queue's consumers and its jobs' schedules off (``paused``) or on; return how many event source
        mappings and which jobs' schedules were switched. Raise :class:`shared.operations.errors.Unavailable` when
        AWS refuses."""
        ...


class LocalQueueControls:
    """Locally the pollers and the scheduler read ``conveyor.paused_queues`` themselves: nothing to switch here."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def set_paused(self, queue: str, paused: bool) -> tuple[int, list[str]]:
        return 0, []
