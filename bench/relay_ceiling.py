"""The relay's database-side ceiling: drain N jobs to an SQS that answers at once, R runs, median.

Run from the root of the checkout to measure (its ``shared`` package is the one imported), e.g. to compare a change
with the commit before it, side by side on one machine::

    git worktree add /tmp/before <commit>
    (cd /tmp/before && PYTHONPATH=. /path/to/.venv/bin/python /path/to/bench/relay_ceiling.py 20000 3)
    PYTHONPATH=. .venv/bin/python bench/relay_ceiling.py 20000 3

Each run enqueues N jobs in one transaction, ANALYZEs the outbox (so only the relay's own statements are measured;
an unanalysed table is a separate question) and times ``Relay.drain`` with the default batch of 500.
"""

from __future__ import annotations

import os
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


def main(n: int, runs: int) -> None:
    sqs = InstantSqs()
    directory = QueueDirectory(sqs, Settings(stage=STAGE, queue_urls={NOTE.queue: "https://sqs.invalid/bench"}))
    with EmbeddedPostgres(log=lambda _m: None) as server:
        url = server.url
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            sync_registry(conn, registry)
        rates = []
        for _ in range(runs):
            with psycopg.connect(url, autocommit=True) as conn:
                with conn.transaction():
                    enqueue_many(conn, NOTE, [PAYLOAD] * n, registry=registry)
                conn.execute("ANALYZE conveyor.outbox")
            relay = Relay(lambda: psycopg.connect(url, autocommit=True, prepare_threshold=None), sqs, directory)
            started = time.perf_counter()
            stats = relay.drain(600)
            elapsed = time.perf_counter() - started
            relay.close()
            assert stats.published == n, stats
            rates.append(n / elapsed)
    print(f"{os.getcwd()}: relay.drain of {n} jobs to an instant SQS, jobs/s per run {[round(r) for r in rates]}, "
          f"median {statistics.median(rates):,.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
