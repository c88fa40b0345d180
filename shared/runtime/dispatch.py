"""One Lambda per SQS queue: the entry point for a queue that several jobs share.

An SQS queue can feed only one function safely (two event source mappings on one queue compete for its messages),
so the CDK app deploys a function per registry queue. A queue that carries a single job uses that job's own
handler; a queue shared by several jobs uses :func:`handler` here, which splits each batch by the
``conveyor.job`` message attribute, hands each part to its job's handler, and merges the partial batch failures.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping
from typing import Any

from shared import settings as env
from shared.envelope import ATTR_JOB_NAME
from shared.registry import JobSpec, Registry, RegistryError, default_registry
from shared.runtime.handler import JobHandler


def load_handler(job: JobSpec) -> JobHandler:
    """Import ``functions/<job>/handler.py`` and return its ``handler``, checking it is built for this job."""
    try:
        module = importlib.import_module(job.handler_module)
    except ImportError as exc:
        raise RegistryError(f"job {job.name!r}: cannot import its handler module {job.handler_module!r}: {exc}") from exc
    handler = getattr(module, "handler", None)
    if not isinstance(handler, JobHandler) or handler.job.name != job.name:
        raise RegistryError(
            f"job {job.name!r}: {job.handler_module}.handler must be built with job_handler({job.name!r} spec, fn)"
        )
    return handler


class QueueDispatcher:
    """Routes the records of one SQS event to the handlers of the jobs that share the queue.

    A record without a ``conveyor.job`` attribute (a foreign producer that did not name its job) goes to the
    queue's first job, the same default the local runtime applies; a record naming a job that is not on this queue
    goes there too, and that handler dead-letters it with the reason.
    """

    def __init__(self, handlers: Mapping[str, JobHandler]) -> None:
        if not handlers:
            raise RegistryError("a queue dispatcher needs at least one job handler")
        self.handlers = dict(handlers)
        self.default = next(iter(self.handlers))

    @classmethod
    def for_queue(cls, registry: Registry, queue: str) -> QueueDispatcher:
        jobs = registry.queues().get(queue)
        if not jobs:
            raise RegistryError(f"no job uses queue {queue!r}; queues: {', '.join(registry.queues())}")
        return cls({job.name: load_handler(job) for job in jobs})

    def job_of(self, record: Mapping[str, Any]) -> str:
        attribute = (record.get("messageAttributes") or {}).get(ATTR_JOB_NAME) or {}
        name = attribute.get("stringValue")
        return name if name in self.handlers else self.default

    def __call__(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        # The invocation's start, for every job's part of it (a retry delay counts from the receive, before it).
        started = time.time()
        groups: dict[str, list[Any]] = {}
        for record in event.get("Records") or []:
            groups.setdefault(self.job_of(record), []).append(record)
        failures: list[dict[str, str]] = []
        for job_name, records in groups.items():
            handler, part = self.handlers[job_name], {**event, "Records": records}
            response = handler(part, context, started=started) if isinstance(handler, JobHandler) else handler(part, context)
            failures.extend(response.get("batchItemFailures", []))
        return {"batchItemFailures": failures}


_dispatcher: QueueDispatcher | None = None


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point (``shared.runtime.dispatch.handler``) for a queue named by ``CONVEYOR_QUEUE``."""
    global _dispatcher
    if _dispatcher is None:
        queue = os.environ.get(env.QUEUE)
        if not queue:
            raise RegistryError(f"{env.QUEUE} is not set: the function does not know which queue it consumes")
        _dispatcher = QueueDispatcher.for_queue(default_registry(), queue)
    return _dispatcher(event, context)
