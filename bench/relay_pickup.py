"""Pickup latency: a job's commit → the relay's SendMessageBatch carrying it, at 200 jobs/s (issue 16, item 3).

    PYTHONPATH=. .venv/bin/python -m bench.relay_pickup [seconds per scenario] [runs]

A producer thread enqueues one job per transaction at 200 jobs/s on its own connection and notes each job's commit
time; an SQS stand-in answers at once and notes when each job id was sent. Scenarios, each with a fresh relay:
``Relay.run`` polling every 50 ms (the old fixed interval) and adaptively (1 ms after work, doubling to 50 ms), and
``Relay.drain(stay=True)`` (the Lambda relay) every 100 ms and adaptively up to 100 ms. Besides latency, each
reports the producers' enqueue + commit time, and what the relay costs the database: claim cycles per second and
the CPU of the relay connection's PostgreSQL backend (utime + stime from /proc), busy (200 jobs/s) and idle (no
producer). Medians over ``runs``.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import psycopg

from bench.run import NOTE, PAYLOAD, STAGE, registry
from shared.envelope import ATTR_JOB_ID
from shared.local.postgres import EmbeddedPostgres
from shared.migrate import migrate, sync_registry
from shared.outbox import enqueue
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.settings import Settings

RATE = 200
TICK = os.sysconf("SC_CLK_TCK")


class RecordingSqs:
    """Answers every batch at once and notes when each job id was sent."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's names
        now = time.perf_counter()
        for entry in Entries:
            self.sent[entry["MessageAttributes"][ATTR_JOB_ID]["StringValue"]] = now
        return {"Successful": [{"Id": e["Id"], "MessageId": e["Id"]} for e in Entries], "Failed": []}


def backend_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) the PostgreSQL backend ``pid`` has used."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def produce(url: str, seconds: float, start: float) -> tuple[dict[str, float], list[float]]:
    """Runs in a process of its own (a thread would share the relay's GIL and delay its wake-ups by up to the 5 ms
    switch interval). perf_counter is CLOCK_MONOTONIC, the same clock in every process."""
    committed: dict[str, float] = {}
    durations: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        for i in range(int(seconds * RATE)):
            target = start + i / RATE
            if (pause := target - time.perf_counter()) > 0:
                time.sleep(pause)
            began = time.perf_counter()
            with conn.transaction():
                job_id = enqueue(conn, NOTE, PAYLOAD, registry=registry)
            done = time.perf_counter()
            committed[str(job_id)] = done
            durations.append(done - began)
    return committed, durations


def produce_elsewhere(pool, url: str, seconds: float) -> tuple[dict[str, float], list[float]]:
    return pool.apply(produce, (url, seconds, time.perf_counter() + 0.2))


@dataclass
class Result:
    p50: float
    p99: float
    producer_p50: float
    cycles_per_s: float
    backend_cpu: float  # % of a core


def scenario(pool, url: str, directory_for, *, loop: str, busy: float, idle: float, seconds: float, producer: bool) -> Result:
    sqs = RecordingSqs()
    relay = Relay(lambda: psycopg.connect(url, autocommit=True, prepare_threshold=None), sqs, directory_for(sqs))
    pid = relay._connection().execute("SELECT pg_backend_pid()").fetchone()[0]
    committed: dict[str, float] = {}
    durations: list[float] = []
    stop = threading.Event()
    drained = []
    if loop == "run":
        worker = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_interval": idle, "busy_interval": busy})
    else:
        worker = threading.Thread(
            target=lambda: drained.append(relay.drain(seconds + 0.5, stay=True, idle_interval=idle, busy_interval=busy))
        )
    cpu0, t0 = backend_cpu(pid), time.perf_counter()
    worker.start()
    if producer:
        committed, durations = produce_elsewhere(pool, url, seconds)
        time.sleep(0.3)  # the last jobs' pickup
    else:
        time.sleep(seconds)
    stop.set()
    worker.join()
    elapsed, cpu = time.perf_counter() - t0, backend_cpu(pid) - cpu0
    cycles = relay.totals.cycles if loop == "run" else drained[0].cycles
    relay.close()
    latencies = sorted((sqs.sent[j] - c) * 1000 for j, c in committed.items() if j in sqs.sent)
    assert len(latencies) == len(committed), (len(latencies), len(committed))
    if latencies:
        p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    else:
        p50 = p99 = float("nan")
    producer_p50 = statistics.median(durations) * 1000 if durations else float("nan")
    return Result(p50, p99, producer_p50, cycles / elapsed, cpu / elapsed * 100)


def producers_alone(pool, url: str, seconds: float) -> float:
    _, durations = produce_elsewhere(pool, url, seconds)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM conveyor.outbox")
    return statistics.median(durations) * 1000


SCENARIOS = [
    ("Relay.run, fixed 50 ms", "run", 0.05, 0.05),
    ("Relay.run, adaptive 1 ms → 50 ms", "run", 0.001, 0.05),
    ("drain(stay=True), fixed 100 ms", "drain", 0.1, 0.1),
    ("drain(stay=True), adaptive 1 ms → 100 ms", "drain", 0.001, 0.1),
]


def main(seconds: float, runs: int) -> None:
    with EmbeddedPostgres(log=lambda _m: None) as server, multiprocessing.get_context("spawn").Pool(1) as pool:
        url = server.url
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            sync_registry(conn, registry)

        def directory_for(sqs):
            return QueueDirectory(sqs, Settings(stage=STAGE, queue_urls={NOTE.queue: "https://sqs.invalid/bench"}))

        busy: dict[str, list[Result]] = {name: [] for name, *_ in SCENARIOS}
        idle: dict[str, list[Result]] = {name: [] for name, *_ in SCENARIOS}
        alone: list[float] = []
        for _ in range(runs):
            alone.append(producers_alone(pool, url, seconds))
            for name, loop, b, i in SCENARIOS:
                busy[name].append(scenario(pool, url, directory_for, loop=loop, busy=b, idle=i, seconds=seconds, producer=True))
                idle[name].append(scenario(pool, url, directory_for, loop=loop, busy=b, idle=i, seconds=seconds, producer=False))

    def med(results: list[Result], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results)

    print(f"pickup at {RATE} jobs/s, {seconds:g} s per scenario, median of {runs} runs")
    print(f"producers' enqueue + commit p50 with no relay running: {statistics.median(alone):.3f} ms")
    print("| relay | pickup p50 | pickup p99 | producers' enqueue+commit p50 | busy: claims/s | busy: backend CPU "
          "| idle: claims/s | idle: backend CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for name, *_ in SCENARIOS:
        print(f"| {name} | {med(busy[name], 'p50'):.1f} ms | {med(busy[name], 'p99'):.1f} ms "
              f"| {med(busy[name], 'producer_p50'):.3f} ms | {med(busy[name], 'cycles_per_s'):.0f} "
              f"| {med(busy[name], 'backend_cpu'):.1f} % | {med(idle[name], 'cycles_per_s'):.1f} "
              f"| {med(idle[name], 'backend_cpu'):.2f} % |")


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
