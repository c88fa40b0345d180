"""The relay: moves committed jobs from the outbox to SQS.

One cycle, with no transaction open while SQS is called:

1. **lease** up to ``batch_size`` due rows, and at most ``max_claim_bytes`` of payloads, in one short statement
   (``FOR UPDATE SKIP LOCKED`` inside it, so relays never wait for each other): each row gets this cycle's claim
   token and ``locked_until = now() + lease``;
2. **publish** them with no database transaction open, grouped per queue, in SendMessageBatch calls of at most 10
   entries and 256 KiB (several calls in parallel; a batch SQS still finds too long is split and sent again). A batch
   is not started once the lease is too close to its end for the slowest call to finish inside it;
3. **mark**, in a second short transaction: rows SQS accepted leave the outbox for the run ledger; rows it refused
   are retried later with a growing delay, or, after ``max_publish_attempts`` or a refusal that can never succeed
   (too long, invalid contents), moved to ``conveyor.outbox_dead`` with the reason; rows not sent are released.

A relay that dies (or loses its connection) after step 2 leaves its rows leased; once the lease ends another cycle
publishes them again: a duplicate message, never a lost job. Handlers are written for at-least-once delivery anyway
(SQS itself may deliver twice). Because no row lock or transaction spans a network call, a stalled SQS call or an
idle-in-transaction timeout cannot make every later cycle republish the same rows, and ``pg_stat_activity`` never
shows the relay idle in a transaction.

Any number of relays may run at once: SKIP LOCKED and the lease hand each a disjoint set of rows.

Between cycles a relay polls adaptively (:class:`PollInterval`): ~1 ms after a cycle that found work, doubling while
idle, at most 4 ms for the next ~half second, then up to the loop's idle interval (50 ms for :meth:`Relay.run`,
100 ms for :meth:`Relay.drain`). A steady trickle of jobs is picked up within milliseconds, and an idle relay costs
what a fixed interval did.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

import psycopg

from shared.envelope import (
    ATTR_ATTEMPT, ATTR_ENQUEUED_AT, ATTR_JOB_ID, ATTR_JOB_NAME, SQS_MAX_MESSAGE_BYTES, attributes_size, message_attributes,
    sqs_batches, utf8_length,
)
from shared.outbox import QUERIES
from shared.outbox.dead import dead_count as count_dead
from shared.queues import QueueDirectory

log = logging.getLogger("conveyor.relay")

# Entry-level SQS refusals that no retry can fix: the message itself is unacceptable.
PERMANENT_SQS_ERRORS = frozenset({"InvalidMessageContents", "MessageTooLong", "InvalidParameterValue"})
# How long one SendMessageBatch may take at worst with relay_client_config(): 3 attempts of (connect 2 s + read 5 s)
# plus backoff. A batch is started only while at least this much of the lease is left.
SEND_BUDGET = timedelta(seconds=25)
# SendMessageBatch calls in flight at once: a full batch of 500 is 50 calls, so at ~15 ms a call 16 threads send it in
# four rounds (~60 ms) where 8 took seven (issue 16: 3.7k jobs/s per relay against a 15 ms SQS with 8).
PUBLISHERS = 16
# Payload bytes one claim may hold. The relay keeps a batch (and, leasing ahead, the next) in memory while it publishes
# it: 500 rows of 1 KB are 0.5 MB, but 500 near SQS's 1 MiB limit would be 500 MB. 8 MiB keeps two batches and the
# requests being built well inside the relay's 128 MB (docs/BENCHMARKS.md "Relay memory"), and at 8 MiB a cycle is
# still 8+ full SendMessageBatch calls.
MAX_CLAIM_BYTES = 8 * 1024 * 1024
# Error texts a RelayStats keeps when cycles are added up (RelayStats.add).
MAX_KEPT_ERRORS = 100


def relay_client_config() -> Any:
    """botocore settings for the relay's SQS client: timeouts well inside the lease, so a stalled call ends (and its
    rows are retried) long before another relay may take the rows over."""
    from botocore.config import Config

    return Config(
        connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 3},
        # One pooled HTTP connection per publisher thread (botocore's default is 10).
        max_pool_connections=PUBLISHERS,
    )


# Request-level errors that say nothing about the messages or their queue: SQS or the network is unwell. The rows
# are released untouched (no attempt counted), and the cycle counts as failed so the loop backs off.
TRANSIENT_SQS_ERRORS = frozenset({
    "Throttling", "ThrottlingException", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "ServiceUnavailable", "InternalError", "InternalFailure", "RequestTimeout", "RequestTimeoutException",
    "ExpiredToken", "ExpiredTokenException", "RequestExpired",
})


def _is_transient(exc: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return _error_code(exc) in TRANSIENT_SQS_ERRORS or status >= 500
    # Connection refused or reset, timeouts, DNS: botocore's own errors, raised before SQS could judge the request.
    return isinstance(exc, BotoCoreError)


def _error_code(exc: Exception) -> str | None:
    """The AWS error code of a botocore ClientError, if it is one."""
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class PollInterval:
    """The wait before a relay's next claim: ``busy`` seconds after a cycle that found work, then doubling with each
    idle cycle, held at ``warm`` for the first ``linger`` idle cycles after work, then on up to ``idle``.

    Polling rather than LISTEN/NOTIFY in the producer's transaction: NOTIFY takes a database-wide lock at commit and
    cost concurrent producers 15-20 % (issue 16). A job arriving while the relay is busy, or soon after, waits at
    most ``warm`` (a stream of jobs with gaps, as at 200 jobs/s on a loaded machine, would otherwise meet a wait that
    had already doubled to 16 or 32 ms: the pickup's p99); a relay left idle settles at ``idle`` after
    ``linger`` cycles (about half a second), so its steady cost is that of a fixed interval.
    """

    def __init__(self, *, busy: float = 0.001, idle: float = 0.05, warm: float = 0.004, linger: int = 128) -> None:
        if busy < 0 or idle < 0:
            raise ValueError(f"poll intervals must not be negative, got busy={busy}, idle={idle}")
        # An idle interval below the busy one (0: poll without pause, as a fixed interval of 0 did) caps both.
        busy = min(busy, idle)
        if linger < 0:
            raise ValueError(f"linger must be a number of cycles, at least 0, got {linger}")
        self.busy_interval = busy
        self.idle_interval = idle
        # Within [busy, idle]: busy == idle is a fixed interval (the benchmarks' "before"), warm or not.
        self.warm_interval = min(max(warm, busy), idle)
        self.linger = linger
        # A relay starts as if idle: nothing says work is waiting.
        self._current = idle
        self._idle_cycles = linger

    def busy(self) -> float:
        """After a cycle that claimed rows: poll again soon, more may be on its way."""
        self._current = self.busy_interval
        self._idle_cycles = 0
        return self._current

    def idle(self) -> float:
        """After a cycle that found nothing: wait twice as long as last time, at most ``warm`` while the last work
        is fewer than ``linger`` cycles back, at most ``idle`` after that."""
        cap = self.warm_interval if self._idle_cycles < self.linger else self.idle_interval
        self._idle_cycles += 1
        self._current = min(self._current * 2, cap)
        return self._current


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: Any
    job_name: str
    queue: str
    payload: str
    # The message attributes (shared.envelope.message_attributes) and what SQS counts for body and attributes.
    attributes: dict[str, dict[str, str]]
    message_bytes: int


class ClaimedJobs:
    """Turns one cycle's claimed rows into :class:`ClaimedJob` s, building each repeated attribute once.

    A cycle's rows mostly share their job name and attempt, and rows enqueued in one transaction their enqueue time:
    those attribute values (and their sizes) are made once per distinct value and shared by the jobs' attribute
    dicts (boto3 only reads them). Only the job id is the job's own. Rows with a flow parent or a schedule period,
    rarer, get :func:`~shared.envelope.message_attributes` whole. The result equals message_attributes for every row.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, Any], tuple[dict[str, str], int]] = {}

    def _value(self, name: str, key: Any, make: Callable[[], dict[str, str]]) -> tuple[dict[str, str], int]:
        found = self._values.get((name, key))
        if found is None:
            value = make()
            found = self._values[(name, key)] = (value, attributes_size({name: value}))
        return found

    def job(self, row: Sequence[Any]) -> ClaimedJob:
        row_id, job_name, queue, payload, created_at, attempt, job_id, parent_id, scheduled_for = row
        job_id = job_id if isinstance(job_id, str) else str(job_id or row_id)  # the claim returns it as text
        if parent_id is not None or scheduled_for is not None:
            attributes = message_attributes(
                job_id=job_id, job_name=job_name, attempt=attempt, enqueued_at=created_at,
                parent_id=str(parent_id) if parent_id is not None else None, scheduled_for=scheduled_for,
            )
            size = attributes_size(attributes)
        else:
            name, name_size = self._value(ATTR_JOB_NAME, job_name, lambda: {"DataType": "String", "StringValue": job_name})
            tries, tries_size = self._value(ATTR_ATTEMPT, attempt, lambda: {"DataType": "Number", "StringValue": str(attempt)})
            enqueued, enqueued_size = self._value(
                ATTR_ENQUEUED_AT, created_at, lambda: {"DataType": "String", "StringValue": created_at.astimezone(UTC).isoformat()}
            )
            attributes = {
                ATTR_JOB_ID: {"DataType": "String", "StringValue": job_id},
                ATTR_JOB_NAME: name,
                ATTR_ATTEMPT: tries,
                ATTR_ENQUEUED_AT: enqueued,
            }
            # The id is ASCII (a uuid's text).
            size = _JOB_ID_OVERHEAD + len(job_id) + name_size + tries_size + enqueued_size
        body = utf8_length(payload)
        return ClaimedJob(row_id, job_name, queue, payload, attributes, body + size)


_JOB_ID_OVERHEAD = attributes_size({ATTR_JOB_ID: {"DataType": "String", "StringValue": ""}})


@dataclass(frozen=True)
class Refusal:
    """One job SQS did not take, and whether trying again could ever help."""

    id: Any
    error: str
    permanent: bool = False


@dataclass
class RelayStats:
    published: int = 0
    failed: int = 0
    # Rows moved to conveyor.outbox_dead this time (a subset of ``failed``).
    dead: int = 0
    # Rows released without an attempt: SQS or the network failed the request, or the lease ran short.
    unsent: int = 0
    cycles: int = 0
    # Cycles that failed as a whole (the database or SQS unreachable); their rows stay in the outbox.
    cycle_errors: int = 0
    errors: list[str] = field(default_factory=list)
    # The cycle's claim was full (batch_size rows, or its byte budget): more may be due at once. Not summed by add().
    full: bool = False
    # Published per queue label: the local runtime's backpressure counts what it sent since its last depth reading.
    published_by_queue: dict[str, int] = field(default_factory=dict)

    def add(self, other: RelayStats) -> None:
        self.published += other.published
        self.failed += other.failed
        self.dead += other.dead
        self.unsent += other.unsent
        self.cycles += other.cycles
        self.cycle_errors += other.cycle_errors
        self.errors.extend(other.errors)
        # The latest only: a resident relay adds every cycle here, and steady refusals must not grow it without end.
        del self.errors[:-MAX_KEPT_ERRORS]
        for queue, count in other.published_by_queue.items():
            self.published_by_queue[queue] = self.published_by_queue.get(queue, 0) + count


def claim(
    conn: psycopg.Connection,
    *,
    token: uuid.UUID,
    limit: int,
    skip_queues: Sequence[str],
    lease: timedelta,
    max_bytes: int = MAX_CLAIM_BYTES,
) -> list[tuple[Any, ...]]:
    """Lease up to ``limit`` due rows, oldest first, whose payloads add up to at most ``max_bytes`` (one row at
    least) (outbox_claim), on an autocommit connection. A transaction of its own, so the plan setting
    (outbox_claim_plan) covers the claim only; it commits before anything is sent."""
    with conn.transaction():
        conn.execute(QUERIES["outbox_claim_plan"])
        return conn.execute(
            QUERIES["outbox_claim"],
            {"limit": limit, "skip_queues": list(skip_queues), "token": token, "lease": lease, "max_bytes": max_bytes},
        ).fetchall()


@dataclass(frozen=True)
class _Claim:
    token: uuid.UUID
    rows: list[tuple[Any, ...]]
    lease_ends: float  # time.monotonic() after which no send of these rows may start


class Relay:
    """Publishes due outbox rows. Use :meth:`drain` in a Lambda invocation and :meth:`run` in a long-lived process.

    ``admit`` (optional) is asked per queue before each cycle; queues it refuses are skipped this cycle. The local
    runtime uses it for backpressure, so a bulk enqueue does not pile thousands of messages into a slow emulator.
    ``lease`` is how long claimed rows stay reserved for this relay; it bounds both how long a crashed relay delays
    its rows and how long a publish may take (see ``SEND_BUDGET``). With ``overlap`` (and no ``admit``), a cycle that
    claimed a full batch leases the next one, on a second connection, while it publishes and marks its own.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        sqs: Any,
        directory: QueueDirectory | None = None,
        *,
        batch_size: int = 500,
        publishers: int = PUBLISHERS,
        max_retry_delay: timedelta = timedelta(minutes=5),
        max_publish_attempts: int = 20,
        lease: timedelta = timedelta(seconds=60),
        send_budget: timedelta = SEND_BUDGET,
        admit: Callable[[str], bool] | None = None,
        known_queues: Iterable[str] = (),
        overlap: bool = True,
        max_claim_bytes: int = MAX_CLAIM_BYTES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_publish_attempts < 1:
            raise ValueError(f"max_publish_attempts must be at least 1, got {max_publish_attempts}")
        if lease <= send_budget:
            raise ValueError(f"lease ({lease}) must be longer than the time one send may take ({send_budget})")
        # Claims, marks and reads on one connection; batches leased ahead on a second (see run_once).
        self._main = _Autocommit(connect)
        self._ahead = _Autocommit(connect)
        self.sqs = sqs
        self.directory = directory or QueueDirectory(sqs)
        self.batch_size = batch_size
        self.max_retry_delay = max_retry_delay
        self.max_publish_attempts = max_publish_attempts
        self.lease = lease
        self.send_budget = send_budget
        self.admit = admit
        self.known_queues = tuple(known_queues)
        self.overlap = overlap
        if max_claim_bytes < 1:
            raise ValueError(f"max_claim_bytes must be at least 1, got {max_claim_bytes}")
        self.max_claim_bytes = max_claim_bytes
        self._claimer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-claim")
        self._prefetch: Future[_Claim] | None = None
        if publishers < 1:
            raise ValueError(f"publishers must be at least 1, got {publishers}")
        self.publishers = publishers
        self._pool = ThreadPoolExecutor(max_workers=publishers, thread_name_prefix="relay-publish")
        # What :meth:`run` has done so far (the local runtime and its tests read it).
        self.totals = RelayStats()

    # -- one cycle -------------------------------------------------------------------------------------------

    def run_once(self, *, send_until: float | None = None) -> RelayStats:
        """Lease, publish and mark one batch. Returns what happened; raises on database errors (rows already
        published then come back after the lease: duplicates, never losses). No send starts after ``send_until``
        (``time.monotonic()``; a drain's end), so an invocation's last cycle cannot outlive its function."""
        current = self._take_prefetched() or self._claim(self._connection())
        if not current.rows:
            return RelayStats(cycles=1)
        rows, token = current.rows, current.token
        send_until = current.lease_ends if send_until is None else min(send_until, current.lease_ends)
        full = self._full(rows)
        if self.overlap and self.admit is None and full and time.monotonic() < send_until:
            # A full batch: more is probably due. Lease the next batch while this one is published and marked.
            # Safe because leased rows are not due: the two batches are disjoint, and each is marked only after
            # SQS accepted it. Not with ``admit``: its answer must see this batch's sends.
            claim_conn = self._claim_connection()
            self._prefetch = self._claimer.submit(self._claim, claim_conn)
        make = ClaimedJobs().job
        jobs = [make(row) for row in rows]
        published, refused, unsent = self._publish(jobs, send_until)
        dead = self._mark(token, published, refused, unsent)
        stats = RelayStats(published=len(published), failed=len(refused), dead=dead, unsent=len(unsent), cycles=1, full=full)
        if published:
            queue_of = {job.id: job.queue for job in jobs}
            for row_id, _ in published:
                queue = queue_of[row_id]
                stats.published_by_queue[queue] = stats.published_by_queue.get(queue, 0) + 1
        if refused:
            stats.errors = sorted({r.error for r in refused})
            log.warning("relay: SQS refused %d of %d jobs: %s", len(refused), len(jobs), "; ".join(stats.errors[:3]))
        if dead:
            log.error("relay: %d job(s) can never be published; moved to conveyor.outbox_dead (`conveyor outbox --failed`)", dead)
        if unsent:
            log.warning("relay: %d job(s) released unsent (SQS unreachable or the lease ran short); retrying", len(unsent))
        return stats

    def _full(self, rows: list[tuple[Any, ...]]) -> bool:
        """Whether the claim may have left due rows behind: it took ``batch_size`` rows, or its payloads came so near
        ``max_claim_bytes`` that the next row might not have fitted (below that, every due row would have)."""
        if len(rows) >= self.batch_size:
            return True
        # In bytes, as the claim counts (octet_length): a payload of "é"s is twice its characters.
        size = sum(utf8_length(row[3]) for row in rows)
        return size > self.max_claim_bytes - SQS_MAX_MESSAGE_BYTES

    def _claim(self, conn: psycopg.Connection) -> _Claim:
        skip = [q for q in self.known_queues if self.admit and not self.admit(q)]
        token = uuid.uuid4()
        # Send only while the slowest call still ends inside the lease, measured from before the claim.
        lease_ends = time.monotonic() + (self.lease - self.send_budget).total_seconds()
        rows = claim(conn, token=token, limit=self.batch_size, skip_queues=skip, lease=self.lease, max_bytes=self.max_claim_bytes)
        return _Claim(token, rows, lease_ends)

    def _take_prefetched(self) -> _Claim | None:
        """The batch leased during the last cycle, if any; its claim's error, if it failed (nothing was leased)."""
        future, self._prefetch = self._prefetch, None
        if future is None:
            return None
        try:
            return future.result()
        except psycopg.Error:
            self._discard_claim_connection()
            raise

    def _release_prefetched(self) -> None:
        """Give back a batch leased ahead that no cycle will publish (the loop is ending): claimable again at once
        rather than after the lease."""
        try:
            pending = self._take_prefetched()
        except Exception:  # noqa: BLE001 - the claim failed, so nothing is leased
            return
        if pending is None or not pending.rows:
            return
        try:
            self._connection().execute(QUERIES["outbox_release"], {"ids": [row[0] for row in pending.rows], "token": pending.token})
        except psycopg.Error as exc:
            log.warning("relay: could not release %d rows leased ahead (%s); they come back when the lease ends", len(pending.rows), exc)
            self._discard_connection()

    def _publish(
        self, jobs: list[ClaimedJob], send_until: float
    ) -> tuple[list[tuple[Any, str]], list[Refusal], list[Any]]:
        batches: list[list[ClaimedJob]] = []
        by_queue: dict[str, list[ClaimedJob]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, []).append(job)
        published: list[tuple[Any, str]] = []
        refused: list[Refusal] = []
        unsent: list[Any] = []
        for queue_jobs in by_queue.values():
            sendable: list[ClaimedJob] = []
            for job in queue_jobs:
                size = job.message_bytes
                if size > SQS_MAX_MESSAGE_BYTES:
                    # Only a row written without enqueue()/conveyor.add_job can get here; it can never be sent.
                    refused.append(Refusal(job.id, f"MessageTooLong: {size} bytes; SQS accepts at most {SQS_MAX_MESSAGE_BYTES}", permanent=True))
                    continue
                sendable.append(job)
            batches.extend(sqs_batches(sendable, lambda job: job.message_bytes))

        def send(batch: list[ClaimedJob]) -> tuple[list[tuple[Any, str]], list[Refusal], list[Any]]:
            if time.monotonic() > send_until:
                return [], [], [job.id for job in batch]
            return self._send_batch(batch)

        def send_each(group: list[list[ClaimedJob]]) -> list[tuple[list[tuple[Any, str]], list[Refusal], list[Any]]]:
            return [send(batch) for batch in group]

        if len(batches) <= 1:
            # One request (the usual cycle at a trickle): sent from this thread, without a hop through the pool.
            results = [send(batch) for batch in batches]
        else:
            # One task per publisher thread, each sending its share of the requests in turn: 8 futures a cycle
            # rather than one per request (50 for a full batch), which cost more than an instant SQS call.
            groups = [batches[i::self.publishers] for i in range(min(self.publishers, len(batches)))]
            results = [result for group in self._pool.map(send_each, groups) for result in group]
        for ok, bad, skipped in results:
            published.extend(ok)
            refused.extend(bad)
            unsent.extend(skipped)
        return published, refused, unsent

    def _send_batch(self, batch: list[ClaimedJob]) -> tuple[list[tuple[Any, str]], list[Refusal], list[Any]]:
        """(published, refused, unsent) for one SendMessageBatch."""
        try:
            url = self.directory.url(batch[0].queue)
            response = self.sqs.send_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(index), "MessageBody": job.payload, "MessageAttributes": job.attributes}
                    for index, job in enumerate(batch)
                ],
            )
        except Exception as exc:  # noqa: BLE001 - any failure leaves the whole batch pending, to be retried
            code = _error_code(exc) or ""
            if len(batch) > 1 and (code.endswith("BatchRequestTooLong") or code in PERMANENT_SQS_ERRORS):
                # SQS counts size a little differently from our estimate, or one entry spoils the request: halve the
                # batch until the culprit stands alone, rather than retry the whole batch forever.
                middle = len(batch) // 2
                first = self._send_batch(batch[:middle])
                second = self._send_batch(batch[middle:])
                return first[0] + second[0], first[1] + second[1], first[2] + second[2]
            if _is_transient(exc):
                log.warning("relay: SQS request failed (%s: %s); the batch stays pending", type(exc).__name__, exc)
                return [], [], [job.id for job in batch]
            # The queue itself is refused (missing, no permission) or something unexpected: counts as an attempt.
            error = f"{type(exc).__name__}: {exc}"
            return [], [Refusal(job.id, error, code in PERMANENT_SQS_ERRORS) for job in batch], []
        ok = [(batch[int(entry["Id"])].id, entry["MessageId"]) for entry in response.get("Successful", [])]
        bad = [
            Refusal(
                batch[int(entry["Id"])].id,
                f"{entry.get('Code', 'Error')}: {entry.get('Message', '')}".strip(),
                permanent=entry.get("Code") in PERMANENT_SQS_ERRORS,
            )
            for entry in response.get("Failed", [])
        ]
        return ok, bad, []

    def _mark(self, token: uuid.UUID, published: list[tuple[Any, str]], refused: list[Refusal], unsent: list[Any]) -> int:
        """Record the outcome in one short transaction; returns how many rows went to ``outbox_dead``.

        Retried once on a fresh connection: the rows are leased to us, so nobody else touches them meanwhile, and
        a mark that lands avoids the duplicate the lease's end would otherwise cause.
        """
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with conn.transaction():
                    return self._write_marks(conn, token, published, refused, unsent)
            except psycopg.OperationalError:
                self._discard_connection()
                if attempt == 2:
                    raise
                log.warning("relay: lost the database while marking %d published job(s); retrying once", len(published))
        return 0  # pragma: no cover - the loop returns or raises

    def _write_marks(
        self, conn: psycopg.Connection, token: uuid.UUID, published: list[tuple[Any, str]], refused: list[Refusal], unsent: list[Any]
    ) -> int:
        dead = 0
        conn.execute(QUERIES["outbox_mark_plan"])
        if published:
            conn.execute(
                QUERIES["outbox_mark_published"],
                {"ids": [i for i, _ in published], "message_ids": [m for _, m in published]},
            )
        if refused:
            conn.execute(QUERIES["outbox_lock_flow_parents"], {"ids": [r.id for r in refused]})
            row = conn.execute(
                QUERIES["outbox_mark_failed"],
                {
                    "ids": [r.id for r in refused],
                    "errors": [r.error[:4000] for r in refused],
                    "permanent": [r.permanent for r in refused],
                    "token": token,
                    "max_attempts": self.max_publish_attempts,
                    "max_delay": self.max_retry_delay,
                },
            ).fetchone()
            dead = int(row[0]) if row else 0
        if unsent:
            conn.execute(QUERIES["outbox_release"], {"ids": unsent, "token": token})
        return dead

    def lag(self) -> tuple[float, int]:
        """(seconds the oldest due job has waited, number of due jobs): the relay-lag alarm's input."""
        return outbox_lag(self._connection())

    def dead_count(self) -> int:
        """Rows in ``conveyor.outbox_dead``: jobs that will not run until someone requeues them (an alarm's input)."""
        return count_dead(self._connection())

    # -- loops -----------------------------------------------------------------------------------------------

    def _safe_cycle(self, send_until: float | None = None) -> RelayStats | None:
        """One cycle that never raises: a relay must outlive any one failure (the outbox keeps every job)."""
        try:
            return self.run_once(send_until=send_until)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, psycopg.Error):
                log.error("relay: database error (%s); reconnecting", str(exc).strip().replace("\n", " "))
                self._discard_connection()
            else:
                log.exception("relay: cycle failed; retrying")
            return None

    def _idle(self, stats: RelayStats) -> bool:
        """Nothing more is due: the cycle's claim was not full (by rows or by bytes) and it sent all it claimed (rows
        released unsent are more work, whatever the batch's size)."""
        return stats.unsent == 0 and not stats.full

    @staticmethod
    def _stalled(stats: RelayStats) -> bool:
        """A cycle that claimed rows but could send none of them (SQS unreachable): back off as after an error."""
        return stats.unsent > 0 and stats.published == 0 and stats.failed == 0

    @staticmethod
    def _backoff(failures: int) -> float:
        return min(0.1 * 2**failures, 5.0)

    def drain(
        self, max_seconds: float, *, stay: bool = False, idle_interval: float = 0.1, busy_interval: float = 0.001,
        on_wait: Callable[[float], None] | None = None,
    ) -> RelayStats:
        """Publish for up to ``max_seconds`` (a Lambda invocation's budget).

        By default it returns as soon as nothing is due. With ``stay=True`` it keeps polling until the deadline
        (adaptively: ``busy_interval`` after a cycle that found work, doubling up to ``idle_interval`` while idle;
        see :class:`PollInterval`), so a relay started every minute picks jobs up within milliseconds without an
        always-on server. Failed cycles (the database restarting, SQS unreachable) are retried with a capped backoff
        until the deadline, exactly as in :meth:`run`. No send starts after the deadline: rows claimed too late are
        released for the next run, so the caller's own timeout needs only ``send_budget`` beyond ``max_seconds``.
        ``on_wait`` is told each poll wait chosen (seconds), before it is cut to the time left.
        """
        total = RelayStats()
        deadline = time.monotonic() + max_seconds
        poll = PollInterval(busy=busy_interval, idle=idle_interval)
        failures = 0
        try:
            while deadline - time.monotonic() > 0:
                stats = self._safe_cycle(send_until=deadline)
                if stats is not None:
                    total.add(stats)
                if stats is None or self._stalled(stats):
                    failures += 1
                    total.cycle_errors += 1
                    time.sleep(min(self._backoff(failures), max(deadline - time.monotonic(), 0)))
                    continue
                failures = 0
                wait = self._next_wait(stats, poll)
                if wait is None:
                    continue
                if not stay:
                    break
                if on_wait:
                    on_wait(wait)
                time.sleep(min(wait, max(deadline - time.monotonic(), 0)))
        finally:
            self._release_prefetched()
        return total

    def run(
        self, stop: threading.Event, *, idle_interval: float = 0.05, busy_interval: float = 0.001,
        on_cycle: Callable[[RelayStats], None] | None = None, on_wait: Callable[[float], None] | None = None,
    ) -> None:
        """Publish until ``stop`` is set, polling adaptively: ``busy_interval`` seconds after a cycle that found
        work, doubling up to ``idle_interval`` while idle (:class:`PollInterval`).

        Polling rather than LISTEN/NOTIFY: NOTIFY takes a database-wide lock at commit, serialising every enqueuing
        transaction, which is too high a price for the few milliseconds adaptive polling leaves.
        Errors (the database, SQS, the admit check) are logged and retried with a capped backoff; the outbox keeps
        every job meanwhile. ``on_cycle`` hears of every cycle that published or refused something, ``on_wait`` of
        every poll wait chosen (seconds).
        """
        poll = PollInterval(busy=busy_interval, idle=idle_interval)
        failures = 0
        try:
            while not stop.is_set():
                stats = self._safe_cycle()
                if stats is not None:
                    self.totals.add(stats)
                if stats is None or self._stalled(stats):
                    failures += 1
                    stop.wait(self._backoff(failures))
                    continue
                failures = 0
                if on_cycle and (stats.published or stats.failed):
                    on_cycle(stats)
                wait = self._next_wait(stats, poll)
                if wait is not None:
                    if on_wait:
                        on_wait(wait)
                    stop.wait(wait)
        finally:
            # Also when a callback raised: a batch leased ahead is given back now, not when its lease ends.
            self._release_prefetched()

    def _next_wait(self, stats: RelayStats, poll: PollInterval) -> float | None:
        """None (claim again at once) while a full batch says more is due; else the adaptive poll's next wait."""
        if not self._idle(stats):
            poll.busy()
            return None
        return poll.busy() if stats.published or stats.failed or stats.unsent else poll.idle()

    # -- connection --------------------------------------------------------------------------------------------

    @property
    def _conn(self) -> psycopg.Connection | None:
        """The main connection, if open (tests read its backend's pid)."""
        return self._main.conn

    def _connection(self) -> psycopg.Connection:
        return self._main.get()

    def _discard_connection(self) -> None:
        self._main.discard()

    def _claim_connection(self) -> psycopg.Connection:
        return self._ahead.get()

    def _discard_claim_connection(self) -> None:
        self._ahead.discard()

    def close(self) -> None:
        self._release_prefetched()
        self._discard_connection()
        self._discard_claim_connection()
        self._pool.shutdown(wait=True)
        self._claimer.shutdown(wait=True)


class _Autocommit:
    """One autocommit connection, opened on first use and again after it broke or was discarded."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self.conn: psycopg.Connection | None = None

    def get(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = self._connect()
            self.conn.autocommit = True
        return self.conn

    def discard(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped either way
                pass


def outbox_lag(conn: psycopg.Connection) -> tuple[float, int]:
    """(seconds the oldest due job has waited, number of due jobs; 0 and 0 when none is due): what the relay-lag
    alarm watches and the operations health check reads, so the two cannot disagree."""
    row = conn.execute(QUERIES["outbox_lag"]).fetchone()
    return (float(row[0]), int(row[1])) if row else (0.0, 0)
