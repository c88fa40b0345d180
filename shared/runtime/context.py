"""What a job function gets besides its payload."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.database import Database
from shared.ledger import record as ledger
from shared.registry import JobSpec, Registry

if TYPE_CHECKING:
    import psycopg
    from aws_lambda_powertools import Logger

    from shared.ledger.flows import Child

# Progress writes are throttled to one per interval per run: a loop may call ctx.progress() on every item.
PROGRESS_WRITE_INTERVAL_SECONDS = 1.0


class RunTakenOver(Exception):
    """Another delivery took this run over (this one overran its ``stale_at``), so this worker may no longer record
    its outcome: the transaction of :meth:`JobContext.transaction` is rolled back and the message is left on SQS."""


class TransactionAlreadyCommitted(RuntimeError):
    """A run may commit one ``ctx.transaction()``: that commit marks it succeeded."""


@dataclass
class RunState:
    """This run's hold on its ledger row (None when the ledger was unreachable at start) and what it reported."""

    job_id: uuid.UUID | None = None
    token: uuid.UUID | None = None
    progress: int | None = None
    progress_message: str | None = None
    # When progress was last written; what is not written yet (throttled, or reported inside the job's
    # transaction) the outcome statement writes.
    progress_written_at: float = 0.0
    result: str | None = None
    # The job's transaction committed and marked the run succeeded; and whether it is open now.
    committed: bool = False
    in_transaction: bool = False
    # What the commit recorded (result, progress, message): the batch's outcome statement skips a run with nothing new.
    committed_with: tuple[Any, ...] | None = None
    # The start the ledger could not record (the database failed then): ctx.transaction() records the run itself.
    unrecorded_start: ledger.Start | None = None

    @property
    def ledgered(self) -> bool:
        return self.token is not None and self.job_id is not None


@dataclass
class JobContext:
    """The running job's identity and the tools to do its work.

    ``attempt`` is 1 on the first run and counts runs that started (from the run ledger; from SQS's receive count
    when the ledger was unreachable). ``scheduled_for`` is the period a scheduled run is for; ``parent_id`` the flow
    parent a child belongs to.
    """

    job_id: str
    job_name: str
    attempt: int
    max_attempts: int
    enqueued_at: datetime | None
    message_id: str
    logger: Logger
    database: Database
    registry: Registry | None = None
    lambda_context: Any = None
    scheduled_for: datetime | None = None
    parent_id: str | None = None
    run: RunState = field(default_factory=RunState)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    def connection(self) -> psycopg.Connection:
        """The container's connection (autocommit; use :meth:`transaction` to group statements)."""
        return self.database.connection()

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """A transaction whose commit also marks this run succeeded: effectively-once database effects.

        The job's writes and the ``succeeded`` mark commit together or not at all. A redelivery of a job whose
        transaction committed is acknowledged without running; a crash before the commit leaves nothing, and the
        retry runs on a clean slate. If another delivery took the run over meanwhile (this one overran its time),
        the transaction is rolled back (:class:`RunTakenOver`), so the work is done once. Once it commits the run is
        succeeded: an exception raised after it is logged, not retried. Use one per run (a second one raises
        :class:`TransactionAlreadyCommitted`); inside it, nested ``ctx.transaction()`` and ``ctx.enqueue`` are
        savepoints. Effects outside the database (an email, an HTTP call) stay at-least-once: give them an
        idempotency key such as ``ctx.job_id``.
        """
        conn = self.connection()
        if conn.info.transaction_status != 0:
            if not self.run.in_transaction:
                # A transaction the job opened itself: nesting in it would commit the work without the mark.
                raise RuntimeError(
                    f"job {self.job_name}: ctx.transaction() inside a transaction the job opened on ctx.connection() "
                    "would not mark the run succeeded; make ctx.transaction() the outermost transaction"
                )
            with conn.transaction():  # nested in ctx.transaction(): a savepoint
                yield conn
            return
        if self.run.committed:
            raise TransactionAlreadyCommitted(
                f"job {self.job_name} {self.job_id}: this run already committed its ctx.transaction(), which marked it "
                "succeeded; do all of the run's database work in one ctx.transaction()"
            )
        with conn.transaction():
            self.run.in_transaction = True
            try:
                yield conn
            finally:
                self.run.in_transaction = False
            if self.run.ledgered:
                assert self.run.job_id is not None and self.run.token is not None
                marked = ledger.mark_succeeded(
                    conn, self.run.job_id, self.run.token, result=self.run.result,
                    progress=self.run.progress, progress_message=self.run.progress_message,
                )  # fmt: skip
            elif self.run.unrecorded_start is not None:
                # The ledger missed this run's start: check and mark in this transaction, so the work still commits
                # only if no other delivery of the job finished it meanwhile.
                marked = ledger.mark_succeeded_unfenced(
                    conn, self.run.unrecorded_start, attempt=self.attempt, result=self.run.result
                )
            else:
                marked = True  # no database configured for the ledger: nothing to fence against
            if not marked:
                raise RunTakenOver(
                    f"job {self.job_name} {self.job_id}: another delivery took this run over or finished it; its work "
                    "is rolled back"
                )
        self.run.committed = True
        self.run.committed_with = (self.run.result, self.run.progress, self.run.progress_message)

    def enqueue(self, job: JobSpec | str, payload: Any, **options: Any) -> uuid.UUID:
        """Enqueue a follow-up job. Inside ``with ctx.transaction()`` it joins that transaction (a savepoint);
        otherwise it commits on its own."""
        from shared.outbox import enqueue

        conn = self.connection()
        with conn.transaction():
            return enqueue(conn, job, payload, registry=options.pop("registry", self.registry), **options)

    def children(self) -> list[Child]:
        """A flow parent's children, in the order given to ``enqueue_flow``: id, job name, status, result and last
        error of each. Read in the job's transaction when one is open."""
        from shared.ledger.flows import children

        return children(self.connection(), self.job_id)

    def set_result(self, value: Any) -> None:
        """Keep a small JSON result (at most 16 KiB) on the run, for a flow's parent or an operator to read. The
        handler's return value does the same; inside ``ctx.transaction()`` call this before it ends, so the result
        commits with the run (a flow's parent may start the moment it does)."""
        self.run.result = ledger.result_json(value)

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report progress (0-100). Never goes backwards; written at most once a second (and at 100), so it is cheap
        to call in a loop; what is not written yet is written with the run's outcome."""
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent) or not 0 <= percent <= 100:
            raise ValueError(f"progress must be a number from 0 to 100, got {percent!r}")
        if message is not None and not isinstance(message, str):
            raise ValueError(f"progress message must be text, got {type(message).__name__}")
        value = int(percent)
        state = self.run
        if state.progress is not None and value < state.progress:
            return
        state.progress = value
        if message is not None:
            state.progress_message = message[: ledger.MAX_PROGRESS_MESSAGE_CHARS]
        if not state.ledgered:
            return
        now = time.monotonic()
        if value < 100 and now - state.progress_written_at < PROGRESS_WRITE_INTERVAL_SECONDS:
            return
        conn = self.connection()
        if conn.info.transaction_status != 0:
            return  # inside the job's transaction: a write now would be invisible until it commits
        try:
            assert state.job_id is not None and state.token is not None
            ledger.record_progress(conn, state.job_id, state.token, value, state.progress_message)
        except Exception:  # noqa: BLE001 - progress is informational; the outcome statement writes it again
            self.logger.warning("could not record progress", exc_info=True)
            return
        state.progress_written_at = now
