"""The whole system on one machine: PostgreSQL, moto's SQS, the relay, the pollers and the scheduler.

``conveyor dev`` runs this; tests run it too, against their own database and queue prefix. Handlers are the same
Lambda handlers that run on AWS, invoked with real SQS-shaped events.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import settings as env
from shared.database import Database, connect
from shared.local.aws import LocalAws, ensure_queues, prepare_local_services
from shared.local.pausewatch import PauseWatch
from shared.local.poller import QueuePoller
from shared.local.recover import republish_lost
from shared.local.scheduler import LocalScheduler
from shared.names import queue_label_from_resource
from shared.operations.local_server import DEFAULT_PORT as DEFAULT_API_PORT
from shared.operations.local_server import LocalApiServer
from shared.operations.scopes import Scope
from shared.migrate import migrate, sync_registry
from shared.outbox.relay import Relay, RelayStats
from shared.queues import QueueDirectory
from shared.registry import JobSpec, Registry
from shared.runtime.dispatch import load_handler
from shared.runtime.handler import JobHandler, RunReport
from shared.scheduled.fire import FireOutcome, FireResult, fire_schedule, latest_fire
from shared.settings import Settings

Printer = Callable[[str], None]


class AlreadyRunning(RuntimeError):
    """Another local runtime owns this state file (a second ``conveyor dev`` in the same folder)."""


@dataclass
class LocalConfig:
    stage: str = "dev"
    database_url: str | None = None
    data_dir: Path = Path(".conveyor")
    max_queue_depth: int = 100
    workers_per_queue: int = 2
    # The relay polls ~1 ms after a cycle that found work, doubling up to this while idle (shared.outbox.relay).
    relay_idle_interval: float = 0.05
    # How long one reading of a queue's depth (GetQueueAttributes) stands for backpressure; what the relay sends
    # meanwhile is added to it, so a 1 ms poll does not ask moto before every cycle.
    queue_depth_ttl: float = 0.2
    poll_wait_seconds: int = 1
    scheduler: bool = True
    state_file: Path | None = None
    handlers: Mapping[str, JobHandler] = field(default_factory=dict)
    # The scheduler's clock (aware datetimes); tests pass a fast one to see schedules fire without waiting.
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # The operations API and dashboard on 127.0.0.1 (0: any free port; None: not started). Without tokens every
    # local caller has every scope; with them, a request needs `Authorization: Bearer <token>`.
    api_port: int | None = DEFAULT_API_PORT
    api_tokens: Mapping[str, frozenset[Scope]] | None = None


class LocalRuntime:
    def __init__(self, registry: Registry, config: LocalConfig | None = None, *, out: Printer = print) -> None:
        self.registry = registry
        self.config = config or LocalConfig()
        self.out = out
        self.stop_event = threading.Event()
        self.postgres: Any = None
        self.aws: LocalAws | None = None
        self.database_url: str | None = None
        self.sqs: Any = None
        self.handlers: dict[str, JobHandler] = {}
        self.threads: list[threading.Thread] = []
        self.pollers: list[QueuePoller] = []
        self.relay: Relay | None = None
        self.urls: dict[str, tuple[str, str]] = {}
        self.reports: list[RunReport] = []
        self._reports_lock = threading.Lock()
        self._ledger: Database | None = None
        self.api: LocalApiServer | None = None
        self.pauses: PauseWatch | None = None
        self.recorder: Any = None  # shared.integrations.recorder.Recorder, once started
        self._state_lock: Any = None  # the open, locked file that makes the state file ours
        # Per queue label: (when read, depth read, sent since): the backpressure check's last reading of moto.
        self._depths: dict[str, tuple[float, int, int]] = {}
        self._depths_lock = threading.Lock()


    # -- start-up ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        # Before anything else: a second runtime in the same folder must fail without touching the first's
        # database, queues or state file.
        self._claim_state_file()
        try:
            self._check_api_port()
            self._start_database()
            self._start_aws()
            self._start_recorder()
            if self.aws is not None:
                self._republish_lost()
            self._start_workers()
        except BaseException:
            self.stop()
            raise

    def _claim_state_file(self) -> None:
        """Lock ``<state file>.lock`` for as long as we run. The kernel drops the lock when we exit, however we exit,
        so a stale state file left by a killed runtime never blocks the next one, and a live one always does."""
        if self.config.state_file is None:
            return
        path = self.config.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 - held open until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "unknown"
            lock.close()
            raise AlreadyRunning(self._describe_owner(path, owner)) from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        self._state_lock = lock

    @staticmethod
    def _describe_owner(path: Path, pid: str) -> str:
        database = "still starting"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads(path.read_text())
            pid, database = str(state["pid"]), f"database {redact(state['database_url'])}"
        return (
            f"`conveyor dev` is already running in this folder (pid {pid}, {database}); stop it first, "
            "or start this one in another folder"
        )

    def _start_database(self) -> None:
        url = self.config.database_url
        if url:
            self.out(f"database   {redact(url)} (from configuration)")
        else:
            from shared.local.postgres import EmbeddedPostgres

            self.postgres = EmbeddedPostgres(self.config.data_dir / "pgdata", log=lambda m: self.out(f"postgres   {m}"))
            url = self.postgres.start()
            self.out(f"database   {url} (embedded, data in {self.postgres.data_dir})")
        self.database_url = url
        os.environ[env.DATABASE_URL] = url
        os.environ[env.STAGE] = self.config.stage
        with connect(Settings(database_url=url)) as conn:
            result = migrate(conn)
            warnings = sync_registry(conn, self.registry)
        applied = ", ".join(f"{m.component}/{m.version:04d}_{m.name}" for m in result.applied) or "none pending"
        self.out(f"migrations {applied}")
        for warning in warnings:
            self.out(f"WARNING    {warning}")

    def _start_aws(self) -> None:
        import boto3

        if not os.environ.get("AWS_ENDPOINT_URL"):
            self.aws = LocalAws()
            endpoint = self.aws.start()
            self.out(f"aws        moto server at {endpoint}")
        else:
            self.out(f"aws        {os.environ['AWS_ENDPOINT_URL']} (AWS_ENDPOINT_URL)")
        self.sqs = boto3.client("sqs")
        self.urls = ensure_queues(self.sqs, self.registry, stage=self.config.stage)
        prepare_local_services(stage=self.config.stage)
        for label, (url, _) in self.urls.items():
            self.out(f"queue      {label:<16} {url}")

    def _start_recorder(self) -> None:
        """Integrations without a configured URL reach the built-in recorder, which answers and logs each request
        instead of sending it anywhere (shared.integrations.recorder)."""
        from shared.integrations.recorder import Recorder

        self.recorder = Recorder(self.out)
        names = self.recorder.point_unconfigured()
        if names:
            self.out(
                f"integration {', '.join(names)}: no CONVEYOR_<NAME>_URL, so the local recorder at {self.recorder.url} "
                "answers them (requests are logged, not sent)"
            )

    def _republish_lost(self) -> None:
        """Our own moto starts empty: the jobs whose messages were on the last one go back to the outbox before the
        relay starts. Not with an SQS from AWS_ENDPOINT_URL, which may still hold them."""
        with connect(Settings(database_url=self.database_url)) as conn:
            recovered = republish_lost(conn)
        if recovered:
            self.out(f"recovered  {recovered} job(s) the restarted local SQS had lost: back in the outbox")

    def _start_workers(self) -> None:
        settings = Settings(stage=self.config.stage, database_url=self.database_url)
        directory = QueueDirectory(self.sqs, settings)
        # One reader of conveyor.paused_queues for every poller and the scheduler (at most a read a second).
        self.pauses = PauseWatch(settings)
        for job in self.registry:
            handler = self.config.handlers.get(job.name) or load_handler(job)
            handler.bind(sqs=self.sqs, directory=directory, database=Database(settings))
            if self.on_report not in handler.observers:
                handler.observers.append(self.on_report)
            self.handlers[job.name] = handler

        self.relay = Relay(
            lambda: connect(settings),
            self.sqs,
            directory,
            admit=self._admit,
            known_queues=self.urls,
        )
        self._spawn(threading.Thread(
            target=self.relay.run,
            args=(self.stop_event,),
            kwargs={"idle_interval": self.config.relay_idle_interval, "on_cycle": self._on_relay},
            name="relay",
            daemon=True,
        ))
        for label, (url, _) in self.urls.items():
            queue = self.registry.queue_settings(label)
            arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            for worker in range(min(queue.concurrency, self.config.workers_per_queue)):
                poller = QueuePoller(
                    sqs=self.sqs,
                    queue=queue,
                    url=url,
                    queue_arn=arn,
                    handlers={name: self.handlers[name] for name in queue.jobs},
                    stop=self.stop_event,
                    stage=self.config.stage,
                    wait_seconds=self.config.poll_wait_seconds,
                    name=f"poller-{label}-{worker}",
                    paused=self.pauses.paused,
                )
                self.pollers.append(poller)
                self._spawn(poller)
        if self.config.scheduler and self.registry.scheduled():
            scheduler = LocalScheduler(
                self.registry, self._fire, self.stop_event, now=self.config.clock, last_fire=self._last_fire,
                paused=self.pauses.paused,
            )
            scheduler.prime()
            started = self.config.clock()
            for job in self.registry.scheduled():
                upcoming = scheduler.next_fire.get(job.name)
                when = upcoming.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if upcoming else "never"
                missed = f" (missed while stopped; missed={job.missed.value} applies now)" if upcoming and upcoming <= started else ""
                self.out(f"schedule   {job.name:<24} {job.schedule} {job.timezone}, next run {when}{missed}")
            self._spawn(scheduler)
        self._start_api(settings)
        if self.config.state_file:
            self.config.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.config.state_file.write_text(json.dumps({
                "pid": os.getpid(),
                "database_url": self.database_url,
                "aws_endpoint_url": os.environ.get("AWS_ENDPOINT_URL"),
                "stage": self.config.stage,
                "api_url": self.api.url if self.api else None,
            }))

    def _check_api_port(self) -> None:
        """A port another program holds is found before the database and the queues are set up for nothing; the
        server binds it for real once the workers run (a race in between still fails there, as clearly)."""
        port = self.config.api_port
        if not port:
            return
        import socket

        from shared.operations.local_server import ApiPortInUse

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no owner
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise ApiPortInUse("127.0.0.1", port) from None

    def _start_api(self, settings: Settings) -> None:
        """The operations API and the dashboard, served by the ops Lambda's own resolver over the same service the
        CLI uses (local mode: pauses are read by the pollers, redrive copies messages)."""
        if self.config.api_port is None:
            return
        from shared.operations.api import build_app

        registry = self.registry

        def operations() -> Any:  # built on the first API request: the page's files need no database
            from shared.operations.service import build_operations

            return build_operations(registry, settings, local=True)

        self.api = LocalApiServer(build_app(operations), port=self.config.api_port, tokens=self.config.api_tokens)
        self.api.start()
        self.out(f"api        {self.api.url}  (dashboard; API under the same address)")
        if self.config.api_tokens:
            self.out(f"api        {len(self.config.api_tokens)} token(s): requests need Authorization: Bearer <token>")

    def _spawn(self, thread: threading.Thread) -> None:
        self.threads.append(thread)
        thread.start()

    # -- running -------------------------------------------------------------------------------------------------

    def _admit(self, queue: str) -> bool:
        """Backpressure: publish to a queue only while it holds fewer than ``max_queue_depth`` visible messages
        (moto rescans a queue on every receive, so a deep local queue gets slow; the outbox holds the rest).

        The depth is read at most every ``queue_depth_ttl`` seconds (the relay polls every millisecond while busy);
        between readings, what the relay published to the queue counts as if it were still there, so the check
        errs towards holding back: messages received meanwhile only show at the next reading."""
        now = time.monotonic()
        with self._depths_lock:
            reading = self._depths.get(queue)
        if reading is None or now - reading[0] >= self.config.queue_depth_ttl:
            url = self.urls[queue][0]
            answer = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            reading = (now, int(answer["Attributes"]["ApproximateNumberOfMessages"]), 0)
            with self._depths_lock:
                self._depths[queue] = reading
        _, depth, sent = reading
        return depth + sent < self.config.max_queue_depth

    def _count_sent(self, stats: RelayStats) -> None:
        with self._depths_lock:
            for queue, count in stats.published_by_queue.items():
                if queue in self._depths:
                    read_at, depth, sent = self._depths[queue]
                    self._depths[queue] = (read_at, depth, sent + count)

    def _fire(self, job: JobSpec, fire_time: datetime, now: datetime) -> FireResult:
        with connect(Settings(database_url=self.database_url)) as conn:
            result = fire_schedule(conn, job, fire_time, now=now, registry=self.registry)
        period = result.period.isoformat()
        if result.outcome is FireOutcome.ENQUEUED:
            late = f" (late fire for {fire_time.isoformat()})" if result.period != fire_time else ""
            self.out(f"schedule   {job.name} fired for {period} -> job {result.job_id}{late}")
        elif result.outcome is FireOutcome.SKIPPED:
            self.out(f"schedule   {job.name} skipped {period}: {result.reason}")
        return result

    def _last_fire(self, job: JobSpec) -> datetime | None:
        with connect(Settings(database_url=self.database_url)) as conn:
            return latest_fire(conn, job.name)

    def _on_relay(self, stats: RelayStats) -> None:
        self._count_sent(stats)
        line = f"relay      published {stats.published}"
        if stats.failed - stats.dead:
            line += f", {stats.failed - stats.dead} refused by SQS (kept, retrying): {'; '.join(stats.errors[:2])}"
        if stats.dead:
            line += f", {stats.dead} can never be sent (moved to conveyor.outbox_dead; see `conveyor outbox --failed`)"
        self.out(line)

    def on_report(self, report: RunReport) -> None:
        """One console line per run, read from the run ledger (which the handler wrote before telling us), so the
        console says what `conveyor show` will say; from the report itself when the ledger has no row for it."""
        with self._reports_lock:
            self.reports.append(report)
        status, attempt = report.outcome.value, report.attempt
        if report.outcome.value in ("succeeded", "retrying", "dead"):
            record = self._ledger_record(report.job_id)
            if record is not None:
                status, attempt = str(record.status), record.attempt
        line = (
            f"run        {report.job_name:<22} {report.job_id}  attempt {attempt}  "
            f"{status:<9} {report.duration_ms:7.1f} ms"
        )
        if report.queue:
            line += f"  on {queue_label_from_resource(report.queue, stage=self.config.stage) or report.queue}"
        if report.latency_ms is not None and report.attempt == 1:
            line += f"  (done {report.latency_ms / 1000:.2f}s after enqueue)"
        if report.retry_in is not None:
            line += f"  retry in {report.retry_in}s"
        if report.error:
            line += f"  {report.error[:200]}"
        self.out(line)

    def _ledger_record(self, job_id: str) -> Any:
        from shared.ledger.read import get_job

        try:
            with self._reports_lock:  # pollers report from several threads; one Database (a connection per thread)
                if self._ledger is None:
                    self._ledger = Database(Settings(database_url=self.database_url))
            return get_job(self._ledger.connection(), job_id)
        except Exception:  # noqa: BLE001 - the console line falls back to the report (a foreign job id, a DB blip)
            return None

    def wait(self) -> None:
        while not self.stop_event.is_set():
            self.stop_event.wait(0.5)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    # -- shutdown ------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking work, let in-flight batches finish, then stop the servers. Committed jobs stay in the outbox
        or on their queue, so nothing is lost by stopping at any point."""
        self.stop_event.set()
        if self.api is not None:
            self.api.stop()
            self.api = None
        for thread in self.threads:
            thread.join(timeout=60)
        self.threads.clear()
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        for handler in self.handlers.values():
            if self.on_report in handler.observers:
                handler.observers.remove(self.on_report)
            handler.database.close()
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
        if self.pauses is not None:
            self.pauses.close()
            self.pauses = None
        if self._state_lock is not None:
            # Only the runtime holding the lock wrote the state file; a refused second one never reaches here.
            self.config.state_file.unlink(missing_ok=True)  # type: ignore[union-attr]
            self._state_lock.close()
            self._state_lock = None
        if self.recorder is not None:
            self.recorder.stop()
            self.recorder = None
        if self.aws is not None:
            self.aws.stop()
            os.environ.pop("AWS_ENDPOINT_URL", None)
            self.aws = None
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None


def redact(url: str) -> str:
    """A URL with its password hidden, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
