"""Every bad input to `conveyor` ends in one line on stderr and exit status 2, never a traceback.

One table: each row is what a user typed (``{db}`` is a migrated database, ``{empty_db}`` one never migrated,
``{tmp}`` a folder of this test's own) and a fragment the one line must contain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = json.dumps({"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}})
NO_DATABASE = {"DATABASE_URL": "", "CONVEYOR_DATABASE_URL": ""}
REFUSED = "postgresql://conveyor@127.0.0.1:1/none"  # nothing listens on port 1

CASES = {
    # durations that overflow Python's timedelta, or the database's timestamps
    "delay overflows": (["enqueue", "email.send", "--json", PAYLOAD, "--delay", "99999999999999d"], {}, "--delay"),
    "delay past year 9999": (["enqueue", "email.send", "--json", PAYLOAD, "--delay", "50000000w", "--database-url", "{db}"], {}, "delay"),
    "run-at out of range": (["enqueue", "email.send", "--json", PAYLOAD, "--run-at", "0001-01-01T00:00:00+14:00"], {}, "--run-at"),
    # database URLs that are not PostgreSQL URLs
    "enqueue, not a url": (["enqueue", "email.send", "--json", PAYLOAD], {"DATABASE_URL": "this is not a url"}, "database URL"),
    "migrate, not a url": (["migrate"], {"DATABASE_URL": "this is not a url"}, "database URL"),
    "enqueue, mysql url": (["enqueue", "email.send", "--json", PAYLOAD], {"DATABASE_URL": "mysql://u:p@127.0.0.1/db"}, "database URL"),
    "migrate, mysql url": (["migrate", "--database-url", "mysql://u:p@127.0.0.1/db"], {}, "database URL"),
    "dev, mysql url": (["dev", "--database-url", "mysql://u:p@127.0.0.1/db"], {}, "database URL"),
    # a server that is not there: the driver's message spans two lines
    "migrate, refused port": (["migrate", "--database-url", REFUSED], {}, "127.0.0.1"),
    "enqueue, refused port": (["enqueue", "email.send", "--json", PAYLOAD, "--database-url", REFUSED], {}, "127.0.0.1"),
    # a database that was never migrated
    "enqueue, not migrated": (["enqueue", "email.send", "--json", PAYLOAD, "--database-url", "{empty_db}"], {}, "conveyor migrate"),
    # payload files that cannot be read
    "json file missing": (["enqueue", "email.send", "--json", "@{tmp}/missing.json"], {}, "cannot read"),
    "json file not text": (["enqueue", "email.send", "--json", "@{tmp}/binary.json"], {}, "not UTF-8"),
    "json file not json": (["enqueue", "email.send", "--json", "@{tmp}/array.json"], {}, "must be a JSON object"),
    # events that are JSON but not SQS events
    "invoke, record without fields": (["invoke", "email.send", "--event", "{tmp}/fields.json"], {}, "record 0"),
    "invoke, record not an object": (["invoke", "email.send", "--event", "{tmp}/string.json"], {}, "record 0"),
    "invoke, body not text": (["invoke", "email.send", "--event", "{tmp}/body.json"], {}, "record 0"),
    "invoke, attribute not an object": (["invoke", "email.send", "--event", "{tmp}/attribute.json"], {}, "conveyor.attempt"),
    # reading the ledger
    "runs, bad status": (["runs", "--status", "done"], {}, "unknown status 'done'; statuses: waiting"),
    "runs, bad time": (["runs", "--since", "yesterday"], {}, "invalid time 'yesterday'"),
    "runs, time without offset": (["runs", "--until", "2026-01-01T09:00"], {}, "no UTC offset"),
    "runs, duration too long": (["runs", "--since", "99999999999d"], {}, "too long"),
    "runs, limit too large": (["runs", "--limit", "5000", "--database-url", "{db}"], {}, "--limit 5000 is over 1000"),
    "runs, unknown before": (["runs", "--before", "00000000-0000-7000-8000-0000000000ff", "--database-url", "{db}"], {}, "no job with id"),
    "runs, not migrated": (["runs", "--database-url", "{empty_db}"], {}, "conveyor migrate"),
    "runs, no database": (["runs"], {}, "no database"),
    "show, unknown id": (["show", "00000000-0000-7000-8000-0000000000ff", "--database-url", "{db}"], {}, "no job with id"),
    "show, malformed id": (["show", "42"], {}, "'42' is not a job id"),
    # the local API's port and tokens, refused before anything starts
    "dev, port out of range": (["dev", "--api-port", "70000"], {}, "'70000' is not a port"),
    "dev, token unknown scope": (["dev", "--token", "s3cret=jobs:read,jobs:write"], {}, "--token: unknown scope 'jobs:write'"),
    "dev, token without scopes": (["dev", "--token", "a=jobs:read", "--token", "s3cret"], {}, "--token #2 has no '='"),
    "dev, tokens env malformed": (["dev"], {"CONVEYOR_API_TOKENS": "a=jobs:read;;b=jobs:cancel"}, "CONVEYOR_API_TOKENS entry 2 is empty"),
}

EVENTS = {
    "fields.json": {"Records": [{"foo": 1}]},
    "string.json": {"Records": ["x"]},
    "body.json": {"Records": [{"messageId": "m1", "receiptHandle": "r", "body": {"to": "x"}}]},
    "attribute.json": {"Records": [{"messageId": "m1", "receiptHandle": "r", "body": "{}", "messageAttributes": {"conveyor.attempt": "1"}}]},
}


@pytest.fixture
def empty_db(pg_server):
    name = f"e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(pg_server, dbname=name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def conveyor(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **NO_DATABASE, "AWS_ENDPOINT_URL": "", **env},
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("conveyor") and "error: " in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line(case, db_url, empty_db, tmp_path):
    args, env, fragment = CASES[case]
    for name, event in EVENTS.items():
        (tmp_path / name).write_text(json.dumps(event))
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe{}")
    (tmp_path / "array.json").write_text("[1]")
    values = {"db": db_url, "empty_db": empty_db, "tmp": str(tmp_path)}
    result = conveyor(*(arg.format(**values) if "{" in arg and not arg.startswith("{\"") else arg for arg in args), env=env)
    assert_one_line_error(result, fragment)


def test_a_url_with_a_password_is_not_echoed(tmp_path):
    result = conveyor("migrate", "--database-url", "mysql://user:s3cret@127.0.0.1/db", env={})
    line = assert_one_line_error(result, "database URL")
    assert "s3cret" not in line


def test_dev_whose_api_port_is_taken_is_one_line_naming_the_port_and_the_flag(db_url, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = conveyor(
            "dev", "--database-url", db_url, "--no-scheduler", "--stage", "tport", "--api-port", str(port),
            env={}, cwd=tmp_path,
        )  # fmt: skip
    line = assert_one_line_error(result, f"port {port} is in use")
    assert "--api-port" in line
    assert not (tmp_path / ".conveyor" / "dev.json").exists(), "a runtime that failed to start leaves no state file"
    # Found before anything was set up for nothing (the database, the queues).
    assert "migrations" not in result.stdout and "queue " not in result.stdout, result.stdout


@pytest.fixture
def reachable_dir():
    """A folder the embedded server's unprivileged user can reach, so its data is not moved elsewhere."""
    path = Path(tempfile.mkdtemp(prefix="conveyor-cli-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_dev_that_cannot_start_postgres_is_one_line_naming_the_log(reachable_dir):
    data = reachable_dir / "data"
    (data / "pgdata").mkdir(parents=True)
    (data / "pgdata" / "PG_VERSION").write_text("7\n")  # a cluster this server cannot read
    result = conveyor("dev", "--data-dir", str(data), "--no-scheduler", env={}, cwd=reachable_dir)
    line = assert_one_line_error(result, "PostgreSQL")
    assert str(data / "postgres.log") in line
