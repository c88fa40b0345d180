"""The product's nineteen jobs together, as `make dev` + `conveyor seed-demo` run them: the real handlers in the local
runtime (PostgreSQL, moto, the relay, the pollers, the integrations' recorder) on the seeded demo domain.

Every scheduled job is triggered once (what `conveyor trigger NAME` does), the message jobs the seed enqueued run,
and the seeded invoice package runs its parent only after all its children. Nothing may end failed or dead.
"""

from __future__ import annotations

import time

import pytest

from shared.demo.seed import seed_demo
from shared.jobs import registry as product
from shared.outbox import enqueue

FINAL = ("succeeded", "failed", "dead", "cancelled", "skipped")


def test_seeded_demo_runs_every_job_to_success_and_the_flow_parent_last(runtime_factory, conn):
    # Started here, it runs every job below until the fixture stops it; nothing else of it is needed.
    runtime_factory(registry=product, api_port=None)
    seed_demo(conn)
    scheduled = [job for job in product if job.schedule]
    for job in scheduled:
        enqueue(conn, job, {})
    # The local bank recorder has no new lines, so statements.poll starts no reconcile: trigger it for the seeded
    # lines, as seed-demo suggests.
    enqueue(conn, "statements.reconcile", {})

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        (live,) = conn.execute(f"SELECT count(*) FROM conveyor.jobs WHERE status NOT IN {FINAL}").fetchone()
        if live == 0:
            break
        time.sleep(0.5)
    rows = conn.execute("SELECT job_name, status, last_error FROM conveyor.jobs ORDER BY created_at").fetchall()
    unfinished = [r for r in rows if r[1] not in FINAL]
    assert not unfinished, unfinished
    failures = [r for r in rows if r[1] in ("failed", "dead")]
    assert not failures, failures

    ran = {name for name, status, _ in rows if status == "succeeded"}
    assert ran == {job.name for job in product}, sorted({job.name for job in product} - ran)

    # Domain effects the seed set up for each job, now done.
    def count(sql: str) -> int:
        return conn.execute(sql).fetchone()[0]

    assert count("SELECT count(*) FROM demo.orders WHERE status = 'pending' AND created_at < now() - interval '30 minutes'") == 0
    assert count("SELECT count(*) FROM demo.sales WHERE receipt_id IS NULL") == 0
    assert count("SELECT count(*) FROM demo.digest_items WHERE processed_at IS NULL") == 0
    assert count("SELECT count(*) FROM demo.bills WHERE period = date_trunc('month', now() AT TIME ZONE 'Asia/Ulaanbaatar')::date") > 0
    assert count("SELECT count(*) FROM demo.documents WHERE kind = 'package' AND s3_key IS NOT NULL") == 1
    assert count("SELECT count(*) FROM demo.statement_lines WHERE status = 'new'") == 0
    assert count("SELECT count(*) FROM demo.statement_lines WHERE status = 'matched'") > 0

    # The flow: the package started only after every invoice render finished.
    parent_started, last_child = conn.execute(
        """SELECT p.first_started_at, max(c.finished_at)
           FROM conveyor.runs p JOIN conveyor.runs c ON c.parent_id = p.id
           WHERE p.job_name = 'pdf.package' GROUP BY p.id"""
    ).fetchone()
    assert parent_started > last_child
