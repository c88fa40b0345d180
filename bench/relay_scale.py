"""How far the relay scales: 1, 2 and 4 relays (processes, each its own connection) draining 20,000 queued jobs from
an outbox that was never analysed, to an SQS that answers at once and to one that takes 15 ms per SendMessageBatch
(issue 16, item 4).

    PYTHONPATH=. .venv/bin/python -m bench.relay_scale [jobs] [runs] [relays, e.g. 1,2,4] [instant,slow]

Each run enqueues the jobs in one transaction (autovacuum is off for the outbox, so no ANALYZE ever gives it
statistics), starts the relays together and times until the last one finds nothing due; jobs/s over all relays,
medians of ``runs``. The run ledger is emptied between runs so every run inserts into a table of the same size.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time

import psycopg

from bench.run import NOTE, PAYLOAD, STAGE, InstantSqs, registry
from shared.local.postgres import EmbeddedPostgres
from shared.migrate import migrate, sync_registry
from shared.outbox import enqueue_many
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.settings import Settings

SLOW_CALL = 0.015


class SlowSqs(InstantSqs):
    """Accepts every batch after 15 ms, about what one SendMessageBatch takes against SQS in the same region."""

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's names
        time.sleep(SLOW_CALL)
        return super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def relay_process(url: str, slow: bool, start_at: float) -> tuple[int, float]:
    """One relay in its own process: drain until nothing is due. Returns (published, when it finished)."""
    sqs = SlowSqs() if slow else InstantSqs()
    directory = QueueDirectory(sqs, Settings(stage=STAGE, queue_urls={NOTE.queue: "https://sqs.invalid/bench"}))
    relay = Relay(lambda: psycopg.connect(url, autocommit=True, prepare_threshold=None), sqs, directory)
    relay._connection()  # connected before the start, like a running relay
    time.sleep(max(start_at - time.perf_counter(), 0))
    stats = relay.drain(600)
    finished = time.perf_counter()
    relay.close()
    return stats.published, finished


def one_run(pool, url: str, n: int, relays: int, slow: bool) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE conveyor.runs CASCADE")
        with conn.transaction():
            enqueue_many(conn, NOTE, [PAYLOAD] * n, registry=registry)
        analysed = conn.execute(
            "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL FROM pg_stat_user_tables "
            "WHERE schemaname = 'conveyor' AND relname = 'outbox'"
        ).fetchone()[0]
        assert not analysed, "the outbox has statistics; this bench measures a table without them"
    start_at = time.perf_counter() + 1.0
    results = pool.starmap(relay_process, [(url, slow, start_at)] * relays)
    published = sum(p for p, _ in results)
    assert published == n, (published, n)
    return n / (max(f for _, f in results) - start_at)


def main(n: int, runs: int, counts: list[int], kinds: list[str]) -> None:
    with EmbeddedPostgres(log=lambda _m: None) as server, multiprocessing.get_context("spawn").Pool(4) as pool:
        url = server.url
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            sync_registry(conn, registry)
            conn.execute("ALTER TABLE conveyor.outbox SET (autovacuum_enabled = off)")
        rows = []
        for slow in [kind == "slow" for kind in kinds]:
            for relays in counts:
                rates = [one_run(pool, url, n, relays, slow) for _ in range(runs)]
                rows.append((slow, relays, rates))
                print(f"  {'15 ms' if slow else 'instant'} SQS, {relays} relay(s): {[round(r) for r in rates]}", flush=True)
    print(f"relay drain of {n:,} jobs from an unanalysed outbox, median of {runs} runs")
    print("| SQS | relays | jobs/s (all relays) | jobs/s per relay |")
    print("|---|---|---|---|")
    for slow, relays, rates in rows:
        median = statistics.median(rates)
        print(f"| {'15 ms per call' if slow else 'answers at once'} | {relays} | {median:,.0f} | {median / relays:,.0f} |")


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
        int(sys.argv[2]) if len(sys.argv) > 2 else 3,
        [int(c) for c in sys.argv[3].split(",")] if len(sys.argv) > 3 else [1, 2, 4],
        sys.argv[4].split(",") if len(sys.argv) > 4 else ["instant", "slow"],
    )
