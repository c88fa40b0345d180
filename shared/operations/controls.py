"""Pause and resume: where a queue's consumers and its jobs' schedules are switched off and on.

The database keeps which queues are paused (``conveyor.paused_queues``): the page and ``GET /queues`` read it, the
local pollers and scheduler obey it. On AWS the switch also disables the queue's event source mapping (SQS keeps the
messages; Lambda stops receiving) and the EventBridge schedules of the queue's jobs. Locally there is nothing else to
switch (the local pollers and scheduler read the table). The AWS calls are made outside any database transaction.

On AWS:

- **event source mappings**: the queue's consumer function's mappings whose source is the queue (or the mapping ids
  configured in ``CONVEYOR_EVENT_SOURCE_MAPPINGS``) are set ``Enabled`` false/true. Disabled, Lambda stops receiving;
  the messages stay in SQS (their retention period still runs);
- **schedules**: each scheduled job of the queue has its EventBridge schedule set ``DISABLED``/``ENABLED``.
  UpdateSchedule replaces the whole definition, so every field GetSchedule returned is sent back unchanged with the
  new state; a field left out would be reset (a timezone to UTC, a flexible window to off).

A mapping or schedule already in the wanted state is left alone and not counted, so pausing twice switches nothing
the second time. Any refusal raises :class:`Unavailable` naming the resource; what was switched before it stays
switched (the call can be repeated: it is idempotent).
"""

from __future__ import annotations

from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from shared.names import consumer_function_name, queue_resource_name, schedule_group_name, schedule_name
from shared.operations.errors import NotFound, Unavailable
from shared.registry import Registry

# Fields of GetSchedule's answer that UpdateSchedule takes back (Name, GroupName and State are set explicitly).
SCHEDULE_FIELDS = (
    "ScheduleExpression", "ScheduleExpressionTimezone", "FlexibleTimeWindow", "Target", "StartDate", "EndDate",
    "Description", "KmsKeyArn", "ActionAfterCompletion",
)  # fmt: skip
# Mapping states that already are (or are becoming) what a pause or resume asks for.
MAPPING_STATES = {True: ("Disabled", "Disabling"), False: ("Enabled", "Enabling")}


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


class AwsQueueControls:
    """Pause and resume on AWS: the queue's event source mapping(s) and its jobs' EventBridge schedules."""

    def __init__(
        self,
        registry: Registry,
        *,
        stage: str,
        lambda_client: Any,
        scheduler_client: Any,
        mappings: dict[str, str] | None = None,
        schedule_group: str | None = None,
    ) -> None:
        self.registry = registry
        self.stage = stage
        self.lambda_client = lambda_client
        self.scheduler = scheduler_client
        self.mappings = mappings or {}
        self.schedule_group = schedule_group or schedule_group_name(stage=stage)

    def set_paused(self, queue: str, paused: bool) -> tuple[int, list[str]]:
        if queue not in self.registry.queues():
            raise NotFound(f"no queue {queue!r} in the registry", kind="queue")
        switched = sum(self._switch_mapping(queue, uuid, paused) for uuid in self._mapping_ids(queue))
        jobs = [job.name for job in self.registry.scheduled() if job.queue == queue and self._switch_schedule(job.name, paused)]
        return switched, jobs

    def _mapping_ids(self, queue: str) -> list[str]:
        """The configured mapping of the queue, else the consumer function's mappings whose source is the queue."""
        if queue in self.mappings:
            return [self.mappings[queue]]
        function = consumer_function_name(queue, stage=self.stage)
        suffix = ":" + queue_resource_name(queue, stage=self.stage)
        try:
            pages = self.lambda_client.get_paginator("list_event_source_mappings").paginate(FunctionName=function)
            return [
                m["UUID"] for page in pages for m in page.get("EventSourceMappings", [])
                if m.get("EventSourceArn", "").endswith(suffix)
            ]  # fmt: skip
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(f"could not list the event source mappings of function {function}: {exc}") from exc

    def _switch_mapping(self, queue: str, uuid: str, paused: bool) -> bool:
        try:
            state = self.lambda_client.get_event_source_mapping(UUID=uuid).get("State")
            if state in MAPPING_STATES[paused]:
                return False
            self.lambda_client.update_event_source_mapping(UUID=uuid, Enabled=not paused)
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(f"could not {'disable' if paused else 'enable'} event source mapping {uuid} of queue {queue!r}: {exc}") from exc
        return True

    def _switch_schedule(self, job_name: str, paused: bool) -> bool:
        name = schedule_name(job_name)
        state = "DISABLED" if paused else "ENABLED"
        try:
            schedule = self.scheduler.get_schedule(Name=name, GroupName=self.schedule_group)
            if schedule.get("State") == state:
                return False
            fields = {key: schedule[key] for key in SCHEDULE_FIELDS if schedule.get(key) is not None}
            self.scheduler.update_schedule(Name=name, GroupName=self.schedule_group, State=state, **fields)
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(
                f"could not set schedule {self.schedule_group}/{name} (job {job_name}) {state}: {exc}"
            ) from exc
        return True
