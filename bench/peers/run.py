"""Conveyor side by side with procrastinate, pgqueuer, graphile-worker and pg-boss on one PostgreSQL (issue 16).

Run with ``make bench-peers`` (or ``python -m bench.peers.run [--quick] [--only conveyor,pgboss] [--runs 3]``). One
embedded PostgreSQL (durable settings, as ``make dev``), a database per system, the same no-op job (bench/run.py's
payload), every system measured in every run before the next run starts, so drift in a shared machine's load falls
on all of them; the table shows medians of the runs and each figure as a ratio to the best peer.

Measures:

1. latency: what ``enqueue()`` adds to a domain transaction: (domain INSERT + enqueue + COMMIT) minus (domain INSERT
   + COMMIT), one job per transaction, p50 and p99 (alternating rounds on one connection);
2. bulk: one call enqueueing N jobs, committed, jobs/s;
3. drain: N queued jobs to done, jobs/s. Conveyor's relay hands them to an SQS that answers at once and runs no
   handler; the peers' workers run a no-op handler;
4. pickup: jobs enqueued + committed at 200 jobs/s; Conveyor: commit → SendMessageBatch issued (the relay's
   ``run`` with its defaults), peers: commit → handler start;
5. end to end through Conveyor's local runtime (moto on 127.0.0.1): commit → handler start at 100 jobs/s, with the
   emulator's own SendMessage → ReceiveMessage floor beside it.

A peer that fails (not installed, an API that changed, a timeout) gets its error in the table and results.json;
the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from datetime import date
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

import psycopg

from bench.run import NOTE, PAYLOAD, STAGE, InstantSqs, registry
from shared.migrate import migrate, sync_registry
from shared.outbox import enqueue, enqueue_many
from shared.outbox.relay import Relay
from shared.queues import QueueDirectory
from shared.settings import Settings

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
SYSTEMS = ["conveyor", "procrastinate", "pgqueuer", "graphile", "pgboss"]
MEASURES = ["latency", "bulk", "drain", "pickup"]
PICKUP_RATE = 200.0
E2E_RATE = 100.0
DOMAIN_TABLE = "CREATE TABLE IF NOT EXISTS domain_order (id bigserial PRIMARY KEY, note text NOT NULL)"
PEER_TIMEOUT = 900


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- Conveyor ----------------------------------------------------------------------------------------------------


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def conveyor_latency(url: str, n: int) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DOMAIN_TABLE)
        conn.execute("TRUNCATE conveyor.outbox")
        bare, with_job = [], []
        for i in range(n + 100):
            t = time.perf_counter()
            with conn.transaction():
                conn.execute("INSERT INTO domain_order (note) VALUES (%s)", ("order",))
            a = time.perf_counter() - t
            t = time.perf_counter()
            with conn.transaction():
                conn.execute("INSERT INTO domain_order (note) VALUES (%s)", ("order",))
                enqueue(conn, NOTE, PAYLOAD, registry=registry)
            b = time.perf_counter() - t
            if i >= 100:
                bare.append(a * 1000)
                with_job.append(b * 1000)
        conn.execute("TRUNCATE conveyor.outbox")
    return {
        "bare_p50_ms": quantile(bare, 0.5), "bare_p99_ms": quantile(bare, 0.99),
        "with_p50_ms": quantile(with_job, 0.5), "with_p99_ms": quantile(with_job, 0.99),
        "added_p50_ms": quantile(with_job, 0.5) - quantile(bare, 0.5),
        "added_p99_ms": quantile(with_job, 0.99) - quantile(bare, 0.99),
    }  # fmt: skip


def conveyor_bulk(url: str, n: int) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE conveyor.outbox")
        payloads = [PAYLOAD] * n
        started = time.perf_counter()
        with conn.transaction():
            enqueue_many(conn, NOTE, payloads, registry=registry)
        elapsed = time.perf_counter() - started
        conn.execute("TRUNCATE conveyor.outbox")
    return {"jobs_per_s": n / elapsed}


def conveyor_drain(url: str, n: int) -> dict:
    """As the peers' drain: a freshly filled table, not ANALYZEd (the relay meets what production gives it)."""
    sqs = InstantSqs()
    directory = QueueDirectory(sqs, Settings(stage=STAGE, queue_urls={NOTE.queue: "https://sqs.invalid/bench"}))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE conveyor.outbox")
        with conn.transaction():
            enqueue_many(conn, NOTE, [PAYLOAD] * n, registry=registry)
    started = time.perf_counter()
    relay = Relay(lambda: connect(url), sqs, directory)
    stats = relay.drain(600)
    elapsed = time.perf_counter() - started
    relay.close()
    if stats.published != n:
        raise RuntimeError(f"relay published {stats.published} of {n}")
    return {"jobs_per_s": n / elapsed}


class RecordingSqs(InstantSqs):
    """Answers at once and notes when each job's SendMessageBatch was issued (the job's user_id is its number)."""

    def __init__(self) -> None:
        self.issued: dict[int, float] = {}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803 - boto3's names
        now = time.perf_counter()
        for entry in Entries:
            seq = json.loads(entry["MessageBody"]).get("user_id")
            self.issued.setdefault(seq, now)
        return super().send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def produce(url: str, n: int, rate: float, *, domain_row: bool) -> dict[int, float]:
    """Enqueue ``n`` jobs at ``rate`` a second, one per transaction (with a domain row before it if asked), and
    return when each one's commit returned (``time.perf_counter()``), by its ``user_id``."""
    committed: dict[int, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        origin = time.perf_counter()
        for seq in range(n):
            wait = origin + seq / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            with conn.transaction():
                if domain_row:
                    conn.execute("INSERT INTO domain_order (note) VALUES (%s)", ("order",))
                enqueue(conn, NOTE, {**PAYLOAD, "user_id": seq}, registry=registry)
            committed[seq] = time.perf_counter()
    return committed


def conveyor_pickup(url: str, n: int) -> dict:
    """The relay's ``run`` with the checkout's defaults, except the idle interval the local runtime passes."""
    sqs = RecordingSqs()
    directory = QueueDirectory(sqs, Settings(stage=STAGE, queue_urls={NOTE.queue: "https://sqs.invalid/bench"}))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DOMAIN_TABLE)
        conn.execute("TRUNCATE conveyor.outbox")
    relay = Relay(lambda: connect(url), sqs, directory)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), kwargs={"idle_interval": 0.05}, daemon=True)
    thread.start()
    time.sleep(1)
    try:
        committed = produce(url, n, PICKUP_RATE, domain_row=True)
        deadline = time.monotonic() + 30
        while len(sqs.issued) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        relay.close()
    latencies = [(t - committed[seq]) * 1000 for seq, t in sqs.issued.items() if seq in committed]
    return {"p50_ms": quantile(latencies, 0.5), "p99_ms": quantile(latencies, 0.99), "handled": len(latencies)}


CONVEYOR: dict[str, Callable[[str, int], dict]] = {
    "latency": conveyor_latency, "bulk": conveyor_bulk, "drain": conveyor_drain, "pickup": conveyor_pickup,
}  # fmt: skip


def end_to_end(url: str, n: int, floor_n: int) -> dict:
    """Conveyor's local runtime on moto: commit → handler start at 100 jobs/s, and moto's own send → receive."""
    import boto3

    from shared.local.aws import LocalAws
    from shared.local.runtime import LocalConfig, LocalRuntime
    from shared.runtime.handler import job_handler

    aws = LocalAws()
    aws.start()
    stage = STAGE + "peers"
    started_at: dict[int, float] = {}
    committed: dict[int, float] = {}

    def handle(payload, _ctx) -> None:
        started_at.setdefault(payload.user_id, time.perf_counter())

    try:
        runtime = LocalRuntime(
            registry,
            LocalConfig(stage=stage, database_url=url, scheduler=False, api_port=None, handlers={NOTE.name: job_handler(NOTE, handle)}),
            out=lambda _line: None,
        )
        runtime.start()
        try:
            time.sleep(1)
            committed.update(produce(url, n, E2E_RATE, domain_row=False))
            runtime.wait_for(lambda: len(started_at) >= n, timeout=60)
        finally:
            runtime.stop()
        e2e = [(t - committed[seq]) * 1000 for seq, t in started_at.items() if seq in committed]

        # The floor: one message at a time, SendMessage then long-polled ReceiveMessage on a queue of its own.
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName=f"conveyor-{stage}-floor")["QueueUrl"]
        floor = []
        body = json.dumps(PAYLOAD)
        for _ in range(floor_n):
            t = time.perf_counter()
            sqs.send_message(QueueUrl=queue_url, MessageBody=body)
            messages: list = []
            while not messages:
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1).get("Messages", [])
            floor.append((time.perf_counter() - t) * 1000)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])
            time.sleep(max(0.0, 1 / E2E_RATE - (time.perf_counter() - t)))
    finally:
        aws.stop()
    return {
        "p50_ms": quantile(e2e, 0.5), "p99_ms": quantile(e2e, 0.99), "handled": len(e2e),
        "floor_p50_ms": quantile(floor, 0.5), "floor_p99_ms": quantile(floor, 0.99),
    }  # fmt: skip


# -- peers -------------------------------------------------------------------------------------------------------


def peer_command(system: str, measure: str, url: str, n: int) -> tuple[list[str], Path]:
    if system in ("graphile", "pgboss"):
        return ["node", str(NODE_DIR / "bench.mjs"), system, measure, url, str(n), str(PICKUP_RATE)], NODE_DIR
    return [sys.executable, "-m", "bench.peers.python_peers", system, measure, url, str(n), str(PICKUP_RATE)], Path.cwd()


def run_peer(system: str, measure: str, url: str, n: int) -> dict:
    command, cwd = peer_command(system, measure, url, n)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=PEER_TIMEOUT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"exit {done.returncode}: {' | '.join(tail)}")
    return json.loads(lines[-1])


def versions() -> dict[str, str]:
    found = {"conveyor": "this checkout (" + git_head() + ")"}
    for system, dist in (("procrastinate", "procrastinate"), ("pgqueuer", "pgqueuer")):
        try:
            found[system] = dist_version(dist)
        except PackageNotFoundError:
            found[system] = "not installed"
    for system, package in (("graphile", "graphile-worker"), ("pgboss", "pg-boss")):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        found[system] = json.loads(manifest.read_text())["version"] if manifest.exists() else "not installed (npm ci)"
    for package in ("pg",):
        manifest = NODE_DIR / "node_modules" / package / "package.json"
        found["node-pg"] = json.loads(manifest.read_text())["version"] if manifest.exists() else "not installed"
    for dist in ("psycopg", "asyncpg", "moto"):
        try:
            found[dist] = dist_version(dist)
        except PackageNotFoundError:
            found[dist] = "not installed"
    try:
        found["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        found["node"] = "not installed"
    found["python"] = platform.python_version()
    return found


def git_head() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


# -- report ------------------------------------------------------------------------------------------------------

# (measure, the figure, label, higher is better)
FIGURES = [
    ("latency", "added_p50_ms", "latency enqueue() adds to a domain transaction, p50 (ms)", False),
    ("latency", "added_p99_ms", "latency enqueue() adds to a domain transaction, p99 (ms)", False),
    ("bulk", "jobs_per_s", "bulk enqueue of N jobs in one call (jobs/s)", True),
    ("drain", "jobs_per_s", "drain of N queued jobs (jobs/s)", True),
    ("pickup", "p50_ms", "pickup at 200 jobs/s, p50 (ms)", False),
    ("pickup", "p99_ms", "pickup at 200 jobs/s, p99 (ms)", False),
]


def medians(results: dict, system: str, measure: str) -> dict | None:
    runs = [r for r in results[system][measure] if "error" not in r]
    if not runs:
        return None
    keys = [k for k, v in runs[0].items() if isinstance(v, int | float)]
    return {k: statistics.median(r[k] for r in runs) for k in keys} | {"runs": len(runs)}


def table(results: dict, systems: list[str]) -> list[str]:
    lines = ["| measure | " + " | ".join(systems) + " | Conveyor ÷ best peer |", "|---|" + "---:|" * (len(systems) + 1)]
    for measure, key, label, higher in FIGURES:
        cells, peers = [], []
        for system in systems:
            m = medians(results, system, measure)
            if m is None:
                errors = [r["error"] for r in results[system][measure] if "error" in r]
                cells.append("failed" if errors else "—")
                continue
            cells.append(f"{m[key]:,.0f}" if higher else f"{m[key]:.2f}")
            if system != "conveyor":
                peers.append((m[key], system))
        ratio = ""
        ours = medians(results, "conveyor", measure) if "conveyor" in systems else None
        # An added latency at or below zero is a difference of two noisy quantiles (small N), not a peer's best.
        comparable = [peer for peer in peers if higher or peer[0] > 0]
        if ours is not None and comparable:
            best, who = max(comparable) if higher else min(comparable)
            ratio = f"{ours[key] / best:.2f}× ({who})" if best > 0 else f"best peer {best:.2f} ({who})"
        elif ours is not None and peers:
            ratio = "no peer figure above zero (noise: use more transactions)"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N and one run, for a smoke check")
    parser.add_argument("--only", metavar="SYSTEMS", help=f"comma-separated, of {','.join(SYSTEMS)}")
    parser.add_argument("--runs", type=int, help="runs per measure (default 3, --quick 1)")
    parser.add_argument("--out", default=str(HERE / "results.json"), help="where the results go (JSON)")
    args = parser.parse_args(argv)
    systems = [s.strip() for s in args.only.split(",")] if args.only else SYSTEMS
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}: choose from {', '.join(SYSTEMS)}")
    runs = args.runs or (1 if args.quick else 3)
    sizes = (
        {"latency": 200, "bulk": 2_000, "drain": 2_000, "pickup": 100, "e2e": 50, "floor": 50}
        if args.quick
        else {"latency": 2_000, "bulk": 20_000, "drain": 20_000, "pickup": 1_000, "e2e": 500, "floor": 200}
    )
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    from shared.local.postgres import EmbeddedPostgres

    results: dict = {s: {m: [] for m in [*MEASURES, "e2e"]} for s in systems}
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    # Durable settings (fsync on): the commit is part of what an enqueue costs, for every system alike.
    with EmbeddedPostgres(log=lambda _m: None) as server:
        base = server.url.rsplit("/", 1)[0]
        urls = {s: f"{base}/peer_{s}" for s in systems}
        with psycopg.connect(server.url, autocommit=True) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
            for system in systems:
                conn.execute(f"DROP DATABASE IF EXISTS peer_{system}")
                conn.execute(f"CREATE DATABASE peer_{system}")
        if "conveyor" in systems:
            with psycopg.connect(urls["conveyor"], autocommit=True) as conn:
                migrate(conn)
                sync_registry(conn, registry)
        for run in range(runs):
            for measure in MEASURES:
                for system in systems:
                    log(f"run {run + 1}/{runs}: {system} {measure} (n={sizes[measure]})")
                    try:
                        if system == "conveyor":
                            outcome = CONVEYOR[measure](urls[system], sizes[measure])
                        else:
                            outcome = run_peer(system, measure, urls[system], sizes[measure])
                    except Exception as error:  # noqa: BLE001 - one peer's failure is reported, not fatal
                        outcome = {"error": f"{type(error).__name__}: {error}"}
                        log("".join(traceback.format_exception_only(error)).strip())
                    log(f"  {json.dumps(outcome)}")
                    results[system][measure].append(outcome)
            if "conveyor" in systems:
                log(f"run {run + 1}/{runs}: conveyor end to end (local runtime, moto; n={sizes['e2e']})")
                try:
                    outcome = end_to_end(urls["conveyor"], sizes["e2e"], sizes["floor"])
                except Exception as error:  # noqa: BLE001
                    outcome = {"error": f"{type(error).__name__}: {error}"}
                    log(traceback.format_exc())
                log(f"  {json.dumps(outcome)}")
                results["conveyor"]["e2e"].append(outcome)

    found = versions()
    command = "python -m bench.peers.run" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    command += f" --runs {args.runs}" if args.runs else ""
    meta = {
        "command": command, "date": date.today().isoformat(), "runs": runs, "sizes": sizes,
        "machine": f"{platform.platform()}, {os.cpu_count()} cores", "postgresql": pg_version, "versions": found,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")

    print(f"# {command}  ({meta['date']}, {meta['machine']}, PostgreSQL {pg_version}, medians of {runs} run(s))")
    print("# " + ", ".join(f"{k} {v}" for k, v in found.items()))
    print(f"# N: {json.dumps(sizes)}\n")
    for line in table(results, systems):
        print(line)
    if "conveyor" in systems:
        e2e = medians(results, "conveyor", "e2e")
        if e2e is not None:
            print(f"\nConveyor end to end, local runtime on moto, commit → handler start at {E2E_RATE:.0f} jobs/s: "
                  f"p50 {e2e['p50_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms; moto's own SendMessage → ReceiveMessage "
                  f"floor: p50 {e2e['floor_p50_ms']:.1f} ms, p99 {e2e['floor_p99_ms']:.1f} ms")
    failures = [(s, m, r["error"]) for s in systems for m, rs in results[s].items() for r in rs if "error" in r]
    for system, measure, error in failures:
        print(f"\n{system} {measure} failed: {error}")
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
