"""Where each registry queue lives in SQS.

On AWS the stack passes every URL in ``CONVEYOR_QUEUE_URLS`` / ``CONVEYOR_DLQ_URLS``, so a function never needs
``sqs:GetQueueUrl``. Locally (and wherever they are not set) URLs are looked up once by the derived name and cached.
"""

from __future__ import annotations

import threading
from typing import Any

from shared.names import dlq_resource_name, queue_label_from_resource, queue_resource_name
from shared.settings import Settings


class QueueNotFound(LookupError):
    pass


class QueueDirectory:
    def __init__(self, sqs: Any, settings: Settings | None = None) -> None:
        self.sqs = sqs
        self.settings = settings or Settings.from_env()
        self._urls: dict[tuple[str, bool], str] = {}
        self._lock = threading.Lock()

    def url(self, queue: str) -> str:
        return self._resolve(queue, dead_letter=False)

    def dlq_url(self, queue: str) -> str:
        return self._resolve(queue, dead_letter=True)

    def label_for(self, resource_name: str) -> str | None:
        """The registry label of a physical queue (from an event source ARN's last part), or None if foreign."""
        return queue_label_from_resource(resource_name, stage=self.settings.stage)

    def _resolve(self, queue: str, *, dead_letter: bool) -> str:
        key = (queue, dead_letter)
        url = self._urls.get(key)
        if url:
            return url
        configured = (self.settings.dlq_urls if dead_letter else self.settings.queue_urls).get(queue)
        if configured:
            url = configured
        else:
            name = (dlq_resource_name if dead_letter else queue_resource_name)(queue, stage=self.settings.stage)
            try:
                url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            except self.sqs.exceptions.QueueDoesNotExist:
                raise QueueNotFound(
                    f"SQS queue {name!r} (registry queue {queue!r}) does not exist; deploy the stack or run `conveyor dev`"
                ) from None
        with self._lock:
            self._urls[key] = url
        return url
