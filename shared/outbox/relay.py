"""The relay: moves committed jobs from the outbox to SQS.

One cycle, in one database transaction:

1. claim up to ``batch_size`` due rows with ``FOR UPDATE SKIP LOCKED`` (other relays skip them, never wait);
2. publish them, grouped per queue, in SendMessageBatch calls of at most 10 entries and 256 KiB (several calls in
   parallel; a batch SQS still finds too long is split and sent again);
3. move the entries SQS reports ``Successful`` to the run ledger; entries it refused stay in the outbox with a
   growing retry delay and the error recorded;
4. commit.

A relay that dies after step 2 and before step 4 leaves its rows in the outbox (the transaction rolls back and the
row locks are released), so another cycle publishes them again: a duplicate message, never a lost job. Handlers are
written for at-least-once delivery anyway (SQS itself may deliver twice).

Any number of relays may run at once; ``SKIP LOCKED`` hands each a disjoint set of rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from datetime import timedelta
from typing import Any

import psycopg

from shared.envelope import SQS_MAX_BATCH_BYTES, SQS_MAX_MESSAGE_BYTES, attributes_size, message_attributes
from shared.outbox import QUERIES
from shared.queues import QueueDirectory

log = logging.getLogger("conveyor.relay")

SQS_BATCH_LIMIT = 10


def _error_code(exc: Exception) -> str | None:
    """The AWS error code of a botocore ClientError, if it is one."""
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


@dataclass(frozen=True)
class ClaimedJob:
    id: Any
    job_name: str
    queue: str
    payload: str
    created_at: Any

    @cached_property
    def attributes(self) -> dict[str, dict[str, str]]:
        return message_attributes(job_id=str(self.id), job_name=self.job_name, attempt=1, enqueued_at=self.created_at)

    @property
    def message_bytes(self) -> int:
        """What SQS counts against its size limits for this message: body and attributes."""
        return len(self.payload.encode("utf-8")) + attributes_size(self.attributes)


@dataclass
class RelayStats:
    published: int = 0
    failed: int = 0
    cycles: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: RelayStats) -> None:
        self.published += other.published
        self.failed += other.failed
        self.cycles += other.cycles
        self.errors.extend(other.errors)


class Relay:
    """Publishes due outbox rows. Use :meth:`drain` in a Lambda invocation and :meth:`run` in a long-lived process.

    ``admit`` (optional) is asked per queue before each cycle; queues it refuses are skipped this cycle. The local
    runtime uses it for backpressure, so a bulk enqueue does not pile thousands of messages into a slow emulator.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        sqs: Any,
        directory: QueueDirectory | None = None,
        *,
        batch_size: int = 500,
        publishers: int = 8,
        max_retry_delay: timedelta = timedelta(minutes=5),
        admit: Callable[[str], bool] | None = None,
        known_queues: Iterable[str] = (),
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self.sqs = sqs
        self.directory = directory or QueueDirectory(sqs)
        self.batch_size = batch_size
        self.max_retry_delay = max_retry_delay
        self.admit = admit
        self.known_queues = tuple(known_queues)
        self._pool = ThreadPoolExecutor(max_workers=publishers, thread_name_prefix="relay-publish")

    # -- one cycle -------------------------------------------------------------------------------------------

    def run_once(self) -> RelayStats:
        """Claim, publish and mark one batch. Returns what happened; raises on database errors."""
        conn = self._connection()
        skip = [q for q in self.known_queues if self.admit and not self.admit(q)]
        with conn.transaction():
            rows = conn.execute(
                QUERIES["outbox_claim"], {"limit": self.batch_size, "skip_queues": skip}
            ).fetchall()
            if not rows:
                return RelayStats(cycles=1)
            jobs = [ClaimedJob(*row) for row in rows]
            published, failed = self._publish(jobs)
            self._mark(conn, published, failed)
        stats = RelayStats(published=len(published), failed=len(failed), cycles=1)
        if failed:
            stats.errors = sorted({error for _, error in failed})
            log.warning("relay: SQS refused %d of %d jobs: %s", len(failed), len(jobs), "; ".join(stats.errors[:3]))
        return stats

    def _publish(self, jobs: list[ClaimedJob]) -> tuple[list[tuple[Any, str]], list[tuple[Any, str]]]:
        batches: list[list[ClaimedJob]] = []
        by_queue: dict[str, list[ClaimedJob]] = {}
        for job in jobs:
            by_queue.setdefault(job.queue, []).append(job)
        published: list[tuple[Any, str]] = []
        failed: list[tuple[Any, str]] = []
        for queue_jobs in by_queue.values():
            batch: list[ClaimedJob] = []
            batch_bytes = 0
            for job in queue_jobs:
                size = job.message_bytes
                if size > SQS_MAX_MESSAGE_BYTES:
                    # Cannot be sent as it is; it stays pending (retried slowly) with the reason, and the relay-lag
                    # alarm shows it. Only a payload written by SQL without conveyor.add_job can get here.
                    failed.append((job.id, f"MessageTooLong: {size} bytes; SQS accepts at most {SQS_MAX_MESSAGE_BYTES}"))
                    continue
                if batch and (len(batch) == SQS_BATCH_LIMIT or batch_bytes + size > SQS_MAX_BATCH_BYTES):
                    batches.append(batch)
                    batch, batch_bytes = [], 0
                batch.append(job)
                batch_bytes += size
            if batch:
                batches.append(batch)
        for ok, bad in self._pool.map(self._send_batch, batches):
            published.extend(ok)
            failed.extend(bad)
        return published, failed

    def _send_batch(self, batch: list[ClaimedJob]) -> tuple[list[tuple[Any, str]], list[tuple[Any, str]]]:
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
            if len(batch) > 1 and (_error_code(exc) or "").endswith("BatchRequestTooLong"):
                # SQS counts a little differently from our estimate: halve the batch rather than retry it whole
                # forever.
                middle = len(batch) // 2
                first_ok, first_bad = self._send_batch(batch[:middle])
                second_ok, second_bad = self._send_batch(batch[middle:])
                return first_ok + second_ok, first_bad + second_bad
            error = f"{type(exc).__name__}: {exc}"
            return [], [(job.id, error) for job in batch]
        ok = [(batch[int(entry["Id"])].id, entry["MessageId"]) for entry in response.get("Successful", [])]
        bad = [
            (batch[int(entry["Id"])].id, f"{entry.get('Code', 'Error')}: {entry.get('Message', '')}".strip())
            for entry in response.get("Failed", [])
        ]
        return ok, bad

    def _mark(self, conn: psycopg.Connection, published: list[tuple[Any, str]], failed: list[tuple[Any, str]]) -> None:
        if published:
            conn.execute(
                QUERIES["outbox_mark_published"],
                {"ids": [i for i, _ in published], "message_ids": [m for _, m in published]},
            )
        if failed:
            conn.execute(
                QUERIES["outbox_mark_failed"],
                {"ids": [i for i, _ in failed], "errors": [e for _, e in failed], "max_delay": self.max_retry_delay},
            )

    def lag(self) -> tuple[float, int]:
        """(seconds the oldest due job has waited, number of due jobs): the relay-lag alarm's input."""
        row = self._connection().execute(QUERIES["outbox_lag"]).fetchone()
        return (float(row[0]), int(row[1])) if row else (0.0, 0)

    # -- loops -----------------------------------------------------------------------------------------------

    def drain(self, max_seconds: float, *, stay: bool = False, idle_interval: float = 0.1) -> RelayStats:
        """Publish for up to ``max_seconds`` (a Lambda invocation's budget).

        By default it returns as soon as nothing is due. With ``stay=True`` it keeps polling until the deadline,
        so a relay started every minute keeps commit-to-SQS latency sub-second without an always-on server.
        """
        total = RelayStats()
        deadline = time.monotonic() + max_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            stats = self.run_once()
            total.add(stats)
            if stats.published + stats.failed < self.batch_size:
                if not stay:
                    break
                time.sleep(min(idle_interval, max(remaining, 0)))
        return total

    def run(self, stop: threading.Event, *, idle_interval: float = 0.05, on_cycle: Callable[[RelayStats], None] | None = None) -> None:
        """Publish until ``stop`` is set, polling every ``idle_interval`` seconds when idle.

        Polling rather than LISTEN/NOTIFY: NOTIFY takes a database-wide lock at commit, serialising every enqueuing
        transaction, which is too high a price for shaving tens of milliseconds off an idle relay's latency.
        Errors (the database, SQS, the admit check) are logged and retried with a capped backoff; the outbox keeps
        every job meanwhile.
        """
        failures = 0
        while not stop.is_set():
            try:
                stats = self.run_once()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - a long-lived relay must outlive any one failure
                failures += 1
                if isinstance(exc, psycopg.Error):
                    log.error("relay: database error (%s); retrying", exc)
                    self._discard_connection()
                else:
                    log.exception("relay: cycle failed; retrying")
                stop.wait(min(0.1 * 2**failures, 5.0))
                continue
            if on_cycle and (stats.published or stats.failed):
                on_cycle(stats)
            if stats.published + stats.failed < self.batch_size:
                stop.wait(idle_interval)

    # -- connection --------------------------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect()
            self._conn.autocommit = True
        return self._conn

    def _discard_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        self._discard_connection()
        self._pool.shutdown(wait=True)
