"""``conveyor seed-demo``: realistic demo data in the product's domain, so ``make dev`` shows the jobs doing real work.

Every row is dated relative to ``now``, just past the threshold of the job that handles it (orders pending for over
30 minutes, vouchers expired yesterday, audit rows over a year old, a contract ending in 5 days, …) and, where it
shows something, just short of it (an order pending for 10 minutes, a token seen an hour ago). The SQL is in
``seed.sql``; each block says which job its rows are for.

Like domain code, the seed also enqueues a few message jobs through the outbox in its own transaction (a welcome
email, a critical notification's dispatch, a tax receipt per sale), so a running ``conveyor dev`` runs them at once.

All or nothing: one transaction. It refuses a database whose demo tables already hold data (seeding twice would
mix two data sets) unless ``reset=True``, which first empties every table of the ``demo`` schema and restarts their
ids, in that same transaction. Two seeds at once are serialised by an advisory lock, so the second one refuses.
"""

from __future__ import annotations

import textwrap
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from shared.outbox import Item, enqueue, enqueue_many
from shared.payloads import EmailTemplate, NotificationType
from shared.registry import Registry
from shared.migrate import DEMO
from shared.sqlfile import load_queries

QUERIES = load_queries("shared.demo", "seed.sql")

# The blocks that write the data, in file order (each may read what an earlier one wrote).
SEED_STEPS: tuple[str, ...] = tuple(name for name in QUERIES if name.startswith("seed_"))

MAX_SCALE = 100


class SeedRefused(Exception):
    """The seed did not run, and wrote nothing; the message (one line) says why and what to do."""


class DemoNotMigrated(SeedRefused):
    def __init__(self) -> None:
        super().__init__("this database lacks the demo schema's latest migrations: run `conveyor migrate` first")


class AlreadySeeded(SeedRefused):
    def __init__(self, rows: int) -> None:
        self.rows = rows
        super().__init__(
            f"the demo tables already hold data ({rows} users, stores and tenants); seeding again would mix two data "
            "sets: pass --reset to empty the demo tables first"
        )


@dataclass(frozen=True)
class WorkWaiting:
    """What one job will find to do right after the seed (a hint for people, not the job's own rule)."""

    job: str
    waiting: int
    what: str


@dataclass(frozen=True)
class SeedSummary:
    now: datetime
    reset: bool
    rows: tuple[tuple[str, int], ...]  # (demo table, rows in it), every table of the schema
    enqueued: tuple[tuple[str, int], ...]  # (job name, jobs enqueued through the outbox)
    work: tuple[WorkWaiting, ...]

    def rows_in(self, table: str) -> int:
        return dict(self.rows)[table]

    def lines(self) -> list[str]:
        """The CLI's summary: what was made, what was enqueued, and a trigger to try for each job with work."""
        emptied = "emptied the demo tables and " if self.reset else ""
        head = f"{emptied}seeded the demo domain as of {self.now.isoformat(timespec='seconds')}:"
        tables = ", ".join(f"{table} {count}" for table, count in self.rows if count)
        jobs = ", ".join(f"{job} {count}" for job, count in self.enqueued)
        lines = [head, *textwrap.wrap(tables, 110, initial_indent="  rows: ", subsequent_indent="        ")]
        lines.append(f"  enqueued through the outbox (they run as soon as `conveyor dev` does): {jobs}")
        width = max((len(w.job) for w in self.work), default=0)
        lines += [f"  try: conveyor trigger {w.job:<{width}}  # {w.waiting} {w.what}" for w in self.work if w.waiting]
        return lines


def seed_demo(
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
    scale: int = 1,
    reset: bool = False,
    registry: Registry | None = None,
) -> SeedSummary:
    """Fill the demo schema and enqueue the demo's message jobs, in one transaction (a savepoint if the caller has
    one open). Raises :class:`SeedRefused` (nothing written) on a database not migrated or already seeded.

    ``scale`` multiplies the commerce volume (users, orders, vouchers, logs, keys); the stores and the
    property-billing scenario stay as they are. ``registry`` is where the message jobs are looked up (default: the
    configured registry).
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= MAX_SCALE:
        raise ValueError(f"scale must be a whole number from 1 to {MAX_SCALE}, got {scale!r}")
    now = now or datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware (got naive {now.isoformat()})")
    with conn.transaction():
        (conveyor_ready,) = conn.execute(QUERIES["demo_state"]).fetchone()
        if not conveyor_ready or conn.execute(QUERIES["demo_version"]).fetchone()[0] < len(DEMO.migrations()):
            raise DemoNotMigrated()
        conn.execute(QUERIES["demo_lock"])
        tables = [name for (name,) in conn.execute(QUERIES["demo_tables"])]
        if reset:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                    sql.SQL(", ").join(sql.Identifier("demo", table) for table in tables)
                )
            )
        else:
            [existing] = conn.execute(QUERIES["demo_existing"]).fetchone()
            if existing:
                raise AlreadySeeded(existing)
        params = {"now": now, "scale": scale}
        sale_ids: list[int] = []
        for step in SEED_STEPS:
            cursor = conn.execute(QUERIES[step], params)
            if step == "seed_sales":
                sale_ids = [sale_id for (sale_id,) in cursor]
        enqueued = enqueue_demo_messages(conn, sale_ids, registry=registry)
        rows = _count_rows(conn, tables)
        work = tuple(WorkWaiting(*row) for row in conn.execute(QUERIES["demo_work"], params))
    return SeedSummary(
        now=now, reset=reset, rows=rows, enqueued=tuple(Counter(job for job, _ in enqueued).items()), work=work
    )


def enqueue_demo_messages(
    conn: psycopg.Connection, sale_ids: Sequence[int], *, registry: Registry | None = None
) -> list[tuple[str, uuid.UUID]]:
    """The message jobs domain code would have enqueued while making this data, as (job name, job id): a welcome
    email to the first user, the dispatch of the newest critical notification, a tax receipt for every sale, and a
    flow packaging last month's invoices (a ``pdf.render`` per bill, then their ``pdf.package``).

    Kept in one place so payload changes touch only this function."""
    jobs: list[tuple[str, uuid.UUID]] = []
    email, name = conn.execute(QUERIES["demo_welcome_user"]).fetchone()
    welcome = {
        "to": email,
        "template": EmailTemplate.WELCOME,
        "subject": f"Welcome to Conveyor Market, {name.split()[0]}",
        "variables": {"name": name},
    }
    jobs.append(("email.send", enqueue(conn, "email.send", welcome, registry=registry)))
    critical = conn.execute(QUERIES["demo_critical_notification"], {"type": NotificationType.ORDER_UPDATE}).fetchone()
    if critical is not None:
        payload = {"notification_id": critical[0]}
        jobs.append(("notification.dispatch", enqueue(conn, "notification.dispatch", payload, registry=registry)))
    # The sale's dedup key, as shared.demo.sales.record_sale gives it.
    receipts = enqueue_many(
        conn, "receipt.push", [Item({"sale_id": s}, dedup_key=f"receipt:{s}") for s in sale_ids], registry=registry
    )
    jobs += [("receipt.push", job_id) for job_id in receipts]
    # A flow: last month's invoices rendered one job each, then zipped by their parent once every render succeeded.
    bills = [row[0] for row in conn.execute(QUERIES["demo_bills_to_package"])]
    if bills and (registry is None or "pdf.package" in registry):
        from shared.demo.documents import package_invoices

        jobs.append(("pdf.package", package_invoices(conn, "demo-invoices", bills)))
    return jobs


def _count_rows(conn: psycopg.Connection, tables: Sequence[str]) -> tuple[tuple[str, int], ...]:
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {}, count(*) FROM {}").format(sql.Literal(table), sql.Identifier("demo", table))
        for table in tables
    )
    return tuple((table, count) for table, count in conn.execute(query))
