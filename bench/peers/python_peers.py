"""The Python peers of bench/peers (procrastinate, pgqueuer), one measure per process so a failure stays in its cell.

    python -m bench.peers.python_peers <procrastinate|pgqueuer> <latency|bulk|drain|pickup> <database url> <n> [rate]

Prints one JSON object on stdout, the same shape as bench/peers/node/bench.mjs. Each peer runs on its native async
driver (procrastinate: psycopg 3; pgqueuer: asyncpg) and the domain transaction it is measured in uses that driver
too, so the baseline (domain INSERT + COMMIT) is paid on the same connection as the enqueue.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

PAYLOAD = {"user_id": 42, "text": "x" * 200}
TASK = "noop"
DOMAIN_TABLE = "CREATE TABLE IF NOT EXISTS domain_order (id bigserial PRIMARY KEY, note text NOT NULL)"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Procrastinate:
    """procrastinate on psycopg 3. Into the caller's transaction through its documented ``configure(connection=)``,
    which runs the job's INSERT on that connection instead of the connector's pool."""

    def __init__(self, url: str) -> None:
        import procrastinate

        self.url = url
        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
        self.on_job: Callable[[dict], None] = lambda _args: None

        @self.app.task(name=TASK)
        async def noop(**args: object) -> None:
            self.on_job(args)

    async def setup(self) -> None:
        import psycopg

        await self.app.open_async()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            installed = (await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone())[0]
        if installed is None:
            await self.app.schema_manager.apply_schema_async()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute("TRUNCATE procrastinate_jobs CASCADE")

    async def close(self) -> None:
        await self.app.close_async()

    async def connect(self):
        import psycopg

        return await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def transaction(self, conn, body: str | None) -> None:
        async with conn.transaction():
            await conn.execute("INSERT INTO domain_order (note) VALUES (%s)", ("order",))
            if body is not None:
                await self.app.tasks[TASK].configure(connection=conn).defer_async(**json.loads(body))

    async def bulk(self, count: int) -> None:
        await self.app.tasks[TASK].batch_defer_async(*([PAYLOAD] * count))

    async def worker(self, on_job: Callable[[dict], None], *, drain: bool) -> asyncio.Task:
        # concurrency: procrastinate's "how to: concurrency" page, for async I/O-bound tasks; 10 as for the others.
        self.on_job = on_job
        return asyncio.create_task(self.app.run_worker_async(concurrency=10, wait=not drain, install_signal_handlers=False))


class PgQueuer:
    """pgqueuer on asyncpg: its ``Queries`` run on whatever connection the driver wraps, so the enqueue joins the
    caller's transaction as documented."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: list = []

    async def connect(self):
        import asyncpg

        conn = await asyncpg.connect(self.url)
        self.conns.append(conn)
        return conn

    def queries(self, conn):
        from pgqueuer import AsyncpgDriver, Queries

        return Queries(AsyncpgDriver(conn))

    async def setup(self) -> None:
        conn = await self.connect()
        if await conn.fetchval("SELECT to_regclass('pgqueuer')") is None:
            await self.queries(conn).install()
        await conn.execute("TRUNCATE pgqueuer")

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()

    async def transaction(self, conn, body: str | None) -> None:
        async with conn.transaction():
            await conn.execute("INSERT INTO domain_order (note) VALUES ($1)", "order")
            if body is not None:
                await self.queries(conn).enqueue(TASK, body.encode())

    async def bulk(self, count: int) -> None:
        conn = await self.connect()
        body = json.dumps(PAYLOAD).encode()
        await self.queries(conn).enqueue([TASK] * count, [body] * count, [0] * count)

    async def worker(self, on_job: Callable[[dict], None], *, drain: bool) -> asyncio.Task:
        from pgqueuer import AsyncpgDriver, PgQueuer
        from pgqueuer.types import QueueExecutionMode

        pgq = PgQueuer(AsyncpgDriver(await self.connect()))

        @pgq.entrypoint(TASK)
        async def noop(job) -> None:
            on_job(json.loads(job.payload))

        # batch_size 10 is pgqueuer's default and its CLI's; unlimited concurrency (concurrency_limit=0).
        mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
        task = asyncio.create_task(pgq.run(mode=mode, batch_size=10, dequeue_timeout=timedelta(seconds=1)))
        task.pgq = pgq  # type: ignore[attr-defined]
        return task


async def until(done: asyncio.Event, worker: asyncio.Task, timeout: float, *, strict: bool = True) -> None:
    """Wait for the last job, but not for a worker that has already died (its error is the result)."""
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait([waiter, worker], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if done.is_set():
        return
    if worker.done():
        raise RuntimeError(f"the worker stopped before the last job: {worker.exception()!r}")
    if strict:
        raise TimeoutError(f"the last job did not start within {timeout} s")


async def stop(task: asyncio.Task) -> None:
    pgq = getattr(task, "pgq", None)
    if pgq is not None:
        pgq.shutdown.set()
    else:
        task.cancel()
    try:
        await asyncio.wait_for(task, 10)
    except (asyncio.CancelledError, asyncio.TimeoutError):
        pass


async def measure(peer, what: str, n: int, rate: float) -> dict:
    result: dict = {"measure": what, "n": n}
    if what == "latency":
        conn = await peer.connect()
        await conn.execute(DOMAIN_TABLE)
        body = json.dumps(PAYLOAD)
        bare, with_job = [], []
        # Alternating rounds put drift in the machine's load on both sides; the first 100 warm up.
        for i in range(n + 100):
            t = time.perf_counter()
            await peer.transaction(conn, None)
            a = time.perf_counter() - t
            t = time.perf_counter()
            await peer.transaction(conn, body)
            b = time.perf_counter() - t
            if i >= 100:
                bare.append(a * 1000)
                with_job.append(b * 1000)
        result |= {
            "bare_p50_ms": quantile(bare, 0.5), "bare_p99_ms": quantile(bare, 0.99),
            "with_p50_ms": quantile(with_job, 0.5), "with_p99_ms": quantile(with_job, 0.99),
            "added_p50_ms": quantile(with_job, 0.5) - quantile(bare, 0.5),
            "added_p99_ms": quantile(with_job, 0.99) - quantile(bare, 0.99),
        }  # fmt: skip
    elif what == "bulk":
        started = time.perf_counter()
        await peer.bulk(n)
        result["jobs_per_s"] = n / (time.perf_counter() - started)
    elif what == "drain":
        await peer.bulk(n)
        done = asyncio.Event()
        count = 0

        def on_job(_args: dict) -> None:
            nonlocal count
            count += 1
            if count == n:
                done.set()

        started = time.perf_counter()
        task = await peer.worker(on_job, drain=False)
        await until(done, task, 600)
        result["jobs_per_s"] = n / (time.perf_counter() - started)
        await stop(task)
    elif what == "pickup":
        committed: dict[int, float] = {}
        started_at: dict[int, float] = {}
        done = asyncio.Event()

        def on_job(args: dict) -> None:
            seq = args.get("seq")
            if seq is not None and seq not in started_at:
                started_at[seq] = time.perf_counter()
                if len(started_at) == n:
                    done.set()

        task = await peer.worker(on_job, drain=False)
        await asyncio.sleep(1)
        conn = await peer.connect()
        await conn.execute(DOMAIN_TABLE)
        origin = time.perf_counter()
        for seq in range(n):
            wait = origin + seq / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await peer.transaction(conn, json.dumps(PAYLOAD | {"seq": seq}))
            committed[seq] = time.perf_counter()
        await until(done, task, 60, strict=False)
        latencies = [(t - committed[seq]) * 1000 for seq, t in started_at.items()]
        result |= {"p50_ms": quantile(latencies, 0.5), "p99_ms": quantile(latencies, 0.99), "handled": len(latencies)}
        await stop(task)
    else:
        raise SystemExit(f"unknown measure {what}: latency, bulk, drain or pickup")
    return result


PEERS: dict[str, Callable[[str], object]] = {"procrastinate": Procrastinate, "pgqueuer": PgQueuer}


async def main(system: str, what: str, url: str, n: int, rate: float) -> dict:
    if system not in PEERS:
        raise SystemExit(f"unknown system {system}: {' or '.join(PEERS)}")
    peer = PEERS[system](url)
    await peer.setup()
    try:
        return {"system": system} | await measure(peer, what, n, rate)
    finally:
        await peer.close()


def version(system: str) -> str:
    from importlib.metadata import version as dist_version

    return dist_version(system)


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)
    system, what, url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 200.0
    runner: Callable[[], Awaitable[dict]] = lambda: main(system, what, url, n, rate)  # noqa: E731
    print(json.dumps(asyncio.run(runner())))
