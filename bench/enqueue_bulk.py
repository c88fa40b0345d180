"""Bulk enqueue by COPY and the per-job enqueue path (issue 16), side by side in one run, 3 runs, medians::

    PYTHONPATH=. .venv/bin/python -m bench.enqueue_bulk [jobs] [runs] [per_job_calls]

(a) ``enqueue_many`` of 20,000 jobs in one call, jobs/s: the batch path before issue 16 (each item validated,
dumped and given an id one by one, then ``INSERT … SELECT FROM unnest(…)`` over text arrays, reproduced here as it
was), today's path (list validation, bulk ids, binary COPY), a bare binary COPY of the same rows already prepared (the
floor), and today's path for a batch whose items all have a dedup key (the INSERT, arrays sent in binary).
Each in its own transaction, rolled back, on a table ANALYZEd and empty.

(b) What ``enqueue()`` adds to a domain transaction (a domain INSERT + enqueue + commit, minus the domain INSERT +
commit run just before it, call by call), p50 and p99, beside enqueue() as it was before issue 16 and a bare INSERT
of the same outbox row in the same place.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg

from bench.run import NOTE, PAYLOAD, registry
from shared.ids import new_job_id, new_job_ids
from shared.local.postgres import EmbeddedPostgres
from shared.migrate import migrate, sync_registry
from shared.outbox import QUERIES, Item, enqueue, enqueue_many, payload_body, validate_payload

BARE_INSERT = (
    "INSERT INTO conveyor.outbox (id, job_name, queue, payload, run_at) "
    "VALUES (%s, %s, %s, %s::json, statement_timestamp())"
)


def unnest_path(conn: psycopg.Connection, payloads: list[dict]) -> None:
    """enqueue_many as it was before issue 16 (commit 75955b9), for a keyless batch."""
    ids, queues, bodies, keys = [], [], [], []
    for payload in payloads:
        model = validate_payload(NOTE, payload)
        bodies.append(payload_body(NOTE, model))
        ids.append(new_job_id())
        queues.append(NOTE.queue_for(model, None))
        keys.append(None)
    # The statement as it was: the arrays sent as text literals (today's sends them in binary).
    query = QUERIES["outbox_insert_many"].replace(")b::", ")s::")
    params = {"job_name": NOTE.name, "ids": ids, "queues": queues, "payloads": bodies, "dedup_keys": keys,
              "run_at": None, "delay": timedelta(0)}
    assert len(conn.execute(query, params).fetchall()) == len(ids)


def keyed_path(conn: psycopg.Connection, payloads: list[dict]) -> None:
    """Today's path for a batch whose items all have a dedup key (none held): INSERT … ON CONFLICT, binary arrays."""
    enqueue_many(conn, NOTE, [Item(p, dedup_key=f"k{i}") for i, p in enumerate(payloads)], registry=registry)


def copy_path(conn: psycopg.Connection, payloads: list[dict]) -> None:
    enqueue_many(conn, NOTE, payloads, registry=registry)


def bare_copy(rows: list[tuple]) -> Callable[[psycopg.Connection, list[dict]], None]:
    def run(conn: psycopg.Connection, _payloads: list[dict]) -> None:
        with conn.cursor() as cursor, cursor.copy(QUERIES["outbox_copy"]) as copy:
            copy.set_types(["uuid", "text", "text", "text", "timestamptz"])
            for row in rows:
                copy.write_row(row)

    return run


def timed_batch(conn: psycopg.Connection, write: Callable, payloads: list[dict]) -> float:
    conn.execute("TRUNCATE conveyor.outbox")
    conn.execute("ANALYZE conveyor.outbox")
    with conn.transaction(force_rollback=True):
        started = time.perf_counter()
        write(conn, payloads)
        elapsed = time.perf_counter() - started
        [count] = conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()
        assert count == len(payloads), count
    return len(payloads) / elapsed


def enqueue_before(conn: psycopg.Connection) -> None:
    """enqueue() without a dedup key as it was before issue 16 (commit 75955b9): ON CONFLICT DO NOTHING RETURNING id."""
    model = validate_payload(NOTE, PAYLOAD)
    params = {"id": new_job_id(), "job_name": NOTE.name, "queue": NOTE.queue_for(model, None),
              "payload": payload_body(NOTE, model), "run_at": None, "delay": timedelta(0), "dedup_key": None}
    assert conn.execute(QUERIES["outbox_insert"], params).fetchone() is not None


def per_job(conn: psycopg.Connection, calls: int) -> dict[str, list[float]]:
    """Milliseconds per domain transaction: alone, with enqueue(), with a bare outbox INSERT; interleaved."""
    conn.execute("CREATE TABLE IF NOT EXISTS bench_domain (id bigserial PRIMARY KEY, note text NOT NULL)")
    body = payload_body(NOTE, validate_payload(NOTE, PAYLOAD))
    cases: dict[str, Callable[[], object]] = {
        "domain": lambda: None,
        "enqueue": lambda: enqueue(conn, NOTE, PAYLOAD, registry=registry),
        "enqueue before": lambda: enqueue_before(conn),
        "bare": lambda: conn.execute(BARE_INSERT, (new_job_id(), NOTE.name, NOTE.queue, body)),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(calls + 50):
        for name, extra in cases.items():
            started = time.perf_counter()
            with conn.transaction():
                conn.execute("INSERT INTO bench_domain (note) VALUES (%s)", ("order",))
                extra()
            elapsed = (time.perf_counter() - started) * 1000
            if i >= 50:  # warm: statements prepared, caches filled
                times[name].append(elapsed)
    conn.execute("TRUNCATE conveyor.outbox, bench_domain")
    # Each call against the domain-only transaction run just before it: what the extra statement added.
    return {name: [t - d for t, d in zip(values, times["domain"])] for name, values in times.items() if name != "domain"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(n: int, runs: int, calls: int) -> None:
    payloads = [dict(PAYLOAD) for _ in range(n)]
    body = payload_body(NOTE, validate_payload(NOTE, PAYLOAD))
    with EmbeddedPostgres(log=lambda _m: None) as server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            migrate(conn)
            sync_registry(conn, registry)
            [now] = conn.execute("SELECT statement_timestamp()").fetchone()
            rows = [(job_id, NOTE.name, NOTE.queue, body, now) for job_id in new_job_ids(n)]
            paths = {"unnest (before)": unnest_path, "COPY (now)": copy_path, "bare COPY (floor)": bare_copy(rows),
                     "keyed (now)": keyed_path}
            rates: dict[str, list[float]] = {name: [] for name in paths}
            added: dict[str, list[float]] = {f"{what} p{q}": [] for what in ("enqueue", "enqueue before", "bare") for q in (50, 99)}
            for run in range(runs):
                for name, write in paths.items():
                    rates[name].append(timed_batch(conn, write, payloads))
                times = per_job(conn, calls)
                for what, values in times.items():
                    added[f"{what} p50"].append(pct(values, 0.5))
                    added[f"{what} p99"].append(pct(values, 0.99))
                print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} jobs/s" for k, v in rates.items())
                      + "; " + ", ".join(f"{k} +{v[-1]:.3f} ms" for k, v in added.items())
                      , flush=True)
    median = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n(a) enqueue_many of {n:,} jobs in one call, median of {runs} runs:")
    for name, rate in median.items():
        print(f"    {name:<18} {rate:>10,.0f} jobs/s  ({rate / median['bare COPY (floor)']:.2f} of the floor, "
              f"{rate / median['unnest (before)']:.2f}x before)")
    print(f"(b) added to a domain transaction, {calls:,} calls, median of {runs} runs:")
    for name, values in added.items():
        print(f"    {name:<12} +{statistics.median(values):.3f} ms")
    ratio = statistics.median(added["enqueue p50"]) / statistics.median(added["bare p50"])
    print(f"    enqueue / bare INSERT at p50: {ratio:.2f}; enqueue now / before at p50: "
          f"{statistics.median(added['enqueue p50']) / statistics.median(added['enqueue before p50']):.2f}")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [20_000, 3, 5_000][len(args):]))
