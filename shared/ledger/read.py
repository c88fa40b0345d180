"""Reading the ledger: one job by id, or a page of jobs newest first, from the ``conveyor.jobs`` view.

The view covers every job wherever it is (published ones in ``conveyor.runs``, pending ones in the outbox, ones the
relay could not publish in ``conveyor.outbox_dead``), so a reader never needs to know where a job is. Pages are
keyset-paginated on ``(created_at, id)``, newest first: pass the last record's :attr:`JobRecord.cursor` as
``before`` to get the next page. No OFFSET, so a deep page costs what the first does and rows added meanwhile never
shift a page. ``conveyor runs`` and ``conveyor show`` are built on these two functions; an HTTP API can reuse them.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any


from shared.ids import parse_job_id
from shared.ledger.status import RunStatus, parse_status
from shared.sqlfile import load_queries

if TYPE_CHECKING:
    import psycopg

QUERIES = load_queries("shared.ledger", "read.sql")

MAX_PAGE = 1000

# A position in the newest-first order: the (created_at, id) of the last record seen.
Cursor = tuple[datetime, uuid.UUID]


@dataclass(frozen=True)
class JobRecord:
    """One row of ``conveyor.jobs``: every column of the view, in its order."""

    id: uuid.UUID
    job_name: str
    queue: str
    status: RunStatus
    attempt: int
    created_at: datetime
    run_at: datetime
    published_at: datetime | None
    first_started_at: datetime | None
    last_started_at: datetime | None
    finished_at: datetime | None
    stale_at: datetime | None
    last_error_type: str | None
    last_error: str | None
    reason: str | None
    progress: int | None
    progress_message: str | None
    result: Any
    parent_id: uuid.UUID | None
    scheduled_for: datetime | None
    message_id: str | None
    dedup_key: str | None
    payload: Any
    children_pending: int | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> JobRecord:
        values = dict(zip(COLUMNS, row, strict=True))
        values["status"] = RunStatus(values["status"])
        return cls(**values)

    @property
    def cursor(self) -> Cursor:
        """Where the next page starts: pass it as ``list_jobs(before=...)``."""
        return (self.created_at, self.id)

    @property
    def duration_seconds(self) -> float | None:
        """From the first start to the end, retries included; None until the job has both."""
        if self.first_started_at is None or self.finished_at is None:
            return None
        return max((self.finished_at - self.first_started_at).total_seconds(), 0.0)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready values: ISO 8601 datetimes, ids as text, payload and result as they are."""
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, uuid.UUID):
                value = str(value)
            elif isinstance(value, RunStatus):
                value = value.value
            out[name] = value
        return out


COLUMNS = tuple(f.name for f in fields(JobRecord))


def get_job(conn: psycopg.Connection, job_id: uuid.UUID | str) -> JobRecord | None:
    """The job with this id, wherever it is; None if there is none (never enqueued, or deleted by retention)."""
    row = conn.execute(QUERIES["jobs_get"], {"id": parse_job_id(job_id, "job_id")}).fetchone()
    return None if row is None else JobRecord.from_row(row)


def list_jobs(
    conn: psycopg.Connection,
    *,
    job: str | None = None,
    status: RunStatus | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    parent: uuid.UUID | str | None = None,
    q: str | None = None,
    limit: int = 50,
    before: Cursor | None = None,
) -> list[JobRecord]:
    """Jobs newest first (by ``created_at``, then id), at most ``limit`` (1 to 1,000).

    ``since`` is inclusive and ``until`` exclusive, both on ``created_at`` (when the job was enqueued) and both
    timezone-aware. ``parent`` lists a flow parent's children. ``q`` is free text: a job id (that job only) or
    a case-insensitive substring of the dedup key, the last error or the reason. ``before`` is the
    :attr:`JobRecord.cursor` of the last record of the previous page.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE}, got {limit!r}")
    for name, value in (("since", since), ("until", until)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    before_at = before_id = None
    if before is not None:
        try:
            before_at, raw_id = before
        except (TypeError, ValueError):
            raise ValueError(f"before must be a (created_at, id) cursor, got {before!r}") from None
        if not isinstance(before_at, datetime) or before_at.tzinfo is None:
            raise ValueError(f"before's created_at must be a timezone-aware datetime, got {before_at!r}")
        before_id = parse_job_id(raw_id, "before's id")
    q_id = q_pattern = None
    if q is not None:
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"q must be non-empty text, got {q!r}")
        if "\x00" in q:
            raise ValueError("q contains a NUL character (U+0000), which PostgreSQL cannot compare")
        q = q.strip()
        try:
            q_id = uuid.UUID(q)
        except ValueError:
            # LIKE's wildcards in the text are literal characters to the person searching.
            escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q_pattern = f"%{escaped}%"
    params = {
        "job": job,
        "q": None if q is None else (q_pattern or q),
        "q_id": q_id,
        "status": None if status is None else parse_status(str(status)).value,
        "parent": None if parent is None else parse_job_id(parent, "parent"),
        "since": since,
        "until": until,
        "before_at": before_at,
        "before_id": before_id,
        "limit": limit,
    }
    return [JobRecord.from_row(row) for row in conn.execute(QUERIES["jobs_list"], params)]


def count_children(conn: psycopg.Connection, parent_id: uuid.UUID | str) -> int:
    """How many jobs name this one as their flow parent."""
    row = conn.execute(QUERIES["jobs_count_children"], {"parent": parse_job_id(parent_id, "parent_id")}).fetchone()
    return int(row[0]) if row else 0

