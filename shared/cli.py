"""``conveyor``: run the system locally, migrate, enqueue, invoke a handler on a sample event, read the ledger.

Every user error ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from shared import settings as env
from shared import timeparse
from shared.timeparse import TimeParseError

STATE_FILE = Path(".conveyor") / "dev.json"


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` from a :mod:`shared.timeparse` parser: its message becomes argparse's, word for word."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except TimeParseError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


parse_duration = _argument_type(timeparse.parse_duration)
parse_datetime = _argument_type(timeparse.parse_datetime)
parse_when = _argument_type(timeparse.parse_when)


def _status(text: str):
    from shared.ledger.status import parse_status

    try:
        return parse_status(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="conveyor", description="Background jobs on Postgres + SQS + Lambda.")
    parser.add_argument("--registry", help=f"registry as module:attribute (default: ${env.REGISTRY} or {env.DEFAULT_REGISTRY})")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    dev = sub.add_parser("dev", help="run the whole system locally (PostgreSQL, SQS, relay, handlers, schedules)")
    dev.add_argument("--stage", default="dev", help="resource name prefix stage (default: dev)")
    dev.add_argument("--data-dir", type=Path, default=Path(".conveyor"), help="where the embedded PostgreSQL keeps its data")
    dev.add_argument("--database-url", help="use this PostgreSQL instead of the embedded one (default: $DATABASE_URL)")
    dev.add_argument("--no-scheduler", action="store_true", help="do not fire schedules")
    dev.add_argument("--verbose", action="store_true", help="show the handlers' JSON logs")
    dev.add_argument(
        "--api-port", type=_port, default=8710,
        help="the operations API and dashboard on 127.0.0.1 (default 8710; 0 = any free port)",
    )  # fmt: skip
    dev.add_argument(
        "--token", action="append", metavar="TOKEN=SCOPES",
        help=f"an API bearer token and its scopes, e.g. s3cret=jobs:read,jobs:retry (repeatable; default: "
        f"${env.API_TOKENS}; with none, every local caller has every scope)",
    )  # fmt: skip

    migrate = sub.add_parser("migrate", help="apply pending migrations and sync the registry to the database")
    migrate.add_argument("--database-url")

    seed = sub.add_parser("seed-demo", help="fill the demo domain with realistic data (and a few messages) so the jobs have work")
    seed.add_argument("--reset", action="store_true", help="empty every demo table first (otherwise a seeded database is refused)")
    seed.add_argument("--scale", type=_positive, default=1, help="multiply the commerce volume: users, orders, vouchers, logs (default 1)")
    seed.add_argument("--database-url")

    enqueue = sub.add_parser("enqueue", help="enqueue a job through the outbox")
    enqueue.add_argument("job", help="job name, e.g. email.send")
    enqueue.add_argument(
        "--json", dest="payload", default="{}",
        help="the payload as a JSON object; @path reads it from a file, - from stdin (for payloads over 128 KiB)",
    )  # fmt: skip
    when = enqueue.add_mutually_exclusive_group()
    when.add_argument("--delay", type=parse_duration, help="run after this long, e.g. 30s, 10m, 2d")
    when.add_argument("--run-at", type=parse_datetime, help="run at this time (ISO 8601 with offset)")
    enqueue.add_argument("--dedup-key", help="at most one pending job per (job, key)")
    enqueue.add_argument(
        "--dedup", choices=("keep", "replace"), default="keep",
        help="when a pending job holds the key: keep it (default) or replace its payload and run time",
    )  # fmt: skip
    enqueue.add_argument(
        "--dedup-active", action="store_true",
        help="a published job with the key that is queued, running or retrying holds it too",
    )  # fmt: skip
    enqueue.add_argument("--queue", help="one of the job's queues, overriding its route")
    enqueue.add_argument("--database-url")

    invoke = sub.add_parser("invoke", help="run one job's handler on a sample SQS event (like `sam local invoke`)")
    invoke.add_argument("job", help="job name, e.g. email.send")
    invoke.add_argument("--event", type=Path, required=True, help="an SQS event JSON file, e.g. events/email.send.json")

    jobs = sub.add_parser("jobs", help="list the registry's jobs, queues and schedules")
    jobs.add_argument("--markdown", action="store_true", help="as the README's table of jobs (a test keeps the two equal)")

    cost = sub.add_parser("cost", help="AWS cost per million jobs and per month, from the registry's settings (docs/COST.md)")
    cost.add_argument("--duration-ms", type=float, default=50.0, help="handler time per job (default 50)")
    cost.add_argument("--log-bytes", type=int, default=382, help="log bytes per attempt (default 382, bench/log_bytes.py)")
    cost.add_argument("--metrics-bytes", type=int, default=373, help="metrics log bytes per invocation (default 373, bench/log_bytes.py)")
    cost.add_argument("--failure-rate", type=float, default=0.0, help="share of attempts that fail and are retried (default 0)")
    cost.add_argument("--batch-fill", type=float, default=1.0, help="how full batches are, 0-1 of batch_size (default 1)")
    cost.add_argument("--message-bytes", type=int, default=1024, help="message size for SQS's 64 KB chunks (default 1024)")
    cost.add_argument("--relay-mode", choices=("resident", "on-demand"), default="resident")
    cost.add_argument("--mix", help="weights, e.g. email.send=5,sms.send=1 (default: every unscheduled job alike)")
    cost.add_argument("--json", action="store_true", help="print JSON instead of the table")

    outbox = sub.add_parser("outbox", help="show jobs waiting to be published, and those the relay gave up on")
    show = outbox.add_mutually_exclusive_group()
    show.add_argument("--failed", action="store_true", help="list rows the relay gave up on (conveyor.outbox_dead)")
    show.add_argument("--requeue", nargs="+", metavar="ID", type=_job_id, help="put these dead rows back, due now")
    show.add_argument("--requeue-all", action="store_true", help="put every dead row back, due now")
    outbox.add_argument("--limit", type=_positive, default=50, help="rows to list with --failed (default 50)")
    outbox.add_argument("--database-url")

    runs = sub.add_parser("runs", help="list jobs from the run ledger, newest first")
    runs.add_argument("--job", help="only this job, e.g. email.send")
    runs.add_argument("--status", type=_status, help="only this status (succeeded, dead, running, abandoned, ...)")
    runs.add_argument("--since", type=parse_when, help="enqueued at or after: a duration ago (1h, 2d) or an ISO 8601 time")
    runs.add_argument("--until", type=parse_when, help="enqueued before: a duration ago or an ISO 8601 time")
    runs.add_argument("--q", dest="q", metavar="TEXT", help="a job id, or text in the dedup key, last error or reason")
    runs.add_argument("--parent", type=_job_id, metavar="ID", help="only the children of this flow parent")
    page = runs.add_mutually_exclusive_group()
    page.add_argument("--before", type=_job_id, metavar="ID", help="the next page: jobs older than this one")
    page.add_argument("--cursor", metavar="CURSOR", help="the next page: the cursor the previous page printed")
    runs.add_argument("--limit", type=_positive, default=50, help="rows to list (default 50, at most 1000)")
    _ops_arguments(runs)

    show_job = sub.add_parser("show", help="everything the ledger knows about one job")
    show_job.add_argument("id", type=_job_id, help="the job id")
    _ops_arguments(show_job)

    _ops_arguments(sub.add_parser("queues", help="queue depths, DLQs, per-job counts and the relay's lag"))
    _ops_arguments(sub.add_parser("health", help="database, relay lag, dead-letter queues: exit 1 when unhealthy"))

    retry = sub.add_parser("retry", help="run a failed or dead job again (same id, a fresh attempt count)")
    retry.add_argument("id", type=_job_id, help="the job id")
    _ops_arguments(retry)

    cancel = sub.add_parser("cancel", help="cancel a job that has not started")
    cancel.add_argument("id", type=_job_id, help="the job id")
    cancel.add_argument("--reason", help="kept in the ledger and the audit log")
    _ops_arguments(cancel)

    trigger = sub.add_parser("trigger", help="enqueue a job now (a scheduled job's run out of schedule, say)")
    trigger.add_argument("job", help="job name, e.g. reservations.cleanup")
    trigger.add_argument("--json", dest="payload", default=None, help="the payload as a JSON object; @path or - as for enqueue")
    _ops_arguments(trigger, json_flag="--json-output")

    redrive = sub.add_parser("redrive", help="move a queue's dead-letter messages back to it (all, or one job's)")
    redrive.add_argument("queue", help="the registry queue, e.g. email-high")
    redrive.add_argument("--job", help="only this job's messages (the others stay in the dead-letter queue)")
    _ops_arguments(redrive)

    for verb, what in (("pause", "stop"), ("resume", "restart")):
        switch = sub.add_parser(verb, help=f"{what} a queue's consumers and its jobs' schedules (messages stay queued)")
        switch.add_argument("queue", help="the registry queue, e.g. email-default")
        _ops_arguments(switch)
    return parser


def _ops_arguments(parser: argparse.ArgumentParser, json_flag: str = "--json") -> None:
    """The flags every operations verb takes: where the system is, and machine-readable output."""
    parser.add_argument(json_flag, dest="json", action="store_true", help="print the answer as JSON (as the HTTP API does)")
    parser.add_argument("--database-url")


def _job_id(text: str):
    import uuid

    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a job id (a UUID)") from None


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 = any free port)")
    return int(text)


def _api_tokens(given: list[str] | None) -> dict[str, Any] | None:
    """`conveyor dev`'s API tokens: each --token, else $CONVEYOR_API_TOKENS; None: no tokens (all scopes)."""
    from shared.operations.local_server import LocalApiError, parse_tokens

    try:
        if given:
            tokens: dict[str, Any] = {}
            for number, value in enumerate(given, start=1):
                source = "--token" if len(given) == 1 else f"--token #{number}"
                for token, scopes in parse_tokens(value, source=source).items():
                    if token in tokens:
                        raise CliError("--token: the same token is given twice")
                    tokens[token] = scopes
            return tokens
        text = os.environ.get(env.API_TOKENS, "").strip()
        return parse_tokens(text, source=env.API_TOKENS) if text else None
    except LocalApiError as exc:
        raise CliError(str(exc)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.registry:
        os.environ[env.REGISTRY] = args.registry
    try:
        return COMMANDS[args.command](args)
    except CliError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `conveyor runs | head`: the reader has what it wanted (Python's documented recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the known error families get one line; anything else is a bug and keeps its traceback
        message = _user_error_message(exc)
        if message is None:
            raise
        return _fail(message)


def _fail(message: str) -> int:
    # One line whatever the message: the driver's own messages span several (a hint on a second line).
    one_line = "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())
    print(f"conveyor: error: {one_line}", file=sys.stderr)
    return 2


def _user_error_message(exc: Exception) -> str | None:
    """What to tell the user about ``exc``, or None if it is a bug (then the traceback is the useful output)."""
    from shared.registry import RegistryError
    from shared.settings import SettingsError

    if isinstance(exc, (RegistryError, SettingsError, ValueError, FileNotFoundError, PermissionError)):
        return str(exc)
    try:
        import psycopg
        from psycopg import errors
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, (errors.UndefinedTable, errors.UndefinedFunction, errors.UndefinedColumn, errors.InvalidSchemaName)):
        # A database never migrated, or migrated by older code.
        return f"{_first_line(exc)}: this database lacks Conveyor's schema; run `conveyor migrate` on it first"
    if isinstance(exc, (psycopg.OperationalError, psycopg.DataError)):
        return str(exc)
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _registry():
    from shared.registry import default_registry

    return default_registry()


def _database_url(explicit: str | None) -> str:
    """The database to use: --database-url, then the environment, then a `conveyor dev` running here."""
    url = _configured_database_url(explicit)
    if url:
        return url
    state = _dev_state()
    if state:
        return state["database_url"]
    raise CliError("no database: pass --database-url, set DATABASE_URL, or start `conveyor dev` in this folder (or one above it)")


def _configured_database_url(explicit: str | None) -> str | None:
    """--database-url, else the environment's, checked; None if neither is set."""
    for url, source in (
        (explicit, "--database-url"),
        (os.environ.get(env.DATABASE_URL), env.DATABASE_URL),
        (os.environ.get(env.DATABASE_URL_FALLBACK), env.DATABASE_URL_FALLBACK),
    ):
        if url:
            return _checked_database_url(url, source)
    return None


def _checked_database_url(url: str, source: str) -> str:
    """Refuse what libpq cannot parse before connecting, without echoing it (it may hold a password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    scheme = url.split("://", 1)[0] if "://" in url else None
    if scheme in (None, "postgresql", "postgres"):
        try:
            conninfo_to_dict(url)
            return url
        except ProgrammingError:
            pass
    kind = f" (a {scheme}:// one)" if scheme else ""
    raise CliError(f"{source} is not a PostgreSQL database URL{kind}: use postgresql://user:password@host:port/dbname")


def _dev_state() -> dict[str, Any] | None:
    """The state of the `conveyor dev` running in this folder or the nearest folder above it that has one (as git
    finds its repository), so the commands work from anywhere in the project."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        path = folder / STATE_FILE
        if not path.exists():
            continue
        try:
            state = json.loads(path.read_text())
            os.kill(int(state["pid"]), 0)
        except (ValueError, KeyError, OSError):
            continue  # a state file a killed runtime left: keep looking above
        return state
    return None


def _connect(url: str):
    from shared.database import connect
    from shared.settings import Settings

    return connect(Settings(database_url=url))


# -- commands ---------------------------------------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    from shared.local.postgres import PostgresNotAvailable
    from shared.local.runtime import AlreadyRunning, LocalConfig, LocalRuntime
    from shared.operations.local_server import ApiPortInUse

    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    if not args.verbose:
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    registry = _registry()
    config = LocalConfig(
        stage=args.stage,
        database_url=_configured_database_url(args.database_url),
        data_dir=args.data_dir,
        scheduler=not args.no_scheduler,
        state_file=STATE_FILE,
        api_port=args.api_port,
        api_tokens=_api_tokens(args.token),
    )
    runtime = LocalRuntime(registry, config, out=lambda line: print(line, flush=True))

    def _stop(signum: int, _frame: Any) -> None:
        print("\nstopping: letting running jobs finish …", flush=True)
        runtime.stop_event.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        runtime.start()
    except AlreadyRunning as exc:
        raise CliError(str(exc)) from None
    except ApiPortInUse as exc:
        raise CliError(f"port {exc.port} is in use, so the local API cannot start: pass --api-port with another port (0 = any free port)") from None
    except PostgresNotAvailable as exc:
        # The first line says why; the rest is the server log's tail, which stays in its file.
        raise CliError(_first_line(exc) + (f" (server log: {exc.log_file})" if exc.log_file else "")) from None
    print(
        f"ready      {len(registry)} jobs. Try: conveyor enqueue email.send --json "
        "'{\"to\": \"ada@example.com\", \"template\": \"welcome\", \"subject\": \"Hi\", \"variables\": {\"name\": \"Ada\"}}'",
        flush=True,
    )
    try:
        runtime.wait()
    finally:
        runtime.stop()
        print("stopped", flush=True)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from shared.migrate import migrate, sync_registry

    registry = _registry()
    with _connect(_database_url(args.database_url)) as conn:
        result = migrate(conn)
        warnings = sync_registry(conn, registry)
    for warning in warnings:
        print(f"conveyor: WARNING: {warning}", file=sys.stderr)
    for migration in result.applied:
        print(f"applied {migration.component}/{migration.version:04d}_{migration.name}.sql")
    print(f"schema up to date ({', '.join(f'{k} {v}' for k, v in result.versions.items())}); {len(registry)} jobs synced")
    return 0


def cmd_seed_demo(args: argparse.Namespace) -> int:
    from shared.demo.seed import SeedRefused, seed_demo

    registry = _registry()
    url = _database_url(args.database_url)
    state = _dev_state()
    running = state is not None and state.get("database_url") == url
    try:
        with _connect(url) as conn:
            summary = seed_demo(conn, scale=args.scale, reset=args.reset, registry=registry)
    except SeedRefused as exc:
        raise CliError(str(exc)) from None
    for line in summary.lines():
        print(line)
    if running:
        print(f"watch them: {state.get('api_url') or 'conveyor runs'}")  # type: ignore[union-attr]
    else:
        print("next: start `conveyor dev` (or `make dev`) on this database to run the enqueued jobs and the triggers above")
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    from shared.outbox import enqueue, validate_payload

    registry = _registry()
    job = registry[args.job]
    payload = _json_object_argument(args.payload)
    validate_payload(job, payload)  # before connecting: a bad payload is the user's error, whatever the database
    with _connect(_database_url(args.database_url)) as conn:
        with conn.transaction():
            job_id = enqueue(
                conn, job, payload, delay=args.delay, run_at=args.run_at, dedup_key=args.dedup_key,
                dedup=args.dedup, dedup_active=args.dedup_active, queue=args.queue, registry=registry,
            )
    print(job_id)
    return 0


def _json_object_argument(value: str) -> dict[str, Any]:
    """``--json``'s payload (inline, ``@file`` or ``-``) as a JSON object, or the CLI's one-line error."""
    text, source = _json_argument(value)
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{source} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(payload, dict):
        raise CliError(f"{source} must be a JSON object, got {_json_type(payload)}")
    return payload


def _json_argument(value: str) -> tuple[str, str]:
    """--json's text, and how errors name it. Linux caps one argument at 128 KiB, below SQS's 256 KiB, so larger
    payloads come from a file (``@path``) or stdin (``-``); neither can be mistaken for inline JSON."""
    if value == "-":
        return sys.stdin.read(), "--json - (stdin)"
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8"), f"--json {value}"
        except OSError as exc:
            raise CliError(f"--json {value}: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise CliError(f"--json {value}: not UTF-8 text (byte {exc.start})") from None
    return value, "--json"


def cmd_invoke(args: argparse.Namespace) -> int:
    from shared.local.runtime import load_handler

    registry = _registry()
    job = registry[args.job]
    try:
        event = json.loads(args.event.read_text())
    except json.JSONDecodeError as exc:
        raise CliError(f"{args.event}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(event, dict) or not isinstance(event.get("Records"), list) or not event["Records"]:
        raise CliError(f"{args.event}: not an SQS event (expected an object with a non-empty 'Records' list)")
    for index, record in enumerate(event["Records"]):
        problem = _sqs_record_problem(record)
        if problem:
            raise CliError(f"{args.event}: record {index} is not an SQS record: {problem}")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    if not os.environ.get("AWS_ENDPOINT_URL"):
        os.environ.pop("AWS_ENDPOINT_URL", None)
    state = _dev_state()
    if state and not os.environ.get("AWS_ENDPOINT_URL"):
        os.environ["AWS_ENDPOINT_URL"] = state["aws_endpoint_url"]
        os.environ.setdefault(env.DATABASE_URL, state["database_url"])
        os.environ.setdefault(env.STAGE, state["stage"])
    handler = load_handler(job)
    handler.observers.append(lambda r: print(f"{r.job_name} {r.job_id} attempt {r.attempt}: {r.outcome.value} in {r.duration_ms:.1f} ms" + (f" ({r.error})" if r.error else ""), file=sys.stderr))
    if os.environ.get("AWS_ENDPOINT_URL"):
        response = handler(event, None)
    else:
        response = _invoke_isolated(registry, handler, event)
    print(json.dumps(response, indent=2))
    return 1 if response.get("batchItemFailures") else 0


# What the handler reads from every record; the rest (attributes, messageAttributes, eventSourceARN) is optional.
_SQS_RECORD_TEXT_FIELDS = ("messageId", "receiptHandle", "body")


def _sqs_record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return f"expected an object, got {_json_type(record)}"
    missing = [name for name in _SQS_RECORD_TEXT_FIELDS if name not in record]
    if missing:
        return f"it lacks {', '.join(repr(name) for name in missing)}"
    for name in _SQS_RECORD_TEXT_FIELDS:
        if not isinstance(record[name], str):
            hint = " (the payload as JSON text)" if name == "body" else ""
            return f"{name!r} must be a string{hint}, got {_json_type(record[name])}"
    for name in ("attributes", "messageAttributes"):
        if not isinstance(record.get(name) or {}, dict):
            return f"{name!r} must be an object, got {_json_type(record[name])}"
    for name, value in (record.get("messageAttributes") or {}).items():
        if not isinstance(value, dict):
            return f"message attribute {name!r} must be an object like {{\"stringValue\": …, \"dataType\": \"String\"}}"
    return None


def _json_type(value: Any) -> str:
    """A parsed JSON value's type as JSON names it."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _invoke_isolated(registry: Any, handler: Any, event: dict[str, Any]) -> dict[str, Any]:
    """No `conveyor dev` running: give the handler an in-memory moto SQS so retries and DLQ moves work."""
    import boto3
    from moto import mock_aws

    from shared.local.aws import LOCAL_CREDENTIALS, ensure_queues, prepare_local_services
    from shared.queues import QueueDirectory
    from shared.settings import Settings

    for key, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(key, value)
    with mock_aws():
        sqs = boto3.client("sqs")
        settings = Settings.from_env()
        ensure_queues(sqs, registry, stage=settings.stage)
        prepare_local_services(stage=settings.stage)
        handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings))
        return handler(event, None)


def cmd_cost(args: argparse.Namespace) -> int:
    from shared import cost

    assumptions = cost.Assumptions(
        duration_ms=args.duration_ms,
        log_bytes=args.log_bytes,
        metrics_bytes=args.metrics_bytes,
        failure_rate=args.failure_rate,
        batch_fill=args.batch_fill,
        message_bytes=args.message_bytes,
        relay_mode=args.relay_mode,
    )
    mix = cost.parse_mix(args.mix) if args.mix is not None else None
    estimate = cost.estimate(_registry(), assumptions, mix)
    print(json.dumps(cost.as_json(estimate), indent=2) if args.json else cost.render(estimate))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    registry = _registry()
    if args.markdown:
        print(jobs_markdown(registry))
        return 0
    for job in registry:
        schedule = f"  {job.schedule} {job.timezone}" if job.schedule else ""
        print(f"{job.name:<24} queues={','.join(job.all_queues):<28} attempts={job.retry.max_attempts} timeout={job.timeout}s{schedule}")
    return 0


def jobs_markdown(registry: Any) -> str:
    """Every job as a row of the README's table: trigger, queue, retries, timeout and what it does."""
    rows = [
        "| job | trigger | queue | attempts (backoff) | timeout | what it does |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for job in registry:
        trigger = f"`{job.schedule}` {job.timezone}" if job.schedule else "enqueued by code"
        retry = job.retry
        backoff = f"{retry.max_attempts} ({retry.backoff.value} from {retry.base_delay} s, at most {retry.max_delay} s)"
        queues = ", ".join(f"`{q}`" for q in job.all_queues)
        rows.append(f"| `{job.name}` | {trigger} | {queues} | {backoff} | {job.timeout} s | {job.description} |")
    return "\n".join(rows)


def cmd_outbox(args: argparse.Namespace) -> int:
    from shared.outbox.dead import dead_count, list_dead, pending_summary, requeue_dead

    with _connect(_database_url(args.database_url)) as conn:
        if args.requeue or args.requeue_all:
            import psycopg

            ids = None if args.requeue_all else args.requeue
            try:
                moved = requeue_dead(conn, ids)
            except psycopg.errors.UniqueViolation:
                raise CliError(
                    "a job with the same dedup key was enqueued meanwhile; nothing was requeued, run the command again"
                ) from None
            print(f"requeued {moved} job(s)")
            if ids is not None and moved < len(set(ids)):
                raise CliError(
                    f"{len(set(ids)) - moved} of the given ids are not dead outbox rows (or a pending job holds their "
                    "dedup key); see `conveyor outbox --failed`"
                )
            return 0
        if args.failed:
            rows = list_dead(conn, limit=args.limit)
            for row in rows:
                print(
                    f"{row.id}  {row.job_name:<22} {row.queue:<16} attempts={row.publish_attempts} "
                    f"failed={row.failed_at.isoformat(timespec='seconds')} {row.payload_bytes}B  {row.last_error}"
                )
            if not rows:
                print("no dead outbox rows")
            return 0
        groups = pending_summary(conn)
        for g in groups:
            print(
                f"{g.job_name:<22} {g.queue:<16} pending={g.pending} due={g.due} leased={g.leased} "
                f"failing={g.failing} oldest_due={g.oldest_due_seconds:.1f}s"
            )
        if not groups:
            print("outbox empty")
        dead = dead_count(conn)
        if dead:
            print(f"{dead} job(s) could not be published: see `conveyor outbox --failed`")
    return 0


def _operations(args: argparse.Namespace):
    """The operations service for where this command points: the `conveyor dev` running in this folder (its database
    and local AWS), or ``--database-url``/``DATABASE_URL`` with the default AWS credentials (a deployed stage named by
    ``CONVEYOR_STAGE``). The HTTP API builds the same service, so both do exactly the same thing."""
    import dataclasses

    from shared.operations.service import build_operations
    from shared.settings import Settings

    url = _database_url(args.database_url)
    state = None if _configured_database_url(args.database_url) else _dev_state()
    if state is not None:
        if state.get("aws_endpoint_url"):
            from shared.local.aws import LOCAL_CREDENTIALS

            # The local emulator, with the credentials `conveyor dev` gave it: a new terminal has none of its own.
            os.environ["AWS_ENDPOINT_URL"] = state["aws_endpoint_url"]
            for key, value in LOCAL_CREDENTIALS.items():
                os.environ.setdefault(key, value)
        os.environ.setdefault(env.STAGE, state.get("stage") or "dev")
    local = bool(os.environ.get("AWS_ENDPOINT_URL"))
    settings = dataclasses.replace(Settings.from_env(), database_url=url)
    return build_operations(_registry(), settings, local=local)


def _answer(args: argparse.Namespace, model: Any, text: Any) -> None:
    if args.json:
        print(model.model_dump_json(indent=2))
    else:
        print(text(model))


def _ops_call(method: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a service method as the terminal's caller; a refusal becomes the CLI's one-line error."""
    from shared.operations.errors import OperationError
    try:
        return method(_caller(), *args, **kwargs)
    except OperationError as exc:
        raise CliError(exc.message) from None


def _caller():
    from shared.operations.scopes import cli_caller

    return cli_caller(os.environ.get(env.SCOPES))


def cmd_runs(args: argparse.Namespace) -> int:
    from shared.ledger.read import MAX_PAGE
    from shared.operations import text

    if args.limit > MAX_PAGE:
        raise CliError(f"--limit {args.limit} is over {MAX_PAGE}; page with --cursor (printed under a full page)")
    ops = _operations(args)
    cursor = args.cursor
    if args.before is not None:
        try:
            cursor = ops.cursor_of(args.before)
        except LookupError:
            raise CliError(f"--before {args.before}: {_no_such_job(args.before)}") from None
    page = _ops_call(
        ops.runs, job=args.job, status=args.status, since=args.since, until=args.until, q=args.q,
        parent=args.parent, cursor=cursor, limit=args.limit,
    )  # fmt: skip
    if args.json:
        print(page.model_dump_json(indent=2))
        return 0
    if not page.runs:
        print("no runs match")
        return 0
    print(text.runs_text(page.runs))
    if page.next_cursor:
        print(f"(next page: the same command with --cursor {page.next_cursor})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from shared.operations import text

    _answer(args, _ops_call(_operations(args).run, str(args.id)), text.run_text)
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    from shared.operations import text

    ops = _operations(args)
    _answer(args, _ops_call(ops.queues), text.queues_text)
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    from shared.operations import text

    health = _ops_call(_operations(args).health)
    _answer(args, health, text.health_text)
    return 0 if health.healthy else 1


def cmd_retry(args: argparse.Namespace) -> int:
    from shared.operations import text

    _answer(args, _ops_call(_operations(args).retry, str(args.id)), text.action_text)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from shared.operations import text

    _answer(args, _ops_call(_operations(args).cancel, str(args.id), args.reason), text.action_text)
    return 0


def cmd_trigger(args: argparse.Namespace) -> int:
    from shared.operations import text

    payload = None if args.payload is None else _json_object_argument(args.payload)
    _answer(args, _ops_call(_operations(args).trigger, args.job, payload), text.action_text)
    return 0


def cmd_redrive(args: argparse.Namespace) -> int:
    from shared.operations import text

    result = _ops_call(_operations(args).redrive, args.queue, args.job)
    _answer(args, result, text.redrive_text)
    return 0 if result.failed == 0 and result.complete else 1


def cmd_pause(args: argparse.Namespace) -> int:
    return _switch(args, paused=True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _switch(args, paused=False)


def _switch(args: argparse.Namespace, *, paused: bool) -> int:
    from shared.operations import text

    ops = _operations(args)
    _answer(args, _ops_call(ops.pause if paused else ops.resume, args.queue), text.switch_text)
    return 0


def _no_such_job(job_id: Any) -> str:
    from shared.operations.service import no_such_job

    return no_such_job(job_id)


COMMANDS = {
    "runs": cmd_runs, "show": cmd_show, "queues": cmd_queues, "health": cmd_health, "retry": cmd_retry,
    "cancel": cmd_cancel, "trigger": cmd_trigger, "redrive": cmd_redrive, "pause": cmd_pause, "resume": cmd_resume,
    "outbox": cmd_outbox, "dev": cmd_dev, "migrate": cmd_migrate, "seed-demo": cmd_seed_demo, "enqueue": cmd_enqueue, "invoke": cmd_invoke, "jobs": cmd_jobs,
    "cost": cmd_cost}


if __name__ == "__main__":
    sys.exit(main())
