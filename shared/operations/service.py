"""The operations on a running system, one implementation for the HTTP API (Lambda or ``conveyor dev``) and the CLI.

TODO(helper H1): implement. Every method takes the :class:`Caller` first and checks its scope before anything else
(``Forbidden``), validates input (``InvalidRequest``), and maps the ledger's errors (``NotFound``, ``WrongState``).
Every mutating method writes one ``conveyor.audit_log`` row: in the same transaction as its database effect where
it has one (retry, cancel, trigger, pause/resume's state), else after its AWS effect (redrive), with result ``ok``
or ``error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg

from shared.operations.controls import QueueControls
from shared.operations.models import (
    ActionResult,
    Health,
    Me,
    QueueSwitch,
    QueuesView,
    RedriveResult,
    RunDetail,
    RunsPage,
    Throughput,
)
from shared.operations.redrive import Redriver
from shared.operations.scopes import Caller
from shared.queues import QueueDirectory
from shared.registry import Registry

# GET /health: the relay is "behind" when its oldest due row has waited longer than this.
RELAY_LAG_THRESHOLD_SECONDS = 60.0


class Operations:
    def __init__(
        self,
        registry: Registry,
        *,
        connect: Callable[[], psycopg.Connection],
        sqs: Any,
        directory: QueueDirectory,
        controls: QueueControls,
        redriver: Redriver,
        relay_lag_threshold: float = RELAY_LAG_THRESHOLD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.connect = connect
        self.sqs = sqs
        self.directory = directory
        self.controls = controls
        self.redriver = redriver
        self.relay_lag_threshold = relay_lag_threshold
        self.clock = clock

    # -- reading (jobs:read) ------------------------------------------------------------------------------------

    def me(self, caller: Caller) -> Me: ...

    def queues(self, caller: Caller) -> QueuesView: ...

    def runs(
        self,
        caller: Caller,
        *,
        job: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        q: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunsPage: ...

    def run(self, caller: Caller, job_id: str) -> RunDetail: ...

    def throughput(self, caller: Caller, window: str = "1h") -> Throughput: ...

    def health(self, caller: Caller) -> Health: ...

    # -- acting --------------------------------------------------------------------------------------------------

    def retry(self, caller: Caller, job_id: str) -> ActionResult: ...

    def cancel(self, caller: Caller, job_id: str, reason: str | None = None) -> ActionResult: ...

    def trigger(self, caller: Caller, job_name: str, payload: dict[str, Any] | None = None) -> ActionResult: ...

    def redrive(self, caller: Caller, queue: str, job: str | None = None, *, budget_seconds: float = 20.0) -> RedriveResult: ...

    def pause(self, caller: Caller, queue: str) -> QueueSwitch: ...

    def resume(self, caller: Caller, queue: str) -> QueueSwitch: ...
