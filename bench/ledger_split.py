"""Where the run ledger's time goes, database side: the start and the outcome statement of batches of 10, with
durable commits and with synchronous_commit=off, next to a bare one-row INSERT + commit on the same server.

Run from a checkout root: ``PYTHONPATH=. .venv/bin/python bench/ledger_split.py``.
"""
import time, uuid, json, sys
import psycopg
from shared.local.postgres import EmbeddedPostgres
from shared.migrate import migrate
from shared.envelope import Delivery, message_attributes
from shared.ledger import record
from datetime import UTC, datetime

def deliveries(n):
    out = []
    for _ in range(n):
        jid = str(uuid.uuid4())
        out.append(Delivery(job_id=jid, job_name="bench.note", attempt=1, enqueued_at=datetime.now(UTC), body='{"user_id":42,"text":"%s"}' % ("x"*200),
                            message_id=str(uuid.uuid4()), receipt_handle="r", queue_arn="arn:aws:sqs:us-east-1:1:q", attributes={}))
    return out

with EmbeddedPostgres(log=lambda m: None) as server:
    url = server.url
    with psycopg.connect(url, autocommit=True) as c:
        migrate(c)
    for mode in ("on", "off"):
        with psycopg.connect(url, autocommit=True, prepare_threshold=None, options=f"-c synchronous_commit={mode}") as conn:
            n_batches = 200
            t_start = t_finish = 0.0
            for _ in range(n_batches):
                ds = deliveries(10)
                # as published by the relay: a queued runs row per job
                conn.execute("INSERT INTO conveyor.runs (id, job_name, queue, payload, status, created_at, run_at, published_at) SELECT unnest(%s::uuid[]), 'bench.note', 'q', '{}', 'queued', now(), now(), now()", ([d.job_id for d in ds],))
                starts = [record.Start(d, "bench.note", "q", 60.0, uuid.uuid4(), position=i) for i, d in enumerate(ds)]
                a = time.perf_counter(); claims = record.start(conn, starts); b = time.perf_counter()
                record.finish(conn, [record.Outcome(c.job_id, c.token, "succeeded") for c in claims.values()]); e = time.perf_counter()
                t_start += b - a; t_finish += e - b
            jobs = n_batches * 10
            print(f"synchronous_commit={mode}: start {t_start/jobs*1e6:.0f} µs/job, outcome {t_finish/jobs*1e6:.0f} µs/job, per batch {(t_start+t_finish)/n_batches*1e3:.2f} ms")
        with psycopg.connect(url, autocommit=True, options=f"-c synchronous_commit={mode}") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (x int)")
            a = time.perf_counter()
            for i in range(500): conn.execute("INSERT INTO t VALUES (1)")
            print(f"  bare one-row INSERT + commit: {(time.perf_counter()-a)/500*1e6:.0f} µs")
    with psycopg.connect(url, autocommit=True) as conn:
        print(conn.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname='runs'").fetchone())
