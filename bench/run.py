"""Benchmarks: what enqueueing costs, how fast the relay publishes, how long a job waits locally.

Run with ``make bench`` (or ``python -m bench.run [--quick]``). Every figure is printed next to a baseline measured
in the same run on the same servers, as a ratio, so the numbers travel between machines better than absolute ones:

* enqueue vs. a bare ``INSERT`` of the same row (what any hand-rolled outbox costs);
* ``enqueue`` commits with and without a ``pg_notify`` (why the relay polls instead of LISTENing);
* relay vs. bare ``SendMessageBatch`` calls of the same messages to the same moto server (the ceiling);
* the run ledger's cost per job in the handler vs. the same handler without it;
* end-to-end latency in the local runtime (commit → handler done).

Results and the command that produced them go in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg

from shared.local.aws import LOCAL_CREDENTIALS, LocalAws, ensure_queues
from shared.migrate import migrate, sync_registry
from shared.outbox import enqueue, enqueue_many
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.registry import JobPayload, Registry
from shared.settings import Settings

STAGE = "bench"


class Note(JobPayload):
    user_id: int
    text: str


registry = Registry()
NOTE = registry.job("bench.note", payload=Note, queue="bench", concurrency=10, batch_size=10)
PAYLOAD = {"user_id": 42, "text": "x" * 200}


@dataclass
class Row:
    what: str
    value: float
    unit: str
    baseline: str = ""
    ratio: float | None = None


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# -- enqueue ---------------------------------------------------------------------------------------------------


def bench_enqueue(url: str, n: int) -> list[Row]:
    rows: list[Row] = []
    with psycopg.connect(url, autocommit=True) as conn:
        body = json.dumps(PAYLOAD)

        def bare() -> None:
            for _ in range(n):
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO conveyor.outbox (id, job_name, queue, payload) VALUES (%s, %s, %s, %s::json)",
                        (uuid.uuid4(), NOTE.name, NOTE.queue, body),
                    )

        def ours() -> None:
            for _ in range(n):
                with conn.transaction():
                    enqueue(conn, NOTE, PAYLOAD, registry=registry)

        def sql_fn() -> None:
            for _ in range(n):
                with conn.transaction():
                    conn.execute("SELECT conveyor.add_job('bench.note', %s::jsonb)", (body,))

        conn.execute("TRUNCATE conveyor.outbox")
        t_bare = timed(bare)
        conn.execute("TRUNCATE conveyor.outbox")
        t_ours = timed(ours)
        conn.execute("TRUNCATE conveyor.outbox")
        t_sql = timed(sql_fn)
        per = lambda t: t / n * 1e6  # noqa: E731
        rows.append(Row("bare INSERT + commit", per(t_bare), "µs/job"))
        rows.append(Row("enqueue() + commit", per(t_ours), "µs/job", "bare INSERT", t_ours / t_bare))
        rows.append(Row("conveyor.add_job() + commit", per(t_sql), "µs/job", "bare INSERT", t_sql / t_bare))

        batch = [PAYLOAD] * 1000

        def bare_many() -> None:
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY conveyor.outbox (id, job_name, queue, payload) FROM STDIN") as copy:
                    for _ in batch:
                        copy.write_row((uuid.uuid4(), NOTE.name, NOTE.queue, body))

        def ours_many() -> None:
            with conn.transaction():
                enqueue_many(conn, NOTE, batch, registry=registry)

        conn.execute("TRUNCATE conveyor.outbox")
        t_copy = min(timed(bare_many) for _ in range(3))
        conn.execute("TRUNCATE conveyor.outbox")
        t_many = min(timed(ours_many) for _ in range(3))
        rows.append(Row("bare COPY of 1,000 rows", t_copy / 1000 * 1e6, "µs/job"))
        rows.append(Row("enqueue_many(1,000)", t_many / 1000 * 1e6, "µs/job", "bare COPY", t_many / t_copy))
        conn.execute("TRUNCATE conveyor.outbox")
    return rows


def bench_notify(url: str, n: int, writers: int = 4) -> list[Row]:
    """Throughput of concurrent enqueuing transactions, with and without a NOTIFY each.

    NOTIFY takes a database-wide lock from the moment it is queued until the commit finishes, so every notifying
    transaction commits one at a time. That is the cost a LISTEN-woken relay would put on every producer."""

    def run(notify: bool) -> float:
        def writer() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                for _ in range(n // writers):
                    with conn.transaction():
                        enqueue(conn, NOTE, PAYLOAD, registry=registry)
                        if notify:
                            conn.execute("SELECT pg_notify('conveyor_outbox', '')")

        with ThreadPoolExecutor(writers) as pool:
            started = time.perf_counter()
            list(pool.map(lambda _: writer(), range(writers)))
            return n / (time.perf_counter() - started)

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE conveyor.outbox")
    plain = run(False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE conveyor.outbox")
    notified = run(True)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE conveyor.outbox")
    return [
        Row(f"{writers} writers, enqueue + commit", plain, "jobs/s"),
        Row(f"{writers} writers, enqueue + NOTIFY + commit", notified, "jobs/s", "without NOTIFY", notified / plain),
    ]


# -- relay -----------------------------------------------------------------------------------------------------


def bench_relay(url: str, sqs, n: int) -> list[Row]:
    settings = Settings(stage=STAGE, database_url=url)
    directory = QueueDirectory(sqs, settings)
    # The baseline writes to a queue of its own: moto allows one purge a minute, and depth slows it down.
    bare_url = sqs.create_queue(QueueName=f"conveyor-{STAGE}-bare")["QueueUrl"]
    bodies = [json.dumps(PAYLOAD)] * n

    def bare() -> None:
        def send(start: int) -> None:
            entries = [{"Id": str(i), "MessageBody": bodies[i]} for i in range(start, min(start + 10, n))]
            sqs.send_message_batch(QueueUrl=bare_url, Entries=entries)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(0, n, 10)))

    t_bare = timed(bare)

    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        enqueue_many(conn, NOTE, [PAYLOAD] * n, registry=registry)
    relay = Relay(lambda: psycopg.connect(url, autocommit=True, prepare_threshold=None), sqs, directory)
    started = time.perf_counter()
    stats = relay.drain(max_seconds=600)
    t_relay = time.perf_counter() - started
    relay.close()
    assert stats.published == n, stats
    # The relay's own ceiling: the same drain against an SQS that accepts everything instantly, so only the
    # claim / mark transactions in PostgreSQL remain.
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        enqueue_many(conn, NOTE, [PAYLOAD] * n, registry=registry)
    ceiling = Relay(lambda: psycopg.connect(url, autocommit=True, prepare_threshold=None), InstantSqs(), directory)
    started = time.perf_counter()
    ceiling_stats = ceiling.drain(max_seconds=600)
    t_ceiling = time.perf_counter() - started
    ceiling.close()
    assert ceiling_stats.published == n, ceiling_stats
    return [
        Row(f"bare SendMessageBatch ×{n // 10} (8 threads)", n / t_bare, "msg/s"),
        Row(f"relay.drain of {n} jobs to an instant SQS (database side only)", n / t_ceiling, "msg/s"),
        Row(f"relay.drain of {n} jobs (claim+publish+mark)", n / t_relay, "msg/s", "bare SendMessageBatch", t_bare / t_relay),
    ]


class InstantSqs:
    """Accepts every batch at once: isolates the relay's PostgreSQL work from SQS latency."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's names
        return {"Successful": [{"Id": e["Id"], "MessageId": e["Id"]} for e in Entries], "Failed": []}


def bench_idle_relay(url: str, sqs, seconds: float = 5.0) -> list[Row]:
    """What a polling relay costs while there is nothing to do (the price of not using LISTEN/NOTIFY)."""
    settings = Settings(stage=STAGE, database_url=url)
    relay = Relay(lambda: psycopg.connect(url, autocommit=True, prepare_threshold=None), sqs, QueueDirectory(sqs, settings))
    stop = threading.Event()
    cycles = []
    thread = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_interval": 0.05, "on_cycle": cycles.append})
    cpu0 = time.process_time()
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    cpu = time.process_time() - cpu0
    relay.close()
    return [Row("idle polling relay (50 ms interval), client CPU", cpu / seconds * 100, "% of a core")]


# -- end to end -------------------------------------------------------------------------------------------------


def bench_latency(url: str, jobs: int) -> list[Row]:
    from shared.local.runtime import LocalConfig, LocalRuntime
    from shared.runtime import job_handler

    done: list[float] = []
    handler = job_handler(NOTE, lambda payload, ctx: None)
    runtime = LocalRuntime(
        registry,
        LocalConfig(stage=STAGE + "e2e", database_url=url, scheduler=False, handlers={NOTE.name: handler}),
        out=lambda _line: None,
    )
    handler.observers.append(lambda report: done.append(report.latency_ms or 0.0))
    runtime.start()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(jobs):
                with conn.transaction():
                    enqueue(conn, NOTE, PAYLOAD, registry=registry)
                time.sleep(0.05)
        runtime.wait_for(lambda: len(done) >= jobs, timeout=60)
    finally:
        runtime.stop()
    quantiles = statistics.quantiles(done, n=100)
    return [
        Row(f"commit → handler done, p50 of {len(done)}", quantiles[49], "ms"),
        Row("commit → handler done, p95", quantiles[94], "ms"),
    ]


# -- run ledger ------------------------------------------------------------------------------------------------


def bench_ledger(url: str, sqs, n: int) -> list[Row]:
    """What the run ledger adds to a handler invocation: the batch's start and outcome statements and the one
    ChangeMessageVisibilityBatch that sets each record's slot. The same handler (a job that does nothing) runs the
    same kind of batches of 10 real moto messages with the ledger and without (no database configured)."""
    from shared.database import Database
    from shared.lambda_events import sqs_record
    from shared.runtime import job_handler

    settings = Settings(stage=STAGE, database_url=url)
    directory = QueueDirectory(sqs, settings)
    queue_url = directory.url(NOTE.queue)
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def events(count: int) -> list[dict]:
        with psycopg.connect(url, autocommit=True) as conn:
            enqueue_many(conn, NOTE, [PAYLOAD] * count, registry=registry)
        relay = Relay(lambda: psycopg.connect(url, autocommit=True, prepare_threshold=None), sqs, directory, batch_size=100)
        published = 0
        try:
            while published < count:
                published += relay.run_once().published
        finally:
            relay.close()
        batches, received = [], 0
        while received < count:
            messages = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=900, AttributeNames=["All"],
                MessageAttributeNames=["All"], WaitTimeSeconds=1,
            ).get("Messages", [])  # fmt: skip
            received += len(messages)
            if messages:
                batches.append({"Records": [sqs_record(m, queue_arn=arn, region="us-east-1") for m in messages]})
        return batches

    def run(database: Database, batches: list[dict]) -> float:
        handler = job_handler(NOTE, lambda payload, ctx: None)
        handler.bind(sqs=sqs, directory=directory, database=database)
        try:
            return timed(lambda: [handler(event) for event in batches])
        finally:
            database.close()

    with_ledger, without, statements_only = events(n), events(n), events(n)
    off = run(Database(Settings(stage=STAGE, database_url=None, db_secret_arn=None)), without)
    on = run(Database(settings), with_ledger)
    db_only = ledger_statements(url, statements_only)
    with psycopg.connect(url, autocommit=True) as conn:
        succeeded = conn.execute("SELECT count(*) FROM conveyor.runs WHERE job_name = %s AND status = 'succeeded'", (NOTE.name,)).fetchone()[0]
    assert succeeded >= n, f"only {succeeded} of {n} runs recorded as succeeded"
    per_job_on, per_job_off = on / n * 1e6, off / n * 1e6
    return [
        Row("start + outcome statements alone, batches of 10", db_only / n * 1e6, "µs/job"),
        Row(f"handler, batches of 10, ledger off ({n} jobs)", per_job_off, "µs/job"),
        Row("handler with the ledger (2 statements + 1 visibility call per batch)", per_job_on, "µs/job", "ledger off", per_job_on / per_job_off),
        Row("added by the ledger", per_job_on - per_job_off, "µs/job"),
    ]


def ledger_statements(url: str, batches: list[dict]) -> float:
    """Seconds for the ledger's two statements per batch alone (what the database pays), on published jobs."""
    from shared.envelope import Delivery
    from shared.ledger import record

    total = 0.0
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        for event in batches:
            starts = [
                record.Start(Delivery.from_record(r), NOTE.name, NOTE.queue, 60.0, uuid.uuid4(), position=i)
                for i, r in enumerate(event["Records"])
            ]
            began = time.perf_counter()
            claims = record.start(conn, starts)
            record.finish(conn, [record.Outcome(c.job_id, c.token, "succeeded") for c in claims.values() if c.taken])
            total += time.perf_counter() - began
    return total


# -- main ------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke check")
    parser.add_argument("--only", metavar="TEXT", help="run only the sections whose title contains TEXT (e.g. ledger)")
    args = parser.parse_args(argv)
    n = 300 if args.quick else 3000
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)

    server = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        from shared.local.postgres import EmbeddedPostgres

        # Durable settings (fsync on): commit cost is part of what an enqueue costs.
        server = EmbeddedPostgres(log=lambda _m: None)
        url = server.start()
    aws = LocalAws()
    aws.start()
    try:
        import boto3

        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            sync_registry(conn, registry)
        sqs = boto3.client("sqs")
        ensure_queues(sqs, registry, stage=STAGE)
        benches: dict[str, Callable[[], list[Row]]] = {
            "Enqueue (one job per transaction, and bulk)": lambda: bench_enqueue(url, n),
            "Commit-time NOTIFY (why the relay polls)": lambda: bench_notify(url, n),
            "Relay throughput against moto": lambda: bench_relay(url, sqs, n),
            "Idle relay": lambda: bench_idle_relay(url, sqs),
            "Run ledger in the handler": lambda: bench_ledger(url, sqs, min(n, 1000)),  # moto receives slow down with depth
            "End to end, local runtime": lambda: bench_latency(url, 40 if args.quick else 200),
        }
        sections = {title: bench() for title, bench in benches.items() if not args.only or args.only.lower() in title.lower()}
    finally:
        aws.stop()
        if server is not None:
            server.stop()

    print(f"# python -m bench.run{' --quick' if args.quick else ''}{f' --only {args.only}' if args.only else ''}")
    print(f"# {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"PostgreSQL via {'DATABASE_URL' if server is None else 'embedded server'}, moto server in process")
    for title, rows in sections.items():
        print(f"\n## {title}\n")
        print("| what | value | vs. | ratio |")
        print("|---|---:|---|---:|")
        for row in rows:
            ratio = f"{row.ratio:.2f}×" if row.ratio is not None else ""
            print(f"| {row.what} | {row.value:,.1f} {row.unit} | {row.baseline} | {ratio} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of the benchmark process: {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
