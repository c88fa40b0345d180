"""The relay's claim walks outbox_run_at whatever the outbox's statistics say (issue 16): a backlog written faster
than autovacuum analyses the table must not cost a sort of every due row per cycle."""

import uuid
from datetime import timedelta

import psycopg

from shared.outbox import QUERIES
from shared.outbox.relay import claim

LEASE = timedelta(seconds=60)

FILL = """
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at)
SELECT gen_random_uuid(), 'bench.note', 'q' || (g %% 3), '{"n": 1}'::json, now() - interval '1 hour' + g * interval '1 ms'
FROM generate_series(1, %(n)s) g
"""


def nodes(plan):
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def test_claim_on_an_unanalysed_outbox_limits_an_index_scan_and_never_sorts(conn):
    # No autovacuum on this table during the test, so it stays exactly as the relay would find a fresh backlog.
    conn.execute("ALTER TABLE conveyor.outbox SET (autovacuum_enabled = false)")
    conn.execute(FILL, {"n": 100_000})
    analysed = conn.execute(
        "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relid = 'conveyor.outbox'::regclass"
    ).fetchone()
    assert analysed == (None, None)
    assert conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'conveyor.outbox'::regclass").fetchone()[0] == -1

    params = {"limit": 500, "skip_queues": [], "token": uuid.uuid4(), "lease": LEASE, "max_bytes": 8 << 20}
    # The relay's transaction, as shared.outbox.relay.claim runs it, with EXPLAIN in front of the claim; rolled back.
    with conn.transaction(force_rollback=True):
        conn.execute(QUERIES["outbox_claim_plan"])
        [(doc,)] = conn.execute("EXPLAIN (FORMAT JSON) " + QUERIES["outbox_claim"], params).fetchall()
    plan = doc[0]["Plan"]
    everything = list(nodes(plan))
    assert not [n for n in everything if "Sort" in n["Node Type"]], everything
    [limit] = [n for n in everything if n["Node Type"] == "Limit"]
    # Limit <- LockRows (FOR UPDATE SKIP LOCKED) <- Index Scan on outbox_run_at: the scan stops after the batch.
    [lock_rows] = limit["Plans"]
    assert lock_rows["Node Type"] == "LockRows"
    [scan] = lock_rows["Plans"]
    assert scan["Node Type"] == "Index Scan" and scan["Index Name"] == "outbox_run_at", scan
    assert scan["Scan Direction"] == "Forward"


def test_the_claims_plan_setting_ends_with_the_claim(conn):
    conn.execute(FILL, {"n": 10})
    rows = claim(conn, token=uuid.uuid4(), limit=5, skip_queues=[], lease=LEASE)
    assert len(rows) == 5
    assert conn.execute("SHOW enable_sort").fetchone()[0] == "on"
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_claim_takes_the_oldest_due_rows_and_skips_locked_leased_and_waiting_ones(conn, db_url):
    def add(minutes_ago, queue="q", **columns):
        row_id = uuid.uuid4()
        conn.execute(
            "INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at, next_attempt_at, claim_token, locked_until)"
            " VALUES (%(id)s, 'test.work', %(queue)s, '{}', now() - %(ago)s * interval '1 minute',"
            " %(next_attempt_at)s, %(claim_token)s, %(locked_until)s)",
            {"id": row_id, "queue": queue, "ago": minutes_ago, "next_attempt_at": columns.get("next_attempt_at"),
             "claim_token": columns.get("claim_token"), "locked_until": columns.get("locked_until")},
        )  # fmt: skip
        return row_id

    future = conn.execute("SELECT now() + interval '1 hour'").fetchone()[0]
    past = conn.execute("SELECT now() - interval '1 hour'").fetchone()[0]
    leased = add(100, claim_token=uuid.uuid4(), locked_until=future)
    waiting = add(90, next_attempt_at=future)
    locked = add(80)
    skipped = add(70, queue="paused")
    lease_over = add(60, claim_token=uuid.uuid4(), locked_until=past)
    retry_due = add(50, next_attempt_at=past)
    plain = [add(m) for m in (40, 30, 20, 10)]
    not_due = add(-10)

    with psycopg.connect(db_url) as other:  # another relay's claim, still in its statement: SKIP LOCKED passes it
        other.execute("SELECT 1 FROM conveyor.outbox WHERE id = %s FOR UPDATE", (locked,))
        token = uuid.uuid4()
        first = claim(conn, token=token, limit=4, skip_queues=["paused"], lease=LEASE)
        other.rollback()
    assert {r[0] for r in first} == {lease_over, retry_due, plain[0], plain[1]}
    assert conn.execute(
        "SELECT count(*) FROM conveyor.outbox WHERE claim_token = %s AND locked_until > now() + interval '50 seconds'",
        (token,),
    ).fetchone()[0] == 4
    rest = claim(conn, token=uuid.uuid4(), limit=10, skip_queues=[], lease=LEASE)
    assert {r[0] for r in rest} == {locked, skipped, plain[2], plain[3]}
    assert leased not in {r[0] for r in rest} and waiting not in {r[0] for r in rest} and not_due not in {r[0] for r in rest}


BIG = """
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at)
SELECT gen_random_uuid(), 'bench.note', 'q', json_build_object('text', repeat('x', %(bytes)s)), now() - interval '1 hour' + g * interval '1 ms'
FROM generate_series(1, %(n)s) g
"""


def test_a_claim_holds_at_most_its_byte_budget_of_payloads_oldest_first(conn):
    """The relay keeps a claimed batch in memory while it publishes it: 500 payloads near SQS's size limit would not
    fit its 128 MB. A claim stops before the row that would take its payloads past ``max_bytes``."""
    conn.execute(BIG, {"n": 10, "bytes": 100_000})
    rows = claim(conn, token=uuid.uuid4(), limit=500, skip_queues=[], lease=LEASE, max_bytes=250_000)
    assert len(rows) == 2
    assert sum(len(row[3]) for row in rows) <= 250_000
    ages = conn.execute("SELECT id FROM conveyor.outbox ORDER BY run_at LIMIT 2").fetchall()
    assert [row[0] for row in rows] == [row[0] for row in ages]
    # The rows left over were locked by the claim's scan but not leased: the next claim takes them.
    assert conn.execute("SELECT count(*) FROM conveyor.outbox WHERE claim_token IS NULL").fetchone()[0] == 8
    assert len(claim(conn, token=uuid.uuid4(), limit=500, skip_queues=[], lease=LEASE, max_bytes=250_000)) == 2


def test_a_row_larger_than_the_budget_is_still_claimed_alone(conn):
    conn.execute(BIG, {"n": 3, "bytes": 100_000})
    rows = claim(conn, token=uuid.uuid4(), limit=500, skip_queues=[], lease=LEASE, max_bytes=1_000)
    assert len(rows) == 1


def test_small_payloads_fill_the_batch(conn):
    conn.execute(FILL, {"n": 600})
    rows = claim(conn, token=uuid.uuid4(), limit=500, skip_queues=[], lease=LEASE)
    assert len(rows) == 500
