"""The relay Lambda's peak memory while it drains a backlog (issue 16, item 6): does 128 MB hold?

A fresh process imports exactly what ``functions/relay/handler.py`` imports, builds what a deployed relay builds on
its first run (the SQS client, and the Secrets Manager client that ``shared.database.conninfo`` makes on Lambda to
read the database secret), and runs the real ``handler`` in resident mode (``drain(stay=True)``) over N queued jobs
until its drain budget ends. SQS is moto's server in *another* process, so its memory is not counted; PostgreSQL is
an embedded server, also its own process. The child reports its peak resident set (``VmHWM``; ``ru_maxrss`` would
include the parent's, see ``CHILD``) after its imports and after the drain, and, in one further run, tracemalloc's
peak of Python allocations during the drain::

    PYTHONPATH=. .venv/bin/python -m bench.relay_memory [--jobs 20000] [--runs 3] [--drain-seconds 60] [--sqs instant]

Lambda's memory setting bounds the whole execution environment, so the runtime's own share comes on top of what is
measured here: its bootstrap (``awslambdaric``, in the same interpreter as the handler) and the sandbox around it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import psycopg

from bench.run import NOTE, PAYLOAD, STAGE, registry
from shared.local.postgres import EmbeddedPostgres
from shared.migrate import migrate, sync_registry
from shared.outbox import enqueue_many

ROOT = Path(__file__).resolve().parent.parent

# Started in its own process so its memory is not in the relay's.
MOTO = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()  # until the parent closes it
server.stop()
"""

# The relay as Lambda runs it: its imports at init, then one invocation that drains until its budget ends.
CHILD = """
import json, os, sys, time, tracemalloc

def high_water_kib():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec, so a child started by
    # a large parent reports the parent's peak. VmHWM belongs to this process's own address space.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

import functions.relay.handler as relay_handler
import aws_lambda_powertools.utilities.parameters  # what conninfo imports on Lambda to read the secret
import boto3
after_imports = high_water_kib()
secrets = boto3.client("secretsmanager")  # made by get_secret on Lambda; here only its memory is wanted
if os.environ.get("BENCH_SQS") == "instant":
    from shared.database import connect
    from shared.outbox.relay import Relay, relay_client_config

    class InstantSqs:
        def send_message_batch(self, QueueUrl, Entries):
            return {"Successful": [{"Id": e["Id"], "MessageId": e["Id"]} for e in Entries], "Failed": []}

    real = boto3.client("sqs", config=relay_client_config())  # what the handler makes, for its memory
    relay_handler._relay = Relay(connect, InstantSqs())

class Context:
    def __init__(self, seconds):
        self.deadline = time.monotonic() + seconds
    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)

tracemalloc.start() if os.environ.get("BENCH_TRACEMALLOC") else None
started = time.perf_counter()
result = relay_handler.handler({}, Context(float(os.environ["CONVEYOR_RELAY_DRAIN_SECONDS"]) + 10))
elapsed = time.perf_counter() - started
traced = tracemalloc.get_traced_memory()[1] if tracemalloc.is_tracing() else None
peak = high_water_kib()
print(json.dumps({"after_imports_kib": after_imports, "peak_kib": peak, "traced_peak_bytes": traced,
                  "seconds": elapsed, "result": result}, default=str))
"""


def _moto() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def run_child(url: str, endpoint: str, queue_url: str, drain_seconds: int, *, tracemalloc: bool, sqs: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "CONVEYOR_STAGE": STAGE,
        "CONVEYOR_DATABASE_URL": url,
        "CONVEYOR_RELAY_MODE": "resident",
        "CONVEYOR_RELAY_DRAIN_SECONDS": str(drain_seconds),
        "CONVEYOR_QUEUE_URLS": json.dumps({NOTE.queue: queue_url}),
        "POWERTOOLS_METRICS_NAMESPACE": "Conveyor",
        "POWERTOOLS_SERVICE_NAME": "conveyor-relay",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **({"BENCH_TRACEMALLOC": "1"} if tracemalloc else {}),
        **({"BENCH_SQS": "instant"} if sqs == "instant" else {}),
    }
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    # The deployed resident relay drains for 65 s a run (infra/relay.py).
    parser.add_argument("--drain-seconds", type=int, default=60)
    # moto answers a SendMessageBatch in ~80 ms here, so a 60 s drain publishes a few thousand jobs; "instant"
    # hands the relay an SQS stand-in that accepts every batch at once (the SQS client is still made, for its
    # memory), so the whole backlog goes through in one run.
    parser.add_argument("--sqs", choices=("moto", "instant"), default="moto")
    # The relay claims up to 500 rows a cycle and holds their payloads while it publishes them, so its peak grows
    # with the payload size (up to SQS's 256 KB message); the default is the bench's usual ~230-byte payload.
    parser.add_argument("--payload-bytes", type=int, default=len(PAYLOAD["text"]))
    args = parser.parse_args(argv)
    moto, endpoint = _moto()
    try:
        import boto3

        sqs = boto3.client(
            "sqs", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
        )
        with EmbeddedPostgres(log=lambda _m: None) as server:
            with psycopg.connect(server.url, autocommit=True) as conn:
                migrate(conn)
                sync_registry(conn, registry)
            rows = []
            payload = {**PAYLOAD, "text": "x" * args.payload_bytes}
            for run in range(args.runs + 1):  # the last run with tracemalloc (it slows the drain and adds its own)
                traced = run == args.runs
                with psycopg.connect(server.url, autocommit=True) as conn, conn.transaction():
                    enqueue_many(conn, NOTE, [payload] * args.jobs, registry=registry)
                queue_url = sqs.create_queue(QueueName=f"{STAGE}-relay-memory-{run}")["QueueUrl"]  # a fresh one each run
                row = run_child(server.url, endpoint, queue_url, args.drain_seconds, tracemalloc=traced, sqs=args.sqs)
                with psycopg.connect(server.url, autocommit=True) as conn:
                    left = conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone()[0]
                    # Start each run from an empty outbox, so every run drains the same backlog.
                    conn.execute("DELETE FROM conveyor.outbox")
                row["left_in_outbox"] = left
                rows.append(row)
                print(json.dumps(row, default=str), flush=True)
    finally:
        assert moto.stdin is not None
        moto.stdin.close()
        moto.wait(timeout=30)
    plain = rows[:-1]
    mib = lambda kib: kib / 1024  # noqa: E731
    print(
        f"\n{args.jobs:,} jobs of {args.payload_bytes:,} B, {args.runs} runs: RSS after imports median {mib(statistics.median(r['after_imports_kib'] for r in plain)):.1f} MiB, "
        f"peak median {mib(statistics.median(r['peak_kib'] for r in plain)):.1f} MiB "
        f"(max {mib(max(r['peak_kib'] for r in plain)):.1f}); tracemalloc peak during the drain "
        f"{rows[-1]['traced_peak_bytes'] / 2**20:.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
