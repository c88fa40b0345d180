"""The relay's claim on an outbox without statistics (issue 16): EXPLAIN (ANALYZE, BUFFERS) of one claim of 500
rows from 100,000 due rows inserted without ANALYZE (autovacuum off for the table, so none runs meanwhile), then
after ANALYZE; each with the claim statement alone (before issue 16) and as the relay runs it now
(outbox_claim_plan first, in the claim's transaction). Each case gets a freshly filled table and its claims are
rolled back; the time is the median of the repeats, the buffers those of the first claim (a rolled-back update leaves
row versions that later scans step over).

Run from a checkout root: ``PYTHONPATH=. .venv/bin/python bench/claim_plan.py [rows] [repeats]``.
"""

import sys
import uuid
from datetime import timedelta

import psycopg

from shared.local.postgres import EmbeddedPostgres
from shared.migrate import migrate
from shared.outbox import QUERIES

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
FILL = """
INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at)
SELECT gen_random_uuid(), 'bench.note', 'q' || (g %% 3), '{"n": 1}'::json, now() - interval '1 hour' + g * interval '1 ms'
FROM generate_series(1, %(n)s) g
"""
PARAMS = {"limit": 500, "skip_queues": [], "token": uuid.uuid4(), "lease": timedelta(seconds=60), "max_bytes": 8 << 20}


def explain(conn: psycopg.Connection, with_plan_setting: bool) -> tuple[str, float, int]:
    """(shape of the claim's subquery, execution ms, shared buffers hit+read) of one rolled-back claim."""
    with conn.transaction(force_rollback=True):
        if with_plan_setting:
            conn.execute(QUERIES["outbox_claim_plan"])
        [(doc,)] = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + QUERIES["outbox_claim"], PARAMS).fetchall()
    top = doc[0]
    shape, node = [], top["Plan"]["Plans"][0]  # the InitPlan: Limit <- LockRows <- ...
    while True:
        shape.append(node["Node Type"] + (f" ({node['Index Name']})" if "Index Name" in node else ""))
        if not node.get("Plans"):
            break
        node = node["Plans"][0]
    plan = top["Plan"]
    buffers = f"{plan['Shared Hit Blocks'] + plan['Shared Read Blocks']} shared, {plan['Temp Written Blocks']} temp written"
    return " <- ".join(shape), top["Execution Time"], buffers


with EmbeddedPostgres(ephemeral=True, log=lambda _m: None) as server:
    with psycopg.connect(server.url, autocommit=True, prepare_threshold=None) as conn:
        migrate(conn)
        conn.execute("ALTER TABLE conveyor.outbox SET (autovacuum_enabled = false)")
        print(f"{ROWS} due rows, claim of {PARAMS['limit']}; median of {REPEATS} EXPLAIN (ANALYZE, BUFFERS) runs")
        for stats in ("unanalysed", "analysed"):
            for label, setting in (("claim alone (before)", False), ("with outbox_claim_plan (after)", True)):
                conn.execute("TRUNCATE conveyor.outbox")
                conn.execute(FILL, {"n": ROWS})
                if stats == "analysed":
                    conn.execute("ANALYZE conveyor.outbox")
                reltuples = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'conveyor.outbox'::regclass").fetchone()[0]
                assert (reltuples == -1) == (stats == "unanalysed"), reltuples
                runs = [explain(conn, setting) for _ in range(REPEATS)]
                ms = sorted(r[1] for r in runs)[len(runs) // 2]
                print(f"{stats:>10}, {label:<31} {ms:7.2f} ms  {runs[0][2]:<30} {runs[0][0]}")
