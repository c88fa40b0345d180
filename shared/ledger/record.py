"""What the handler runtime writes to the run ledger: a start statement and an outcome statement per batch.

Two statements per invocation, whatever the batch size, keep the ledger's cost per job small (measured in
``docs/BENCHMARKS.md``). The start statement decides, per record, whether this delivery runs the job:

- **taken**: the job was waiting to run (queued, retrying, or running past its ``stale_at``: its worker died). It is
  now ``running`` under a new run token with ``attempt`` + 1; the token fences everything this run writes later, so
  a worker taken for dead cannot overwrite what its successor did;
- **done**: succeeded, cancelled or skipped; the message is a late duplicate (SQS and EventBridge deliver at least
  once) and is acknowledged without running;
- **busy**: another worker runs it and is within its time; the message comes back when that run would be stale;
- **dead**: the job went to its DLQ and this is a late duplicate of the original (a redriven copy starts over).

The ledger never decides a job's fate on its own failure: when the database cannot be reached the runtime runs the
batch as SQS delivered it (attempts from the message) and counts the gap (see ``shared.runtime.handler``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from shared.envelope import Delivery
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.ledger", "record.sql")

# Bounds of what the ledger keeps per run (the columns' CHECKs say the same).
MAX_ERROR_CHARS = 4000
MAX_RESULT_BYTES = 16_384
MAX_PROGRESS_MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Start:
    """One record of a batch, as the start statement needs it."""

    delivery: Delivery
    job_name: str
    queue: str
    # Seconds from now until a run that has reported nothing counts as abandoned.
    stale_after: float
    token: uuid.UUID
    # Where the record sits in its batch (0 = first): only the first surely started if the worker dies.
    position: int = 0

    @property
    def job_id(self) -> uuid.UUID | None:
        return _uuid(self.delivery.job_id)


@dataclass(frozen=True)
class Claim:
    """What the ledger said about one record: its status after the start statement, and whether this delivery took it."""

    job_id: uuid.UUID
    status: str
    attempt: int
    taken: bool
    token: uuid.UUID | None
    stale_at: datetime | None
    parent_id: uuid.UUID | None
    scheduled_for: datetime | None


@dataclass(frozen=True)
class Outcome:
    """How one taken run ended, for the outcome statement. ``status`` is succeeded, retrying, dead, or queued (not
    started: the attempt the start counted is given back)."""

    job_id: uuid.UUID
    # None for a run the start statement could not record: it may then only end a run still waiting to run.
    token: uuid.UUID | None
    status: str
    started_at: datetime | None = None
    error_type: str | None = None
    error: str | None = None
    result: str | None = None
    progress: int | None = None
    progress_message: str | None = None
    # The attempt the message counted, for a run without a token.
    attempt: int = 0


def ledger_id(delivery: Delivery) -> uuid.UUID:
    """The job id the ledger keys this message by: the envelope's, or, for a foreign producer whose message has no
    usable one, a UUID derived from the SQS message id (stable across redeliveries of that message)."""
    return _uuid(delivery.job_id) or uuid.uuid5(uuid.NAMESPACE_URL, f"sqs-message:{delivery.message_id}")


def start(conn: psycopg.Connection, starts: Sequence[Start]) -> dict[uuid.UUID, Claim]:
    """Take the batch's runs where they may run. One statement (plus one for redriven DLQ copies, which are rare).

    Records must have distinct job ids (the caller keeps the second delivery of one job out of the statement).
    """
    if not starts:
        return {}

    def timestamp(epoch: float | None) -> datetime | None:
        return None if epoch is None else datetime.fromtimestamp(epoch, UTC)

    params = {
        "ids": [ledger_id(s.delivery) for s in starts],
        "tokens": [s.token for s in starts],
        "job_names": [s.job_name for s in starts],
        "queues": [s.queue for s in starts],
        "payloads": [s.delivery.body for s in starts],
        "message_ids": [s.delivery.message_id for s in starts],
        "enqueued_at": [s.delivery.enqueued_at for s in starts],
        "sent_at": [timestamp(s.delivery.sent_at) for s in starts],
        "stale_after": [s.stale_after for s in starts],
        "parent_ids": [_uuid(s.delivery.parent_id) for s in starts],
        "scheduled_for": [s.delivery.scheduled_for for s in starts],
        "positions": [s.position for s in starts],
    }
    tokens = {ledger_id(s.delivery): s.token for s in starts}
    claims = {row[0]: _claim(row, tokens[row[0]]) for row in conn.execute(QUERIES["runs_start"], params)}
    redriven = [s for s in starts if s.delivery.redriven and claims[ledger_id(s.delivery)].status in ("dead", "failed")]
    if redriven:
        restart = {
            "ids": [ledger_id(s.delivery) for s in redriven],
            "tokens": [s.token for s in redriven],
            "message_ids": [s.delivery.message_id for s in redriven],
            "stale_after": [s.stale_after for s in redriven],
        }
        for row in conn.execute(QUERIES["runs_restart"], restart):
            claims[row[0]] = _claim(row, tokens[row[0]])
    return claims


def finish(conn: psycopg.Connection, outcomes: Sequence[Outcome]) -> int:
    """Write the outcomes of a batch in one statement; returns how many runs this worker still held."""
    if not outcomes:
        return 0
    params = {
        "ids": [o.job_id for o in outcomes],
        "tokens": [o.token for o in outcomes],
        "statuses": [o.status for o in outcomes],
        "started_at": [o.started_at for o in outcomes],
        "error_types": [None if o.error_type is None else o.error_type[:200] for o in outcomes],
        "errors": [None if o.error is None else o.error[:MAX_ERROR_CHARS] for o in outcomes],
        "results": [o.result for o in outcomes],
        "progress": [o.progress for o in outcomes],
        "progress_messages": [o.progress_message for o in outcomes],
        "attempts": [o.attempt for o in outcomes],
    }
    return len(conn.execute(QUERIES["runs_finish"], params).fetchall())


def mark_succeeded(
    conn: psycopg.Connection,
    job_id: uuid.UUID,
    token: uuid.UUID,
    *,
    result: str | None = None,
    progress: int | None = None,
    progress_message: str | None = None,
) -> bool:
    """Mark the run succeeded inside the caller's transaction. False when this worker no longer holds the run."""
    row = conn.execute(
        QUERIES["run_succeeded"],
        {"id": job_id, "token": token, "result": result, "progress": progress, "progress_message": progress_message},
    ).fetchone()
    return row is not None


def mark_succeeded_unfenced(
    conn: psycopg.Connection, start: Start, *, attempt: int, result: str | None = None
) -> bool:
    """Mark a run succeeded that the start statement did not record, inside the job's transaction, unless it ended
    or is running elsewhere meanwhile (then False, and the caller rolls back)."""
    row = conn.execute(
        QUERIES["run_succeeded_unfenced"],
        {"id": ledger_id(start.delivery), "job_name": start.job_name, "queue": start.queue, "payload": start.delivery.body,
         "message_id": start.delivery.message_id, "attempt": attempt, "result": result,
         "parent_id": _uuid(start.delivery.parent_id), "scheduled_for": start.delivery.scheduled_for},
    ).fetchone()  # fmt: skip
    return row is not None


def record_progress(
    conn: psycopg.Connection, job_id: uuid.UUID, token: uuid.UUID, progress: int, message: str | None
) -> None:
    conn.execute(QUERIES["run_progress"], {"id": job_id, "token": token, "progress": progress, "progress_message": message})


def result_json(value: Any) -> str:
    """A handler's return value as the JSON the ledger keeps; raises ValueError when it cannot be kept."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        text = value.model_dump_json(by_alias=True)
    else:
        try:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the job's result is not JSON: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > MAX_RESULT_BYTES:
        raise ValueError(f"the job's result is {size} bytes; the ledger keeps at most {MAX_RESULT_BYTES} (return a summary)")
    if "\\u0000" in text:
        raise ValueError("the job's result contains a NUL character, which PostgreSQL cannot store")
    return text


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _claim(row: Sequence[Any], token: uuid.UUID) -> Claim:
    job_id, status, attempt, run_token, stale_at, parent_id, scheduled_for = row
    taken = status == "running" and run_token == token
    return Claim(job_id, status, attempt, taken, run_token if taken else None, stale_at, parent_id, scheduled_for)


def _uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
