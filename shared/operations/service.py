"""The operations on a running system, one implementation for the HTTP API (Lambda or ``conveyor dev``) and the CLI.

Every method takes the :class:`Caller` first and checks its scope before anything else (:class:`Forbidden`, naming
the ``required_scope``; :meth:`Operations.me` needs none), then validates its input (:class:`InvalidRequest`: a
malformed id, status, cursor, window or payload, a limit outside 1 to 1,000), then looks things up
(:class:`NotFound` with ``kind`` ``job``, ``job_name`` or ``queue``) and checks the job's state (:class:`WrongState`
with its ``status``). A dependency that fails is :class:`Unavailable`.

Every mutating method writes one ``conveyor.audit_log`` row (migration 0007). Retry, cancel, trigger and the
database half of pause/resume write it in the same transaction as their effect, so an effect without its row (or a
row without its effect) cannot commit. Redrive has no database effect: its row follows the SQS calls, ``ok`` with
the counts or ``error`` with the failure. A refusal that changed nothing (an unknown id, job or queue, a wrong
state) is logged as ``error`` in a transaction of its own, after the attempt's was rolled back. AWS calls (redrive,
pause/resume's event source mappings and schedules) are made with no transaction open.

What each method answers is a model of :mod:`shared.operations.models`; the HTTP API returns it as JSON, the CLI
prints it. ``build_operations`` wires the service from the environment, for the ops Lambda and the CLI alike.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from shared.ids import new_job_id, parse_job_id
from shared.ledger import read as ledger_read
from shared.ledger.cancel import MAX_REASON_CHARS, CancelError, cancel as ledger_cancel
from shared.ledger.errors import JobNotFoundError
from shared.ledger.read import MAX_PAGE, JobRecord
from shared.ledger.status import RunStatus, parse_status
from shared.names import queue_resource_name
from shared.operations.controls import AwsQueueControls, LocalQueueControls, QueueControls
from shared.operations.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    OperationError,
    Unavailable,
    WrongState,
)
from shared.operations.masking import mask_everything, mask_payload
from shared.operations.models import (
    ActionResult,
    Attempt,
    AuditEntry,
    Health,
    HealthCheck,
    JobStats,
    Me,
    QueueStats,
    QueuesView,
    QueueSwitch,
    RedriveResult,
    RunDetail,
    RunsPage,
    RunSummary,
    Throughput,
    ThroughputBucket,
)
from shared.operations.redrive import Redriver
from shared.operations.scopes import ACTION_SCOPES, Action, Caller, Scope
from shared.outbox import EnqueueError, InvalidPayload, enqueue, validate_payload
from shared.outbox.dead import dead_count, requeue_dead
from shared.outbox.relay import outbox_lag
from shared.pauses import paused_queues, set_paused
from shared.queues import QueueDirectory
from shared.registry import Registry, RegistryError
from shared.settings import (
    EVENT_SOURCE_MAPPINGS,
    RELAY_LAG_THRESHOLD,
    SCHEDULE_GROUP,
    Settings,
    SettingsError,
    json_map,
)
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.operations", "service.sql")

# GET /health: the relay is "behind" when its oldest due row has waited longer than this: the relay-lag alarm's
# default (conveyor:alarms.relayLagSeconds, which the stack passes to the ops function as CONVEYOR_RELAY_LAG_SECONDS).
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

    def me(self, caller: Caller) -> Me:
        """Who the caller is and what it may do: needs no scope (the page asks it first, to show the right buttons)."""
        return Me(
            actor=caller.actor,
            scopes=sorted(scope.value for scope in caller.scopes),
            actions=[action.value for action in caller.actions()],
        )

    def queues(self, caller: Caller) -> QueuesView:
        """Every registry queue: SQS's approximate counts (a queue SQS cannot answer for gets ``sqs_error`` and no
        numbers; the rest of the view still comes back), whether it is paused, its oldest queued job's wait, and
        per job the outbox, running and finished counts (one statement for all of them)."""
        _require(caller, Scope.READ)
        labels = self.registry.queues()
        sqs_stats = {label: self._sqs_stats(label) for label in labels}  # no database connection held meanwhile
        with self._db() as conn:
            paused = paused_queues(conn)
            counts = {(row[0], row[1]): row[2:] for row in conn.execute(QUERIES["job_stats"])}
            oldest = dict(conn.execute(QUERIES["queue_oldest_queued"]).fetchall())
            lag_seconds, due = outbox_lag(conn)
        queues = []
        for label, jobs in labels.items():
            stats = QueueStats(
                name=label,
                resource_name=queue_resource_name(label, stage=self.directory.settings.stage),
                paused=label in paused,
                oldest_age_seconds=oldest.get(label),
                **sqs_stats[label],
            )
            for job in jobs:
                pending, dead, running, s1, f1, s24, f24 = counts.get((job.name, label), (0,) * 7)
                stats.jobs.append(JobStats(
                    name=job.name, queue=label, schedule=job.schedule, timezone=job.timezone if job.schedule else None,
                    outbox_pending=pending, outbox_dead=dead, running=running, succeeded_1h=s1, failed_1h=f1,
                    succeeded_24h=s24, failed_24h=f24,
                ))  # fmt: skip
            queues.append(stats)
        return QueuesView(generated_at=datetime.now(UTC), relay_lag_seconds=lag_seconds if due else None, queues=queues)

    def runs(
        self,
        caller: Caller,
        *,
        job: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        q: str | None = None,
        parent: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunsPage:
        """A page of runs, newest first, keyset-paginated: pass ``next_cursor`` back as ``cursor`` for the next
        (older) page; it is set when the page is full. ``job`` filters by name as recorded, so runs of a job since
        removed from the registry can still be listed. ``q``: a job id, or text found in the dedup key, the last
        error or the reason."""
        _require(caller, Scope.READ)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}, got {limit!r}", field="limit")
        parsed_status = None
        if status is not None:
            try:
                parsed_status = parse_status(str(status))
            except ValueError as exc:
                raise InvalidRequest(str(exc), field="status") from None
        for name, value in (("since", since), ("until", until)):
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise InvalidRequest(f"{name} must be a time with a UTC offset, got {value!r}", field=name)
        if q is not None and (not q.strip() or "\x00" in q or len(q) > 500):
            raise InvalidRequest("q must be 1 to 500 characters of text", field="q")
        parent_id = _job_id(parent, "parent") if parent is not None else None
        before = decode_cursor(cursor) if cursor is not None else None
        with self._db() as conn:
            records = ledger_read.list_jobs(
                conn, job=job, status=parsed_status, since=since, until=until, parent=parent_id,
                q=q.strip() if q is not None else None, limit=limit, before=before,
            )  # fmt: skip
        runs = [self._summary(caller, record) for record in records]
        next_cursor = encode_cursor(records[-1].cursor) if len(records) == limit else None
        return RunsPage(runs=runs, next_cursor=next_cursor)

    def cursor_of(self, job_id: str | uuid.UUID) -> str:
        """The cursor that starts a page right after this job (``conveyor runs --before ID``). Raises
        :class:`JobNotFoundError` (a LookupError) when no job has this id."""
        identity = _job_id(job_id)
        with self._db() as conn:
            record = ledger_read.get_job(conn, identity)
        if record is None:
            raise JobNotFoundError(identity)
        return encode_cursor(record.cursor)

    def run(self, caller: Caller, job_id: str) -> RunDetail:
        """One run with its payload (sensitive fields masked), failed attempts, children and audit trail.

        The payload is masked by the job's model in this registry (:mod:`shared.operations.masking`). A job the
        registry does not know (removed since, or a foreign producer's name) has no model to say which fields are
        secret: every value of its payload is masked, keys and shape kept, rather than risk showing a secret.
        """
        _require(caller, Scope.READ)
        identity = _job_id(job_id)
        with self._db() as conn:
            record = ledger_read.get_job(conn, identity)
            if record is None:
                raise NotFound(no_such_job(identity), kind="job")
            children_total = ledger_read.count_children(conn, identity)
            children = ledger_read.list_jobs(conn, parent=identity, limit=100) if children_total else []
            attempts_row = conn.execute(QUERIES["run_attempts"], {"id": identity}).fetchone()
            audit_rows = conn.execute(QUERIES["audit_for_job"], {"job_id": identity, "limit": 50}).fetchall()
        if record.job_name in self.registry:
            payload = mask_payload(self.registry[record.job_name].payload, record.payload)
        else:
            payload = mask_everything(record.payload)
        attempts = []
        for entry in (attempts_row[0] if attempts_row and isinstance(attempts_row[0], list) else []):
            try:
                attempts.append(Attempt.model_validate(entry))
            except ValueError:  # an entry of another shape (written by a newer version): skipped, not fatal
                continue
        summary = self._summary(caller, record)
        return RunDetail(
            **summary.model_dump(),
            payload=payload,
            result=record.result,
            progress_message=record.progress_message,
            published_at=record.published_at,
            first_started_at=record.first_started_at,
            message_id=record.message_id,
            dedup_key=record.dedup_key,
            attempts=attempts,
            children=[self._summary(caller, child) for child in children],
            children_total=children_total,
            children_pending=record.children_pending,
            audit=[
                AuditEntry(id=r[0], at=r[1], actor=r[2], action=r[3], target=r[4], result=r[5], detail=r[6])
                for r in audit_rows
            ],
        )

    def throughput(self, caller: Caller, window: str = "1h") -> Throughput:
        """Runs finished per bucket (1 minute over the last hour, 15 minutes over the last day), succeeded against
        failed or dead, every bucket present (zero when nothing finished)."""
        _require(caller, Scope.READ)
        if window not in THROUGHPUT_WINDOWS:
            raise InvalidRequest(
                f"unknown window {window!r}; windows: {', '.join(THROUGHPUT_WINDOWS)}", field="window"
            )
        span, bucket = THROUGHPUT_WINDOWS[window]
        with self._db() as conn:
            rows = conn.execute(QUERIES["throughput"], {"window": span, "bucket": bucket}).fetchall()
        return Throughput(
            window=window,  # type: ignore[arg-type]
            bucket_seconds=int(bucket.total_seconds()),
            buckets=[ThroughputBucket(start=start, succeeded=ok, failed=failed) for start, ok, failed in rows],
        )

    def health(self, caller: Caller) -> Health:
        """The database answers, the relay keeps up (its oldest due row waited less than the threshold), every
        dead-letter queue is empty, and no outbox row was given up on. ``healthy`` is all of them; ``reasons`` are
        the details of those that failed. The API answers 503 when not healthy."""
        _require(caller, Scope.READ)
        checks: list[HealthCheck] = []
        lag: float | None = None
        dead_rows: int | None = None
        try:
            with self._db() as conn:
                conn.execute(QUERIES["health_ping"]).fetchone()
                checks.append(HealthCheck(name="database", ok=True, detail="the database answers"))
                lag_seconds, due = outbox_lag(conn)
                lag = lag_seconds if due else None
                dead_rows = dead_count(conn)
        except Unavailable as exc:
            if not checks:
                checks.append(HealthCheck(name="database", ok=False, detail=f"the database is unreachable: {exc.message}"))
            unknown = "unknown: the database could not be read"
            checks.append(HealthCheck(name="relay_lag", ok=False, detail=f"relay lag {unknown}"))
        else:
            threshold = self.relay_lag_threshold
            if lag is None or lag < threshold:
                detail = "nothing due in the outbox" if lag is None else f"the oldest due outbox row waited {lag:.0f}s"
                checks.append(HealthCheck(name="relay_lag", ok=True, detail=detail))
            else:
                checks.append(HealthCheck(
                    name="relay_lag", ok=False,
                    detail=f"the relay is behind: the oldest due outbox row has waited {lag:.0f}s (threshold {threshold:.0f}s)",
                ))  # fmt: skip
        checks.append(self._dlq_check())
        if dead_rows is None:
            checks.append(HealthCheck(name="outbox_dead", ok=False, detail="outbox_dead unknown: the database could not be read"))
        elif dead_rows:
            checks.append(HealthCheck(
                name="outbox_dead", ok=False,
                detail=f"{dead_rows} outbox row(s) the relay could not publish (conveyor outbox --failed lists them)",
            ))  # fmt: skip
        else:
            checks.append(HealthCheck(name="outbox_dead", ok=True, detail="no outbox row was given up on"))
        reasons = [check.detail for check in checks if not check.ok]
        return Health(healthy=not reasons, checks=checks, reasons=reasons)

    # -- acting --------------------------------------------------------------------------------------------------

    def retry(self, caller: Caller, job_id: str) -> ActionResult:
        """Run a failed or dead job again under the same id, with a fresh attempt count (see the module docstring
        of this package and CONTEXT's decision): in one transaction the ledger row is locked, checked, given a new
        outbox row (same payload, flow parent and period; the queue its registry entry allows) and reopened as
        ``pending`` with attempt 0, and the audit row is written. A job the relay never published (a row of
        ``conveyor.outbox_dead``) is put back in the outbox by ``conveyor.requeue_dead_outbox``.

        The failed attempts' history and the audit trail stay. A copy of a dead job still in its dead-letter queue
        stays there; redriving it later finds the job finished (or running) and it is acknowledged without running.
        """
        _require(caller, Action.RETRY)
        identity = _job_id(job_id)

        def effect(conn: psycopg.Connection) -> tuple[ActionResult, dict[str, Any]]:
            row = conn.execute(QUERIES["retry_lock_run"], {"id": identity}).fetchone()
            if row is None:
                return self._requeue_unpublished(conn, identity, caller)
            status, job_name, queue, last_error_type = row
            if status not in (RunStatus.FAILED, RunStatus.DEAD):
                raise WrongState(
                    f"job {identity} is {status}; only failed or dead jobs can be retried", status=status
                )
            if status == RunStatus.FAILED and last_error_type == "PublishFailed":
                found = conn.execute(QUERIES["retry_find_unpublished"], {"id": identity}).fetchone()
                if found is not None and found[0] == "outbox_dead":
                    return self._requeue_unpublished(conn, identity, caller, found=found)
            if job_name not in self.registry:
                raise NotFound(
                    f"job {identity} is a {job_name!r} job, which this registry does not have: nothing would run it",
                    kind="job_name",
                )
            spec = self.registry[job_name]
            target_queue = queue if queue in spec.all_queues else spec.queue
            written = conn.execute(
                QUERIES["retry_enqueue"], {"row_id": new_job_id(), "id": identity, "queue": target_queue}
            ).fetchone()
            if written is None:
                raise WrongState(f"job {identity} already has a run waiting in the outbox", status=status)
            conn.execute(
                QUERIES["retry_reopen"],
                {"id": identity, "queue": target_queue, "reason": f"retried by {caller.actor}"},
            )
            result = ActionResult(
                action=Action.RETRY.value, job_id=str(identity), status=RunStatus.PENDING.value,
                message=f"job {identity} ({job_name}) was {status}; it runs again on {target_queue} as attempt 1",
            )  # fmt: skip
            return result, {"from": status, "queue": target_queue}

        return self._act(caller, Action.RETRY, str(identity), identity, effect)

    def _requeue_unpublished(
        self, conn: psycopg.Connection, identity: uuid.UUID, caller: Caller, found: tuple[str, Any] | None = None
    ) -> tuple[ActionResult, dict[str, Any]]:
        found = found or conn.execute(QUERIES["retry_find_unpublished"], {"id": identity}).fetchone()
        if found is None:
            raise NotFound(no_such_job(identity), kind="job")
        place, row_id = found
        if place == "outbox":
            raise WrongState(f"job {identity} is pending: it has not run yet", status=RunStatus.PENDING.value)
        if requeue_dead(conn, [row_id]) == 0:
            raise WrongState(
                f"job {identity} cannot be requeued now: a pending job holds its dedup key", status=RunStatus.FAILED.value
            )
        result = ActionResult(
            action=Action.RETRY.value, job_id=str(identity), status=RunStatus.PENDING.value,
            message=f"job {identity} was never published; it is back in the outbox",
        )  # fmt: skip
        return result, {"from": RunStatus.FAILED.value, "requeued": "outbox_dead"}

    def cancel(self, caller: Caller, job_id: str, reason: str | None = None) -> ActionResult:
        """Cancel a job that has not started (pending, queued, retrying, waiting), with ``reason`` kept in its
        ledger row (``cancelled by <actor>`` when none is given); :mod:`shared.ledger.cancel` has the rules."""
        _require(caller, Action.CANCEL)
        identity = _job_id(job_id)
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS or "\x00" in reason):
            raise InvalidRequest(f"reason must be text of at most {MAX_REASON_CHARS} characters", field="reason")
        text = reason if reason and reason.strip() else f"cancelled by {caller.actor}"

        def effect(conn: psycopg.Connection) -> tuple[ActionResult, dict[str, Any]]:
            try:
                before = ledger_cancel(conn, identity, text)
            except JobNotFoundError:
                raise NotFound(no_such_job(identity), kind="job") from None
            except CancelError as exc:
                raise WrongState(str(exc), status=exc.status) from None
            result = ActionResult(
                action=Action.CANCEL.value, job_id=str(identity), status=RunStatus.CANCELLED.value,
                message=f"job {identity} was {before}; it is cancelled and will not run",
            )  # fmt: skip
            return result, {"from": before, "reason": text}

        return self._act(caller, Action.CANCEL, str(identity), identity, effect)

    def trigger(self, caller: Caller, job_name: str, payload: dict[str, Any] | None = None) -> ActionResult:
        """Enqueue one run of a registry job now, its payload validated by the job's model (an empty object when
        none is given, so a job whose fields all have defaults can be triggered bare)."""
        _require(caller, Action.TRIGGER)
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise InvalidRequest(f"the payload must be a JSON object, got {type(payload).__name__}", field="payload")
        if job_name not in self.registry:
            error = NotFound(f"no job named {job_name!r}; jobs: {', '.join(j.name for j in self.registry)}", kind="job_name")
            self._audit_error(caller, Action.TRIGGER, str(job_name), None, error)
            raise error
        spec = self.registry[job_name]
        try:
            model = validate_payload(spec, payload)
        except InvalidPayload as exc:
            raise InvalidRequest(str(exc), errors=_plain_errors(exc.errors)) from None

        def effect(conn: psycopg.Connection) -> tuple[ActionResult, dict[str, Any]]:
            try:
                new_id = enqueue(conn, spec, model, registry=self.registry)
            except (EnqueueError, RegistryError) as exc:
                raise InvalidRequest(str(exc)) from None
            result = ActionResult(
                action=Action.TRIGGER.value, job_id=str(new_id), status=RunStatus.PENDING.value,
                message=f"job {job_name} enqueued as {new_id}",
            )  # fmt: skip
            return result, {"job_id": str(new_id)}

        return self._act(caller, Action.TRIGGER, job_name, None, effect, job_id_from_result=True)

    def redrive(self, caller: Caller, queue: str, job: str | None = None, *, budget_seconds: float = 20.0) -> RedriveResult:
        """Move the messages of ``queue``'s dead-letter queue (only ``job``'s when given) back to the queue, within
        ``budget_seconds``; the audit row follows, with the counts (or the failure)."""
        _require(caller, Action.REDRIVE)
        if not isinstance(budget_seconds, (int, float)) or isinstance(budget_seconds, bool) or not 0 < budget_seconds <= 900:
            raise InvalidRequest(f"budget_seconds must be from 0 to 900, got {budget_seconds!r}", field="budget_seconds")
        self._known_queue(caller, Action.REDRIVE, queue)
        if job is not None:
            if job not in self.registry:
                error = NotFound(f"no job named {job!r}", kind="job_name")
                self._audit_error(caller, Action.REDRIVE, queue, None, error, job=job)
                raise error
            if queue not in self.registry[job].all_queues:
                raise InvalidRequest(
                    f"job {job!r} does not use queue {queue!r}; its queues: {', '.join(self.registry[job].all_queues)}",
                    field="job",
                )
        try:
            result = self.redriver.redrive(
                queue, dlq_url=self.directory.dlq_url(queue), queue_url=self.directory.url(queue), job=job,
                deadline=self.clock() + budget_seconds,
            )  # fmt: skip
        except Exception as exc:
            error = exc if isinstance(exc, OperationError) else Unavailable(f"redrive of {queue} failed: {exc}", queue=queue)
            self._audit_error(caller, Action.REDRIVE, queue, None, error, job=job)
            raise error from exc
        detail = {"job": job, "mode": result.mode, "moved": result.moved, "failed": result.failed,
                  "skipped": result.skipped, "complete": result.complete, "task_handle": result.task_handle}  # fmt: skip
        if result.errors:
            detail["errors"] = result.errors[:10]
        try:
            with self._db() as conn, conn.transaction():
                self._audit(conn, caller, Action.REDRIVE, queue, None, "ok", detail)
        except Unavailable as exc:
            # The messages have moved; say so, rather than let the operator think nothing happened.
            raise Unavailable(
                f"the redrive of {queue} ran (moved {result.moved}, failed {result.failed}) but its audit row could "
                f"not be written: {exc.message}", queue=queue, moved=result.moved, failed=result.failed,
            ) from exc
        return result

    def pause(self, caller: Caller, queue: str) -> QueueSwitch:
        """Stop ``queue``'s consumers and its jobs' schedules (on AWS: disable its event source mapping and the
        schedules; SQS keeps the messages), then record the pause and its audit row in one transaction."""
        return self._switch(caller, Action.PAUSE, queue, paused=True)

    def resume(self, caller: Caller, queue: str) -> QueueSwitch:
        """Undo :meth:`pause`."""
        return self._switch(caller, Action.RESUME, queue, paused=False)

    # -- internals -----------------------------------------------------------------------------------------------

    def _switch(self, caller: Caller, action: Action, queue: str, *, paused: bool) -> QueueSwitch:
        _require(caller, action)
        self._known_queue(caller, action, queue)
        # The database first: when it is down, refuse before AWS is touched, so a 503 here changed nothing.
        with self._db() as conn:
            conn.execute("SELECT 1")
        try:
            mappings, schedules = self.controls.set_paused(queue, paused)  # AWS calls, no transaction open
        except Exception as exc:
            reason = exc.message if isinstance(exc, OperationError) else str(exc)
            error = Unavailable(
                f"could not {action.value} queue {queue}: {reason}; parts switched before the failure stay switched: "
                f"repeat the call (doing it twice is harmless)", queue=queue,
            )  # fmt: skip
            self._audit_error(caller, action, queue, None, error)
            raise error from exc

        def effect(conn: psycopg.Connection) -> tuple[QueueSwitch, dict[str, Any]]:
            changed = set_paused(conn, queue, paused, actor=caller.actor)
            switch = QueueSwitch(
                queue=queue, paused=paused, changed=changed, event_source_mappings=mappings, schedules=list(schedules)
            )
            return switch, {"changed": changed, "event_source_mappings": mappings, "schedules": list(schedules)}

        try:
            return self._act(caller, action, queue, None, effect)
        except Unavailable as exc:
            if not (mappings or schedules):
                raise
            # AWS has switched; only the record failed. Say what changed, since the page will not show it.
            what = f"{mappings} event source mapping(s)" + (f" and the schedules of {', '.join(schedules)}" if schedules else "")
            raise Unavailable(
                f"queue {queue}: {what} {'disabled' if paused else 'enabled'} on AWS, but the database could not record "
                f"the {action.value} ({exc.message}); repeat the call to record it",
                queue=queue, event_source_mappings=mappings, schedules=list(schedules),
            ) from exc

    def _known_queue(self, caller: Caller, action: Action, queue: str) -> None:
        if queue not in self.registry.queues():
            error = NotFound(f"no queue named {queue!r}; queues: {', '.join(self.registry.queues())}", kind="queue")
            self._audit_error(caller, action, str(queue) or "(empty)", None, error)
            raise error

    def _act(
        self,
        caller: Caller,
        action: Action,
        target: str,
        job_id: uuid.UUID | None,
        effect: Callable[[psycopg.Connection], tuple[Any, dict[str, Any]]],
        *,
        job_id_from_result: bool = False,
    ) -> Any:
        """Run ``effect`` and write its ``ok`` audit row in one transaction; a NotFound or WrongState rolls it back
        and is logged as ``error`` in a transaction of its own."""
        try:
            with self._db() as conn:
                with conn.transaction():
                    result, detail = effect(conn)
                    row_job = uuid.UUID(result.job_id) if job_id_from_result else job_id
                    self._audit(conn, caller, action, target, row_job, "ok", detail)
                return result
        except (NotFound, WrongState) as exc:
            self._audit_error(caller, action, target, job_id, exc)
            raise

    def _audit(
        self,
        conn: psycopg.Connection,
        caller: Caller,
        action: Action,
        target: str,
        job_id: uuid.UUID | None,
        result: str,
        detail: dict[str, Any] | None,
    ) -> None:
        conn.execute(
            QUERIES["audit_insert"],
            {"actor": caller.actor, "action": action.value, "target": target, "job_id": job_id, "result": result,
             "detail": None if detail is None else Jsonb(detail)},
        )  # fmt: skip

    def _audit_error(
        self, caller: Caller, action: Action, target: str, job_id: uuid.UUID | None, error: OperationError, **extra: Any
    ) -> None:
        """The ``error`` row of a refused or failed action. Best effort: when the database itself is what failed,
        the caller still gets the original error."""
        detail = {"error": error.code, "message": error.message, **error.details, **extra}
        try:
            with self._db() as conn, conn.transaction():
                self._audit(conn, caller, action, target, job_id, "error", detail)
        except Unavailable:
            pass

    @contextmanager
    def _db(self) -> Iterator[psycopg.Connection]:
        """A connection of our own for one call, closed after; a database that cannot be reached is Unavailable."""
        try:
            conn = self.connect()
        except psycopg.OperationalError as exc:
            raise Unavailable(f"the database is unreachable: {_first_line(exc)}", dependency="database") from exc
        try:
            with conn:
                yield conn
        except psycopg.OperationalError as exc:
            raise Unavailable(f"the database failed: {_first_line(exc)}", dependency="database") from exc

    def _sqs_stats(self, label: str) -> dict[str, Any]:
        try:
            attrs = self.sqs.get_queue_attributes(
                QueueUrl=self.directory.url(label),
                AttributeNames=[
                    "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]  # fmt: skip
            dlq = self.sqs.get_queue_attributes(
                QueueUrl=self.directory.dlq_url(label), AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
        except Exception as exc:  # noqa: BLE001 - one queue SQS cannot answer for must not fail the whole view
            return {"sqs_error": _first_line(exc)}
        return {
            "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
            "dlq_depth": int(dlq.get("ApproximateNumberOfMessages", 0)),
        }

    def _dlq_check(self) -> HealthCheck:
        full: list[str] = []
        failed: list[str] = []
        for label in self.registry.queues():
            try:
                attrs = self.sqs.get_queue_attributes(
                    QueueUrl=self.directory.dlq_url(label), AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
            except Exception as exc:  # noqa: BLE001 - reported as a failed check, not raised
                failed.append(f"{label} ({_first_line(exc)})")
                continue
            depth = int(attrs.get("ApproximateNumberOfMessages", 0))
            if depth:
                full.append(f"{label} ({depth})")
        if not full and not failed:
            return HealthCheck(name="dead_letter_queues", ok=True, detail="every dead-letter queue is empty")
        parts = []
        if full:
            parts.append(f"dead-letter queues not empty: {', '.join(full)}")
        if failed:
            parts.append(f"dead-letter queues SQS could not read: {', '.join(failed)}")
        return HealthCheck(name="dead_letter_queues", ok=False, detail="; ".join(parts))

    def _summary(self, caller: Caller, record: JobRecord) -> RunSummary:
        actions = []
        if record.status in RETRYABLE and caller.may(Action.RETRY):
            actions.append(Action.RETRY.value)
        if record.status in CANCELLABLE and caller.may(Action.CANCEL):
            actions.append(Action.CANCEL.value)
        return RunSummary(
            id=str(record.id), job=record.job_name, queue=record.queue, status=record.status.value,
            attempt=record.attempt, created_at=record.created_at, run_at=record.run_at,
            started_at=record.last_started_at, finished_at=record.finished_at,
            duration_seconds=record.duration_seconds, last_error_type=record.last_error_type,
            last_error=record.last_error, reason=record.reason, progress=record.progress,
            parent_id=None if record.parent_id is None else str(record.parent_id),
            scheduled_for=record.scheduled_for, actions=actions,
        )  # fmt: skip


# What the runs list offers per status (the page shows only these buttons).
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.DEAD})
CANCELLABLE = frozenset({RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RETRYING, RunStatus.WAITING})

# GET /stats/throughput: window -> (span, bucket).
THROUGHPUT_WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), timedelta(minutes=1)),
    "24h": (timedelta(hours=24), timedelta(minutes=15)),
}


def no_such_job(job_id: Any) -> str:
    """What an unknown id means: the ledger keeps a finished job only for its retention period."""
    return (
        f"no job with id {job_id} (never enqueued here, or a finished job deleted by retention: "
        "see conveyor.retention in the README)"
    )


def _require(caller: Caller, what: Scope | Action) -> None:
    if not caller.may(what):
        scope = what if isinstance(what, Scope) else ACTION_SCOPES[what]
        doing = f"to {what.value}" if isinstance(what, Action) else "to read jobs"
        raise Forbidden(f"{caller.actor} needs the {scope.value} scope {doing}", required_scope=scope.value)


def _job_id(value: Any, name: str = "job id") -> uuid.UUID:
    try:
        return parse_job_id(value.strip() if isinstance(value, str) else value, name)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field=name.replace(" ", "_")) from None


def encode_cursor(cursor: ledger_read.Cursor) -> str:
    """An opaque token for a (created_at, id) position: urlsafe base64 of a JSON pair, unpadded."""
    created_at, job_id = cursor
    raw = json.dumps([created_at.isoformat(), str(job_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> ledger_read.Cursor:
    """The position a :func:`encode_cursor` token names; InvalidRequest for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_text, id_text = json.loads(raw)
        created_at = datetime.fromisoformat(created_text)
        job_id = uuid.UUID(id_text)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, AttributeError):
        raise InvalidRequest(f"cursor {token!r:.60} is not a cursor this service issued", field="cursor") from None
    return created_at, job_id


def _plain_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's errors as JSON-safe values: where, what, which kind (inputs and contexts can be any object)."""
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in errors]  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


class _LazyClient:
    """A boto3 client made on first use. Reading the ledger (``conveyor runs``, ``show``) needs only the database, so
    a terminal with no AWS region or credentials configured can still do it; the first AWS call says what is
    missing."""

    def __init__(self, service: str, config: Any) -> None:
        self._service = service
        self._config = config
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client(self._service, config=self._config)
        return getattr(self._client, name)


def build_operations(registry: Registry, settings: Settings | None = None, *, local: bool) -> Operations:
    """The service as the environment configures it: the ops Lambda (``local=False``: pause/resume switch event
    source mappings and schedules, a whole-queue redrive is an SQS message move task) or the CLI/``conveyor dev``
    against the local runtime (``local=True``: the pollers obey the pauses table; redrive copies messages)."""
    from botocore.config import Config

    from shared.database import connect as open_connection

    settings = settings or Settings.from_env()
    # Short timeouts: an operator (or the health check) waits on these calls.
    config = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 3})
    sqs = _LazyClient("sqs", config)
    controls: QueueControls
    if local:
        controls = LocalQueueControls(registry)
    else:
        controls = AwsQueueControls(
            registry,
            stage=settings.stage,
            lambda_client=_LazyClient("lambda", config),
            scheduler_client=_LazyClient("scheduler", config),
            mappings=json_map(EVENT_SOURCE_MAPPINGS, "event source mapping id") or None,
            schedule_group=os.environ.get(SCHEDULE_GROUP) or None,
        )
    threshold = os.environ.get(RELAY_LAG_THRESHOLD)
    try:
        lag_threshold = float(threshold) if threshold else RELAY_LAG_THRESHOLD_SECONDS
    except ValueError:
        raise SettingsError(f"{RELAY_LAG_THRESHOLD}={threshold!r} is not a number of seconds") from None
    return Operations(
        registry,
        relay_lag_threshold=lag_threshold,
        connect=lambda: open_connection(settings),
        sqs=sqs,
        directory=QueueDirectory(sqs, settings),
        controls=controls,
        redriver=Redriver(sqs, move_task=not local),
    )
