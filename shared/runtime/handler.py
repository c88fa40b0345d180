"""``job_handler``: turns a job function into an SQS-triggered Lambda handler.

What every job gets without writing it:

- partial batch failures (Powertools ``BatchProcessor``): one failing message never makes its batch-mates run again;
- the payload parsed into the job's model; a body that does not fit is a permanent failure;
- a retry decision per failure: ``PermanentJobError`` (and an invalid payload) go to the job's dead-letter queue at
  once with the reason in message attributes; any other exception is retried after the policy's backoff, or the
  ``RetryAfter`` delay (set with ChangeMessageVisibility, within what SQS can hold for this receive; a longer
  ``RetryAfter`` is rescheduled through the outbox), and, when the last attempt fails, moved to the DLQ with its
  error. The queue's redrive policy stays as the backstop for runs that never report back (timeouts, crashes);
- structured logs with ``job_id``, ``job_name`` and ``attempt`` on every line, and EMF metrics per outcome;
- a deadline: the function timeout covers a whole batch (``shared.registry.function_timeout``), and a record is
  started only while its job's ``timeout`` plus a margin is left in the invocation. A record left unstarted (a
  batch-mate overran its timeout) goes back as a batch item failure: no run is reported, no retry delay is set, and
  SQS delivers it again after the queue's visibility timeout. Its receive still counts in ApproximateReceiveCount,
  so its next run sees an attempt number one higher; the queue's maxReceiveCount keeps a margin for such receives.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import BaseModel, ValidationError

from shared.database import Database, DatabaseNotConfigured
from shared.envelope import Delivery
from shared.ledger import record as ledger
from shared.ledger.flows import lock_parents
from shared.outbox import describe_validation_error, enqueue_retry
from shared.queues import QueueDirectory
from shared.registry import (
    INVOCATION_MARGIN_SECONDS,
    RECORD_MARGIN_SECONDS,
    RETRY_DELAY_SAFETY_SECONDS,
    SQS_MAX_VISIBILITY_SECONDS,
    JobSpec,
    Registry,
)
from shared.runtime.context import JobContext, RunState, RunTakenOver
from shared.runtime.errors import PayloadInvalid, PermanentJobError, RetryAfter

JobFunction = Callable[[Any, JobContext], Any]

_LOG_KEYS = ["job_id", "job_name", "attempt", "message_id"]


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    DEAD = "dead"
    # Acknowledged without running: the ledger says the job already succeeded, was cancelled, or is in its DLQ.
    NOT_RUN = "not_run"
    # Handed back to SQS without running: another worker holds the run and is within its time.
    DEFERRED = "deferred"

    @property
    def metric(self) -> str:
        return "Job" + "".join(part.capitalize() for part in self.value.split("_"))


@dataclass(frozen=True)
class RunReport:
    """One run's result, for observers (the local runtime's console line; later, the run ledger)."""

    job_name: str
    job_id: str
    attempt: int
    outcome: Outcome
    duration_ms: float
    error: str | None = None
    # The retry delay actually set; None when SQS did not take it (the queue's visibility timeout applies).
    retry_in: int | None = None
    queue: str | None = None
    # From enqueue (or SQS send, for foreign producers) to the end of this run: what a user waits for.
    latency_ms: float | None = None
    # The job's id when its next attempt waits in the outbox (a RetryAfter longer than SQS can hold).
    rescheduled_as: str | None = None
    # The last progress the run reported, and its result (JSON text), as the ledger keeps them.
    progress: int | None = None
    result: str | None = None


Observer = Callable[[RunReport], None]


class Plan(StrEnum):
    """What this delivery does with a record, from the ledger's start statement."""

    RUN = "run"  # taken: this delivery runs the job
    NOT_RUN = "not_run"  # succeeded, cancelled, skipped or dead already: acknowledge
    BUSY = "busy"  # another worker runs it within its time: hand back until it would be stale
    UNLEDGERED = "unledgered"  # the ledger could not be written: run as SQS delivered it


@dataclass
class RecordPlan:
    plan: Plan
    claim: ledger.Claim | None = None
    # Local clock (time.time()) by which this record must have finished: the end of its slot in the batch. A record
    # that could not start in time (a batch-mate overran) is not started: the ledger would call it abandoned.
    deadline: float | None = None
    # The start the ledger could not record (Plan.UNLEDGERED after a database error).
    start: ledger.Start | None = None
    # This run's outcome, for the batch's outcome statement (unless already written: ``recorded``), and its report.
    outcome: ledger.Outcome | None = None
    recorded: bool = False
    report: RunReport | None = None


@dataclass
class Invocation:
    """One call of the handler: its Lambda context, when it started, and the ledger's plan for each record. Passed
    down with each record rather than kept on the handler, which the local runtime shares between the pollers of a
    queue."""

    context: Any = None
    started: float = field(default_factory=time.time)
    plans: dict[str, RecordPlan] = field(default_factory=dict)
    # The call that sets each record's visibility to its slot, running alongside the first record.
    visibility: threading.Thread | None = None

    def visibility_set(self, logger: Any = None) -> None:
        if self.visibility is not None:
            self.visibility.join(timeout=30)
            if self.visibility.is_alive() and logger is not None:
                logger.warning("the slot visibility call is still running after 30 s; a retry delay set now may be overwritten")

    @property
    def outcomes(self) -> list[ledger.Outcome]:
        return [plan.outcome for plan in self.plans.values() if plan.outcome is not None]

    def remaining_seconds(self) -> float | None:
        """Seconds until Lambda ends the invocation, or None without a deadline (tests, ``conveyor invoke``)."""
        remaining = getattr(self.context, "get_remaining_time_in_millis", None)
        return None if remaining is None else remaining() / 1000


class RecordNotStarted(Exception):
    """Too little of the invocation is left to run this record within its timeout; SQS delivers it again."""


@dataclass(frozen=True)
class Retry:
    """How a failed run comes back: after ``delay`` seconds hidden on its queue (None: after the queue's visibility
    timeout, because SQS did not take the delay), or as ``rescheduled_as``: the job's next attempt, waiting in the outbox."""

    delay: int | None
    rescheduled_as: str | None = None


class JobHandler:
    """The Lambda entry point for one job. Build it with :func:`job_handler` at module level in the handler file,
    so clients and connections are created once per container and reused by warm invocations."""

    def __init__(
        self,
        job: JobSpec,
        fn: JobFunction,
        *,
        sqs: Any = None,
        directory: QueueDirectory | None = None,
        database: Database | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.job = job
        self.fn = fn
        self._sqs = sqs
        self._directory = directory
        self.database = database or Database()
        self.registry = registry
        self.logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "conveyor"))
        # EphemeralMetrics, not Metrics: Metrics shares its state across instances, and the local runtime hosts every
        # job's handler in one process, where one job's dimension would leak into another's metrics.
        self.metrics = EphemeralMetrics(
            namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Conveyor"),
            default_dimensions={"job": job.name},
        )
        # Outcomes of the batch under way, written as one summed value each when it ends (_flush_metrics). Locked:
        # the local runtime runs one handler in several worker threads at once.
        self._outcome_counts: Counter[str] = Counter()
        self._outcome_lock = threading.Lock()
        self.observers: list[Observer] = []
        # Runs whose start or outcome the ledger could not take (the database was unreachable); also the LedgerGaps metric.
        self.ledger_gaps = 0

    # boto3 is created on first use, not at import, so `conveyor invoke` and tests can point it at moto first.
    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            import boto3

            self._sqs = boto3.client("sqs")
        return self._sqs

    @property
    def directory(self) -> QueueDirectory:
        if self._directory is None:
            self._directory = QueueDirectory(self.sqs)
        return self._directory

    def bind(self, *, sqs: Any = None, directory: QueueDirectory | None = None, database: Database | None = None) -> None:
        """Point this handler at other clients (the local runtime and tests: one moto server, a per-test database)."""
        if sqs is not None:
            self._sqs = sqs
        if directory is not None:
            self._directory = directory
        if database is not None:
            self.database = database

    def __call__(self, event: dict[str, Any], context: Any = None, *, started: float | None = None) -> dict[str, Any]:
        """Lambda's entry point. ``started`` (epoch seconds) is when the invocation began, if earlier than this call
        (the dispatcher of a shared queue calls each job's handler in turn)."""
        invocation = Invocation(context) if started is None else Invocation(context, started)
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        try:
            self._begin(event.get("Records") or [], invocation)
            return process_partial_response(
                event=event, record_handler=partial(self._process, invocation=invocation), processor=processor,
                context=context,
            )
        finally:
            invocation.visibility_set(self.logger)
            self._finish(invocation)
            # Observers hear of a run after the ledger recorded it, so what they read there matches what they hear.
            for plan in invocation.plans.values():
                if plan.report is not None:
                    self._notify(plan.report)
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        """Write the batch's metrics as one EMF line, each outcome's count summed."""
        with self._outcome_lock:
            counts, self._outcome_counts = self._outcome_counts, Counter()
        if is_metrics_disabled():
            return
        for name, count in counts.items():
            self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
        if self.metrics.metric_set:
            self.metrics.flush_metrics(raise_on_empty_metrics=False)

    # -- the ledger: one start statement and one outcome statement per batch -------------------------------------

    def _begin(self, records: list[dict[str, Any]], invocation: Invocation) -> None:
        """Take the batch's runs in the ledger, and give each record SQS visibility until the end of its slot.

        Records run one after another, so record ``i`` must be done ``(i + 1) × (timeout + 5 s) + 5 s`` from now; its
        ledger row is stale after that, and its message becomes visible again then. A worker that dies (a crash, a
        Lambda timeout) is recovered after at most one slot, instead of after the queue's visibility timeout (6 ×
        the function's), which stays in place for receives that never reach the handler (throttling).
        """
        starts: list[ledger.Start] = []
        slots: list[tuple[Delivery, float]] = []
        seen: set[uuid.UUID] = set()
        now = time.time()
        slot = self.job.timeout + RECORD_MARGIN_SECONDS
        for record in records:
            try:
                delivery = Delivery.from_record(record)
            except (KeyError, TypeError):
                continue  # a malformed record fails in _process, where the batch processor reports it
            job_id = ledger.ledger_id(delivery)
            if (delivery.job_name or self.job.name) != self.job.name:
                continue  # misrouted: dead-lettered unrun, with the reason (see _run)
            if job_id in seen:
                # The same job twice in one batch (a duplicate send): run it once; the copy comes back later and
                # finds it done.
                invocation.plans[delivery.message_id] = RecordPlan(Plan.BUSY)
                continue
            seen.add(job_id)
            stale_after = (len(starts) + 1) * slot + INVOCATION_MARGIN_SECONDS
            starts.append(ledger.Start(
                delivery, self.job.name, self._queue_label(delivery), stale_after, uuid.uuid4(), position=len(starts)
            ))  # fmt: skip
            slots.append((delivery, stale_after))
        if not starts:
            return
        try:
            claims = ledger.start(self.database.connection(), starts)
        except DatabaseNotConfigured:
            # No database at all (`conveyor invoke` on a sample event, a job that needs none): nothing to record.
            self.logger.debug("no database configured: runs are not recorded in the ledger")
            for start in starts:
                invocation.plans[start.delivery.message_id] = RecordPlan(Plan.UNLEDGERED)
            return
        except Exception:  # noqa: BLE001 - the ledger never decides a job's fate: run as SQS delivered it
            self._ledger_gap("start", len(starts))
            for start in starts:
                # The start is kept: the outcome, and ctx.transaction(), can still be recorded without a token.
                invocation.plans[start.delivery.message_id] = RecordPlan(Plan.UNLEDGERED, start=start)
            return
        visibility: list[tuple[Delivery, int]] = []
        for delivery, stale_after in slots:
            claim = claims[ledger.ledger_id(delivery)]
            if claim.taken:
                invocation.plans[delivery.message_id] = RecordPlan(Plan.RUN, claim, deadline=now + stale_after)
                visibility.append((delivery, math.ceil(stale_after)))
            elif claim.status == "running" or claim.status == "waiting":
                invocation.plans[delivery.message_id] = RecordPlan(Plan.BUSY, claim)
                wait = 60 if claim.stale_at is None else (claim.stale_at - datetime.now(UTC)).total_seconds()
                visibility.append((delivery, min(max(math.ceil(wait) + 1, 1), SQS_MAX_VISIBILITY_SECONDS // 2)))
            else:
                invocation.plans[delivery.message_id] = RecordPlan(Plan.NOT_RUN, claim)
        if visibility:
            # In the background: the first record starts at once instead of waiting for SQS. Anything that sets a
            # record's visibility later (a retry delay) waits for this call first, so it is never overwritten.
            invocation.visibility = threading.Thread(target=self._set_visibility, args=(visibility,), daemon=True)
            invocation.visibility.start()

    def _set_visibility(self, entries: list[tuple[Delivery, int]]) -> None:
        """One ChangeMessageVisibilityBatch per queue; a failure only delays recovery to the queue's visibility."""
        by_queue: dict[str, list[tuple[Delivery, int]]] = {}
        for delivery, seconds in entries:
            by_queue.setdefault(self._queue_label(delivery), []).append((delivery, seconds))
        for queue, items in by_queue.items():
            try:
                response = self.sqs.change_message_visibility_batch(
                    QueueUrl=self.directory.url(queue),
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": delivery.receipt_handle, "VisibilityTimeout": seconds}
                        for index, (delivery, seconds) in enumerate(items)
                    ],
                )
            except Exception:  # noqa: BLE001
                self.logger.warning("could not set the records' visibility to their slots", exc_info=True)
                continue
            if response.get("Failed"):
                self.logger.warning("SQS did not change the visibility of some records", extra={"failed": response["Failed"][:3]})

    def _finish(self, invocation: Invocation) -> None:
        outcomes = invocation.outcomes
        if not outcomes:
            return
        parents = {p.claim.parent_id for p in invocation.plans.values() if p.outcome and p.claim and p.claim.parent_id}
        try:
            conn = self.database.connection()
            if len(parents) < 2:
                ledger.finish(conn, outcomes)
                return
            # Children of several flows end together: lock their parents in one order first, or two batches ending
            # children of the same two flows in opposite orders would deadlock in the flow trigger.
            with conn.transaction():
                lock_parents(conn, [o.job_id for o in outcomes])
                ledger.finish(conn, outcomes)
        except Exception:  # noqa: BLE001 - the jobs' fates are already decided on SQS
            self._ledger_gap("outcome", len(outcomes))

    def _ledger_gap(self, what: str, records: int) -> None:
        """The ledger could not be written: the jobs run (or retry) as SQS dictates, and the gap is logged and counted."""
        self.ledger_gaps += records
        self.logger.warning(
            f"run ledger unavailable: the {what} of {records} run(s) is not recorded; the jobs go on as SQS delivers them",
            exc_info=True,
        )
        if not is_metrics_disabled():
            self.metrics.add_metric(name="LedgerGaps", unit=MetricUnit.Count, value=records)

    # -- one record ------------------------------------------------------------------------------------------

    def _process(self, record: SQSRecord, invocation: Invocation) -> None:
        delivery = Delivery.from_record(record.raw_event)
        job_name = delivery.job_name or self.job.name
        plan = invocation.plans.get(delivery.message_id) or RecordPlan(Plan.UNLEDGERED)
        if plan.claim is not None and plan.plan is Plan.RUN:
            # The ledger counts runs that started; SQS's receive count also counts receives that never ran.
            delivery = dataclasses.replace(delivery, attempt=plan.claim.attempt)
        # Thread-local keys: the logger is shared by every handler in the process (one per service name), and the
        # local runtime runs several records at once on different threads.
        self.logger.thread_safe_append_keys(
            job_id=delivery.job_id, job_name=job_name, attempt=delivery.attempt, message_id=delivery.message_id
        )
        try:
            if plan.plan is Plan.NOT_RUN:
                assert plan.claim is not None
                self.logger.info(f"acknowledged without running: the job is already {plan.claim.status}")
                self._report(delivery, job_name, Outcome.NOT_RUN, time.perf_counter(), plan=plan, error=f"already {plan.claim.status}")
                return
            if plan.plan is Plan.BUSY:
                status = plan.claim.status if plan.claim else "running"
                self.logger.info(f"handed back without running: another delivery of this job is {status}")
                self._report(delivery, job_name, Outcome.DEFERRED, time.perf_counter(), plan=plan)
                raise RecordNotStarted(f"another delivery of job {delivery.job_id} is {status}")
            try:
                self._check_time_left(invocation, plan)
            except RecordNotStarted:
                self._record(plan, "queued")
                raise
            self._attempt(delivery, job_name, invocation, plan)
        finally:
            self.logger.thread_safe_remove_keys(_LOG_KEYS)

    def _check_time_left(self, invocation: Invocation, plan: RecordPlan) -> None:
        remaining = invocation.remaining_seconds()
        needed = self.job.timeout + RECORD_MARGIN_SECONDS
        if plan.deadline is not None and plan.deadline - time.time() < self.job.timeout:
            # Its slot is nearly over (batch-mates overran): the ledger would soon call this run abandoned.
            remaining, needed = plan.deadline - time.time(), self.job.timeout
        if remaining is not None and remaining < needed:
            self.logger.warning(
                "not started: too little time left in this invocation; SQS delivers it again",
                extra={"remaining_s": round(remaining, 1), "needed_s": needed},
            )
            raise RecordNotStarted(f"{remaining:.1f} s left, the job may need {needed} s")

    def _attempt(self, delivery: Delivery, job_name: str, invocation: Invocation, plan: RecordPlan) -> None:
        started = time.perf_counter()
        state = RunState()
        if plan.plan is Plan.RUN and plan.claim is not None:
            state.job_id, state.token = plan.claim.job_id, plan.claim.token
        elif plan.start is not None:
            state.job_id, state.unrecorded_start = ledger.ledger_id(delivery), plan.start
        started_at = datetime.now(UTC)
        if plan.plan is Plan.RUN and delivery.attempt > self.job.retry.max_attempts:
            # Every attempt started and none reported back (the worker died each time: a crash, an out-of-memory, a
            # timeout): a job that kills its worker goes to the DLQ after max_attempts instead of looping until the
            # queue's maxReceiveCount.
            reason = (
                f"all {self.job.retry.max_attempts} attempts started and none reported an outcome (the worker died or "
                f"overran its timeout); not run again"
            )
            self._dead_letter(delivery, job_name, "Abandoned", reason, started, plan=plan, state=state)
            return
        try:
            value = self._run(delivery, job_name, invocation, plan, state)
        except RunTakenOver:
            self.logger.warning("another delivery took this run over; its transaction was rolled back, the message is left on SQS")
            raise RecordNotStarted(f"job {delivery.job_id} was taken over by another delivery") from None
        except (PermanentJobError, PayloadInvalid) as exc:
            if state.committed:
                return self._succeeded_despite(delivery, job_name, exc, started, plan, state, started_at)
            self._dead_letter(delivery, job_name, type(exc).__name__, exc.reason, started, plan=plan, state=state, started_at=started_at)
        except Exception as exc:
            if state.committed:
                return self._succeeded_despite(delivery, job_name, exc, started, plan, state, started_at)
            error = f"{type(exc).__name__}: {exc}"
            if delivery.attempt >= self.job.retry.max_attempts:
                self._dead_letter(
                    delivery,
                    job_name,
                    type(exc).__name__,
                    f"attempt {delivery.attempt} of {self.job.retry.max_attempts} failed: {error}",
                    started,
                    exc_info=True,
                    plan=plan,
                    state=state,
                    started_at=started_at,
                )
                return
            if isinstance(exc, RetryAfter):
                retry = self._delay_retry(delivery, exc.seconds, invocation, exact=True, plan=plan, error=(type(exc).__name__, str(exc)))
            else:
                retry = self._delay_retry(
                    delivery, self.job.retry.delay_after(delivery.attempt), invocation, exact=False, plan=plan,
                    error=(type(exc).__name__, str(exc)),
                )  # fmt: skip
            self.logger.warning(
                "job failed, will retry",
                extra={"error": error, "retry_in_s": retry.delay, "rescheduled_as": retry.rescheduled_as},
                exc_info=not isinstance(exc, RetryAfter),
            )
            self._report(
                delivery, job_name, Outcome.RETRYING, started, plan=plan, state=state, started_at=started_at,
                error=error, error_type=type(exc).__name__, retry_in=retry.delay, rescheduled_as=retry.rescheduled_as,
            )  # fmt: skip
            if retry.rescheduled_as is None:
                raise  # a batch item failure: SQS delivers it again when its visibility ends
            # Otherwise the copy in the outbox is the retry: the batch processor deletes this message.
        else:
            if value is not None and state.result is None:
                try:
                    state.result = ledger.result_json(value)
                except ValueError as exc:
                    self.logger.warning(f"result not kept: {exc}")
            self._report(delivery, job_name, Outcome.SUCCEEDED, started, plan=plan, state=state, started_at=started_at)

    def _succeeded_despite(
        self, delivery: Delivery, job_name: str, exc: Exception, started: float, plan: RecordPlan, state: RunState,
        started_at: datetime,
    ) -> None:
        """The job's transaction committed (the run is succeeded in the ledger), then the job raised: its database
        work is done and must not run again, so the message is acknowledged and the error only logged."""
        self.logger.error(
            "job raised after its transaction committed; the run stays succeeded and is not retried",
            extra={"error": f"{type(exc).__name__}: {exc}"},
            exc_info=True,
        )
        self._report(delivery, job_name, Outcome.SUCCEEDED, started, plan=plan, state=state, started_at=started_at,
                     error=f"{type(exc).__name__} after commit: {exc}", error_type=type(exc).__name__)  # fmt: skip

    def _run(self, delivery: Delivery, job_name: str, invocation: Invocation, plan: RecordPlan, state: RunState) -> Any:
        if job_name != self.job.name:
            raise PermanentJobError(
                f"message for job {job_name!r} was delivered to the handler of {self.job.name!r}; "
                "check which queue the producer sent it to"
            )
        try:
            payload: BaseModel = self.job.payload.model_validate_json(delivery.body)
        except ValidationError as exc:
            raise PayloadInvalid(f"invalid payload for job {self.job.name!r}: {describe_validation_error(exc, self.job.payload)}") from exc
        claim = plan.claim
        ctx = JobContext(
            job_id=delivery.job_id,
            job_name=job_name,
            attempt=delivery.attempt,
            max_attempts=self.job.retry.max_attempts,
            enqueued_at=delivery.enqueued_at,
            message_id=delivery.message_id,
            logger=self.logger,
            database=self.database,
            registry=self.registry,
            lambda_context=invocation.context,
            scheduled_for=(claim.scheduled_for if claim and claim.scheduled_for else delivery.scheduled_for),
            parent_id=(str(claim.parent_id) if claim and claim.parent_id else delivery.parent_id),
            run=state,
        )
        return self.fn(payload, ctx)

    # -- outcomes ----------------------------------------------------------------------------------------------

    def _queue_label(self, delivery: Delivery) -> str:
        label = self.directory.label_for(delivery.queue_resource_name)
        return label if label in self.job.all_queues else self.job.queue

    def _dead_letter(
        self,
        delivery: Delivery,
        job_name: str,
        error_type: str,
        reason: str,
        started: float,
        *,
        exc_info: bool = False,
        plan: RecordPlan | None = None,
        state: RunState | None = None,
        started_at: datetime | None = None,
    ) -> None:
        """Copy the message to the DLQ with the reason, then let the batch processor delete the original.

        If the copy fails, the exception propagates and the message stays on its queue: it is retried or moved by
        the redrive policy, never dropped.
        """
        attributes = delivery.dead_letter_attributes(job_name=job_name, error_type=error_type, error=reason)
        self.sqs.send_message(
            QueueUrl=self.directory.dlq_url(self._queue_label(delivery)),
            MessageBody=delivery.body,
            MessageAttributes=attributes,
        )
        # The producer's attributes that did not fit next to Conveyor's (10 at most, and the message size).
        dropped = sorted(name for name in delivery.attributes if name not in attributes)
        self.logger.error(
            "job failed permanently; moved to the dead-letter queue",
            extra={"error_type": error_type, "error": reason, **({"attributes_not_kept": dropped} if dropped else {})},
            exc_info=exc_info,
        )
        self._report(
            delivery, job_name, Outcome.DEAD, started, plan=plan, state=state, started_at=started_at,
            error=f"{error_type}: {reason}", error_type=error_type,
        )  # fmt: skip

    def _delay_retry(
        self,
        delivery: Delivery,
        seconds: int,
        invocation: Invocation,
        *,
        exact: bool,
        plan: RecordPlan | None = None,
        error: tuple[str, str] | None = None,
    ) -> Retry:
        """Keep the message hidden for ``seconds``, as far as SQS allows.

        SQS hides a message at most 12 h after the receive that made it invisible. A backoff (``exact=False``) fits
        by the registry's rule and is shortened to what SQS allows if it ever does not; a ``RetryAfter``
        (``exact=True``) is never shortened: what SQS cannot hold waits in the outbox as the job's next attempt, due
        when the delay ends, and this message is deleted.
        """
        invocation.visibility_set(self.logger)
        room = self._visibility_room(delivery, invocation)
        if seconds > room:
            if exact:
                return self._reschedule(delivery, seconds, fallback=room, plan=plan, error=error)
            self.logger.warning("retry delay shortened to what SQS can hold", extra={"asked_s": seconds, "set_s": room})
            seconds = room
        try:
            self._hide(delivery, seconds)
        except Exception as exc:  # noqa: BLE001 - the message still comes back, after the queue's visibility timeout
            if exact and _visibility_too_long(exc):
                # SQS counts from a receive earlier than this record shows (a throttled invocation's).
                return self._reschedule(delivery, seconds, fallback=None, plan=plan, error=error)
            self.logger.warning(
                "could not set the retry delay; the message comes back after the queue's visibility timeout",
                exc_info=True,
            )
            return Retry(None)
        return Retry(seconds)

    def _visibility_room(self, delivery: Delivery, invocation: Invocation) -> int:
        """The longest visibility SQS takes for this receive: 12 h from it, less the time since, less a margin for
        clocks. The record does not carry this receive's time: it is the first receive's when the count is 1, and
        otherwise no earlier than the invocation less the batching window (barring a throttled invocation, which
        SQS then refuses)."""
        receives = [invocation.started - self.job.batch_window]
        if delivery.receive_count == 1 and delivery.first_received_at is not None:
            receives.append(delivery.first_received_at)
        elapsed = math.ceil(max(time.time() - min(receives), 0))
        return max(SQS_MAX_VISIBILITY_SECONDS - elapsed - RETRY_DELAY_SAFETY_SECONDS, 0)

    def _hide(self, delivery: Delivery, seconds: int) -> None:
        self.sqs.change_message_visibility(
            QueueUrl=self.directory.url(self._queue_label(delivery)),
            ReceiptHandle=delivery.receipt_handle,
            VisibilityTimeout=seconds,
        )

    def _reschedule(
        self,
        delivery: Delivery,
        seconds: int,
        *,
        fallback: int | None,
        plan: RecordPlan | None = None,
        error: tuple[str, str] | None = None,
    ) -> Retry:
        """Hold the job's next attempt in the outbox, due in ``seconds`` (on the same queue), committed before this
        message is deleted. It keeps the job id and counts on from this attempt, so a job that keeps asking for
        long delays still reaches its DLQ after ``max_attempts``; a redelivery of this message (the invocation
        died before deleting it) finds the waiting retry by its id and adds nothing."""
        try:
            conn = self.database.connection()
            with conn.transaction():
                job_id = enqueue_retry(
                    conn, self.job, delivery.body, job_id=delivery.job_id, attempt=delivery.attempt + 1,
                    queue=self._queue_label(delivery), delay=timedelta(seconds=seconds),
                    enqueued_at=delivery.enqueued_at,
                )  # fmt: skip
                claim = plan.claim if plan is not None and plan.plan is Plan.RUN else None
                if claim is not None and claim.token is not None:
                    # In the same transaction: if the worker dies before the batch's outcome statement, the ledger
                    # already says the next attempt waits in the outbox, and this message delivered again does not run.
                    ledger.finish(conn, [ledger.Outcome(
                        claim.job_id, claim.token, "pending", error_type=error[0] if error else None,
                        error=error[1] if error else None,
                    )])  # fmt: skip
                    plan.recorded = True
        except Exception:  # noqa: BLE001 - the database is down or refused: keep the message on SQS instead
            self.logger.warning("could not reschedule the retry through the outbox", exc_info=True)
            if fallback is not None:
                try:
                    self._hide(delivery, fallback)
                except Exception:  # noqa: BLE001 - the queue's visibility timeout applies
                    self.logger.warning("could not set the retry delay either", exc_info=True)
                else:
                    self.logger.warning("retry delay shortened to what SQS can hold", extra={"asked_s": seconds, "set_s": fallback})
                    return Retry(fallback)
            return Retry(None)
        self.logger.info("retry rescheduled through the outbox", extra={"retry_in_s": seconds, "rescheduled_as": str(job_id)})
        return Retry(seconds, str(job_id))

    def _report(
        self,
        delivery: Delivery,
        job_name: str,
        outcome: Outcome,
        started: float,
        *,
        plan: RecordPlan | None = None,
        state: RunState | None = None,
        started_at: datetime | None = None,
        error: str | None = None,
        error_type: str | None = None,
        retry_in: int | None = None,
        rescheduled_as: str | None = None,
    ) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        if outcome in _LEDGER_STATUS and plan is not None:
            # A retry held in the outbox is 'pending' again: only its new message may run it, not this one delivered twice.
            status = "pending" if rescheduled_as is not None else _LEDGER_STATUS[outcome]
            self._record(plan, status, state=state, started_at=started_at, error=error, error_type=error_type)
        # Checked here because Powertools, when disabled, still prints once 100 values pile up unflushed.
        if not is_metrics_disabled():
            # Counts are summed and written once per batch (_flush_metrics): the metrics line is billed as log bytes,
            # and ten 1.0s cost what one 10.0 does not. Durations stay one value per job (percentiles need them),
            # rounded: seventeen digits of a float are bytes, not information.
            with self._outcome_lock:
                self._outcome_counts[outcome.metric] += 1
            if outcome in _LEDGER_STATUS:
                self.metrics.add_metric(name="JobDuration", unit=MetricUnit.Milliseconds, value=round(duration_ms, 1))
        if outcome is Outcome.SUCCEEDED:
            self.logger.info("job succeeded", extra={"duration_ms": round(duration_ms, 1)})
        latency_ms = None
        if delivery.enqueued_at is not None:
            latency_ms = (datetime.now(UTC) - delivery.enqueued_at).total_seconds() * 1000
        report = RunReport(
            job_name, delivery.job_id, delivery.attempt, outcome, duration_ms, error, retry_in,
            queue=delivery.queue_resource_name, latency_ms=latency_ms, rescheduled_as=rescheduled_as,
            progress=state.progress if state else None, result=state.result if state else None,
        )  # fmt: skip
        if plan is not None and plan.plan is Plan.RUN:
            plan.report = report  # told once the batch's outcome statement has recorded it (see __call__)
        else:
            self._notify(report)

    def _notify(self, report: RunReport) -> None:
        for observer in self.observers:
            try:
                observer(report)
            except Exception:  # noqa: BLE001 - an observer must never change a job's outcome
                self.logger.warning("run observer failed", exc_info=True)

    @staticmethod
    def _record(
        plan: RecordPlan,
        status: str,
        *,
        state: RunState | None = None,
        started_at: datetime | None = None,
        error: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Queue this run's outcome for the batch's outcome statement (runs this delivery did not take have none)."""
        if plan.recorded:
            return  # written in the transaction that held the retry in the outbox
        if state is not None and state.committed_with == (state.result, state.progress, state.progress_message):
            return  # the job's transaction recorded it all; nothing new since
        claim = plan.claim
        if plan.plan is Plan.RUN and claim is not None and claim.token is not None:
            job_id, token, attempt = claim.job_id, claim.token, claim.attempt
        elif plan.plan is Plan.UNLEDGERED and plan.start is not None and status != "queued":
            job_id, token, attempt = ledger.ledger_id(plan.start.delivery), None, plan.start.delivery.attempt
        else:
            return
        if error is not None and error_type and error.startswith(f"{error_type}: "):
            error = error[len(error_type) + 2 :]  # the ledger keeps the type in its own column
        plan.outcome = ledger.Outcome(
            job_id, token, status, started_at=started_at, error_type=error_type, error=error,
            result=state.result if state else None, progress=state.progress if state else None,
            progress_message=state.progress_message if state else None, attempt=attempt,
        )  # fmt: skip


# The ledger status each outcome writes; the others leave the ledger as it is.
_LEDGER_STATUS = {Outcome.SUCCEEDED: "succeeded", Outcome.RETRYING: "retrying", Outcome.DEAD: "dead"}


def job_handler(job: JobSpec, fn: JobFunction | None = None, **options: Any) -> Any:
    """Build the Lambda handler for ``job``. Use as a call or a decorator::

        handler = job_handler(EMAIL_SEND, send_email)

        @job_handler(EMAIL_SEND)
        def handler(payload: EmailSend, ctx: JobContext) -> None: ...
    """
    if fn is None:
        return lambda f: JobHandler(job, f, **options)
    return JobHandler(job, fn, **options)


def _visibility_too_long(exc: Exception) -> bool:
    """SQS's answer to a visibility past 12 h from the receive."""
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
    return code.endswith("InvalidParameterValue")
