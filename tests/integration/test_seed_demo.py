"""`conveyor seed-demo`: the demo data gives every job something to do, and a second seed never duplicates it.

The preconditions are checked with SQL of the tests' own (the jobs' thresholds as the issue states them), not with
the seed's summary, so a seed that stopped producing a job's work fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from shared.demo.seed import AlreadySeeded, DemoNotMigrated, seed_demo
from shared.jobs import registry
from shared.payloads import NotificationType

ROOT = Path(__file__).resolve().parents[2]


def conveyor(*args, env=None, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATABASE_URL": "", "CONVEYOR_DATABASE_URL": "", **(env or {})},
    )  # fmt: skip


def scalar(conn, query, params=None):
    return conn.execute(query, params).fetchone()[0]


def outbox(conn, job_name):
    return [row[0] for row in conn.execute("SELECT payload FROM conveyor.outbox WHERE job_name = %s ORDER BY id", (job_name,))]


# Each job's precondition: a count that must be positive right after seeding (and where a job must also leave rows
# alone, a count of those).
PRECONDITIONS = {
    "reservations.cleanup: pending orders older than 30 min":
        "SELECT count(*) FROM demo.orders WHERE status = 'pending' AND created_at < now() - interval '30 minutes'",
    "reservations.cleanup: pending orders it must leave":
        "SELECT count(*) FROM demo.orders WHERE status = 'pending' AND created_at > now() - interval '30 minutes'",
    "vouchers.expire: expired vouchers not marked expired yet":
        "SELECT count(*) FROM demo.vouchers WHERE expires_at < now() AND expired_at IS NULL",
    "vouchers.expire: expired vouchers already marked (left alone)":
        "SELECT count(*) FROM demo.vouchers WHERE expires_at < now() AND expired_at IS NOT NULL",
    "vouchers.expire: vouchers still valid":
        "SELECT count(*) FROM demo.vouchers WHERE expires_at > now()",
    "vouchers.audit_archive: audit rows over 730 days":
        "SELECT count(*) FROM demo.voucher_audit WHERE created_at < now() - interval '730 days'",
    "audit.retention: logs over 365 days":
        "SELECT count(*) FROM demo.audit_logs WHERE created_at < now() - interval '365 days'",
    "audit.retention: recent logs":
        "SELECT count(*) FROM demo.audit_logs WHERE created_at > now() - interval '365 days'",
    "audit.retention: archive over 7 years":
        "SELECT count(*) FROM demo.audit_logs_archive WHERE created_at < now() - interval '2555 days'",
    "audit.retention: archive younger than 7 years":
        "SELECT count(*) FROM demo.audit_logs_archive WHERE created_at > now() - interval '2555 days'",
    "notifications.cleanup: over 90 days":
        "SELECT count(*) FROM demo.notifications WHERE created_at < now() - interval '90 days'",
    "push_tokens.cleanup: tokens unseen for 90 days":
        "SELECT count(*) FROM demo.device_tokens WHERE last_seen_at <= now() - interval '90 days'",
    "push_tokens.cleanup: tokens seen lately":
        "SELECT count(*) FROM demo.device_tokens WHERE last_seen_at > now() - interval '1 day'",
    "idempotency_keys.prune: expired":
        "SELECT count(*) FROM demo.idempotency_keys WHERE expires_at < now()",
    "idempotency_keys.prune: live":
        "SELECT count(*) FROM demo.idempotency_keys WHERE expires_at > now()",
    "orders.digest: stores with unprocessed items":
        "SELECT count(DISTINCT store_id) FROM demo.digest_items WHERE processed_at IS NULL",
    "receipt.push: sales without a receipt":
        "SELECT count(*) FROM demo.sales WHERE receipt_id IS NULL",
    "contracts.expiry_notice: active, ending within 7 days":
        "SELECT count(*) FROM demo.contracts WHERE status = 'active' "
        "AND ends_on BETWEEN (now() AT TIME ZONE 'Asia/Ulaanbaatar')::date AND (now() AT TIME ZONE 'Asia/Ulaanbaatar')::date + 7",
    "statements.reconcile: new lines matching an open bill by reference and amount":
        "SELECT count(*) FROM demo.statement_lines l JOIN demo.bills b ON b.reference = l.reference AND b.amount = l.amount "
        "WHERE l.status = 'new' AND b.status = 'open'",
    "statements.reconcile: new lines matching no bill":
        "SELECT count(*) FROM demo.statement_lines l WHERE l.status = 'new' AND NOT EXISTS "
        "(SELECT FROM demo.bills b WHERE b.reference = l.reference AND b.amount = l.amount)",
    "statements.poll: the cursor row":
        "SELECT count(*) FROM demo.statement_cursor WHERE account = 'main'",
}  # fmt: skip


def test_a_fresh_database_gets_work_for_every_job(conn):
    summary = seed_demo(conn)

    assert summary.rows_in("users") == 10 and summary.rows_in("stores") == 3 and summary.rows_in("tenants") == 8
    assert scalar(conn, "SELECT count(*) FROM demo.users") == 10
    assert scalar(conn, "SELECT count(*) FROM demo.device_tokens WHERE user_id IS NOT NULL") >= 10
    assert scalar(conn, "SELECT count(*) FROM demo.stores WHERE pos_store_ref IS NOT NULL") == 2
    assert scalar(conn, "SELECT count(*) FROM demo.users WHERE phone !~ '^\\+976[0-9]{8}$'") == 0
    for name, query in PRECONDITIONS.items():
        assert scalar(conn, query) > 0, name


def test_pending_orders_hold_exactly_their_items_stock(conn):
    seed_demo(conn)
    mismatched = scalar(conn, """
        SELECT count(*) FROM demo.inventory i
        LEFT JOIN (SELECT oi.store_id, oi.sku, sum(oi.quantity) AS q FROM demo.order_items oi
                   JOIN demo.orders o ON o.id = oi.order_id WHERE o.status = 'pending' GROUP BY 1, 2) r
               ON r.store_id = i.store_id AND r.sku = i.sku
        WHERE i.reserved <> coalesce(r.q, 0) OR i.reserved > i.on_hand""")
    assert mismatched == 0
    assert scalar(conn, "SELECT count(*) FROM demo.orders WHERE total <> (SELECT sum(quantity * price) FROM demo.order_items WHERE order_id = orders.id)") == 0
    assert scalar(conn, "SELECT count(*) FROM demo.vouchers v WHERE NOT EXISTS (SELECT FROM demo.voucher_audit a WHERE a.voucher_id = v.id AND a.action = 'CREATED')") == 0
    # A voucher has its EXPIRED row exactly when it is marked expired, at the same time (what vouchers.expire writes).
    assert scalar(conn, "SELECT count(*) FROM demo.vouchers v LEFT JOIN demo.voucher_audit a ON a.voucher_id = v.id AND a.action = 'EXPIRED' WHERE v.expired_at IS DISTINCT FROM a.created_at") == 0


def test_billing_dates_follow_ulaanbaatar(conn):
    # 2024-03-31 20:00 UTC is already 1 April in Ulaanbaatar (UTC+8, no DST): "last month" is March, "today" 1 April.
    now = datetime(2024, 3, 31, 20, 0, tzinfo=UTC)
    seed_demo(conn, now=now)
    periods = {row[0] for row in conn.execute("SELECT DISTINCT period FROM demo.bills")}
    assert [str(p) for p in periods] == ["2024-03-01"]
    ends = [str(row[0]) for row in conn.execute(
        "SELECT ends_on FROM demo.contracts WHERE status = 'active' ORDER BY ends_on LIMIT 2")]
    assert ends == ["2024-04-06", "2024-04-26"]
    # The ended contract ended before the billed month began, so it has no bill; every active one has.
    assert scalar(conn, "SELECT count(*) FROM demo.bills b JOIN demo.contracts c ON c.id = b.contract_id WHERE c.status = 'ended'") == 0
    assert scalar(conn, "SELECT count(*) FROM demo.bills") == scalar(conn, "SELECT count(*) FROM demo.contracts WHERE status = 'active'")


def test_message_jobs_are_enqueued_as_domain_code_would(conn):
    seed_demo(conn, registry=registry)
    [welcome] = outbox(conn, "email.send")
    assert welcome["template"] == "welcome" and welcome["to"] == scalar(conn, "SELECT email FROM demo.users ORDER BY id LIMIT 1")
    [dispatch] = outbox(conn, "notification.dispatch")
    assert scalar(conn, "SELECT type FROM demo.notifications WHERE id = %s", (dispatch["notification_id"],)) == NotificationType.ORDER_UPDATE
    receipts = sorted(p["sale_id"] for p in outbox(conn, "receipt.push"))
    assert receipts == [row[0] for row in conn.execute("SELECT id FROM demo.sales ORDER BY id")] and receipts
    # The dedup key record_sale gives a receipt job: the sale's.
    keys = [row[0] for row in conn.execute(
        "SELECT dedup_key FROM conveyor.outbox WHERE job_name = 'receipt.push'")]
    assert sorted(keys) == sorted(f"receipt:{sale_id}" for sale_id in receipts)


def test_scale_multiplies_the_commerce_volume(conn):
    summary = seed_demo(conn, scale=3)
    assert summary.rows_in("users") == 30 and summary.rows_in("orders") == 36
    assert summary.rows_in("stores") == 3 and summary.rows_in("contracts") == 8
    with pytest.raises(ValueError, match="scale"):
        seed_demo(conn, scale=0, reset=True)


def test_a_second_seed_is_refused_and_changes_nothing(conn):
    seed_demo(conn)
    before = _all_counts(conn)
    with pytest.raises(AlreadySeeded, match="--reset"):
        seed_demo(conn)
    assert _all_counts(conn) == before


def test_reset_empties_and_seeds_again_without_duplicates(conn):
    first = seed_demo(conn)
    again = seed_demo(conn, reset=True)
    assert again.rows == first.rows and again.reset
    assert scalar(conn, "SELECT min(id) FROM demo.users") == 1  # ids restart, so the demo reads the same each time


def test_a_failure_midway_leaves_nothing(conn):
    # A fake outbox registry without receipt.push: the enqueue fails after every table was written, and the seed's
    # one transaction takes it all back.
    from shared.registry import Registry

    partial = Registry()
    for job in registry:
        if job.name != "receipt.push":
            partial.add(job)
    with pytest.raises(Exception, match="receipt.push"):
        seed_demo(conn, registry=partial)
    assert scalar(conn, "SELECT count(*) FROM demo.users") == 0
    assert scalar(conn, "SELECT count(*) FROM conveyor.outbox") == 0


def test_not_migrated_is_refused(pg_server):
    name = f"e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(pg_server, dbname=name)
    try:
        with psycopg.connect(url, autocommit=True) as empty:
            with pytest.raises(DemoNotMigrated):
                seed_demo(empty)
        result = conveyor("seed-demo", "--database-url", url)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            "conveyor: error: this database lacks the demo schema's latest migrations: run `conveyor migrate` first"
        ]
        # A database migrated by older code (the demo schema one migration behind) is refused the same way.
        from shared.migrate import CONVEYOR, DEMO, Component, migrate

        class Older(Component):
            def migrations(self):
                return DEMO.migrations()[:-1]

        with psycopg.connect(url, autocommit=True) as older:
            migrate(older, (CONVEYOR, Older("demo", DEMO.package)))
            with pytest.raises(DemoNotMigrated):
                seed_demo(older)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_cli_seeds_refuses_twice_and_resets(db_url, conn, tmp_path):
    seeded = conveyor("seed-demo", "--database-url", db_url, cwd=tmp_path)  # no `conveyor dev` in tmp_path
    assert seeded.returncode == 0, seeded.stderr
    assert "seeded the demo domain" in seeded.stdout
    assert "receipt.push" in seeded.stdout and "try: conveyor trigger bills.monthly" in seeded.stdout
    assert "conveyor dev" in seeded.stdout  # the next step when no local runtime is running

    again = conveyor("seed-demo", env={"DATABASE_URL": db_url}, cwd=tmp_path)
    assert again.returncode == 2 and "--reset" in again.stderr and len(again.stderr.strip().splitlines()) == 1

    reset = conveyor("seed-demo", "--reset", "--database-url", db_url, cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    assert "emptied the demo tables" in reset.stdout
    assert scalar(conn, "SELECT count(*) FROM demo.users") == 10


def test_cli_finds_a_running_conveyor_dev_and_prints_its_dashboard(db_url, tmp_path):
    # The state file `conveyor dev` writes, owned by a live process (this one): the verb uses its database and URL.
    state = {"pid": os.getpid(), "database_url": db_url, "aws_endpoint_url": None, "stage": "dev",
             "api_url": "http://127.0.0.1:8710/"}  # fmt: skip
    (tmp_path / ".conveyor").mkdir()
    (tmp_path / ".conveyor" / "dev.json").write_text(json.dumps(state))
    result = conveyor("seed-demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "http://127.0.0.1:8710/" in result.stdout


def _all_counts(conn):
    tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'demo' ORDER BY 1")]
    counts = {t: scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("demo", t))) for t in tables}
    return counts | {"conveyor.outbox": scalar(conn, "SELECT count(*) FROM conveyor.outbox")}
