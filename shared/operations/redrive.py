"""Moving messages from a queue's dead-letter queue back to the queue.

TODO(helper H2): whole queue with StartMessageMoveTask on AWS; receive → send → delete (locally for the whole queue,
since the emulator lacks StartMessageMoveTask, and everywhere for one job's messages).
"""

from __future__ import annotations

from typing import Any

from shared.operations.models import RedriveResult


class Redriver:
    def __init__(self, sqs: Any, *, move_task: bool) -> None:
        self.sqs = sqs
        self.move_task = move_task

    def redrive(self, queue: str, *, dlq_url: str, queue_url: str, job: str | None, deadline: float) -> RedriveResult:
        """Move ``queue``'s DLQ messages (only ``job``'s when given) back; stop at ``deadline`` (time.monotonic())."""
        raise NotImplementedError
