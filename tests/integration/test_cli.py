"""The `conveyor` command: real subprocesses, one-line errors, no tracebacks."""

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def conveyor(*args, env=None, cwd=ROOT, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, input=stdin,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: command"),
        (["enqueue"], "the following arguments are required: job"),
        (["enqueue", "nope.job", "--database-url", "postgresql://x@127.0.0.1:1/x"], "unknown job 'nope.job'; registered jobs:"),
        (["enqueue", "email.send", "--json", "{bad", "--database-url", "postgresql://x@127.0.0.1:1/x"], "--json is not valid JSON"),
        (["enqueue", "email.send", "--json", "[1]", "--database-url", "postgresql://x@127.0.0.1:1/x"], "--json must be a JSON object"),
        (["enqueue", "email.send", "--delay", "soon"], "invalid duration 'soon'"),
        (["enqueue", "email.send", "--run-at", "2030-01-01T09:00"], "has no UTC offset"),
        (["enqueue", "email.send", "--delay", "1m", "--run-at", "2030-01-01T09:00+00:00"], "not allowed with argument"),
        (["enqueue", "email.send", "--json", '{"to": "x"}', "--database-url", "postgresql://x@127.0.0.1:1/x"], "invalid payload for job 'email.send'"),
        (["invoke", "email.send", "--event", "missing.json"], "No such file"),
        (["--registry", "nowhere:registry", "jobs"], "cannot import registry module 'nowhere'"),
    ],
)
def test_bad_arguments_give_one_line_and_a_non_zero_exit(args, message):
    result = conveyor(*args, env={"DATABASE_URL": "", "CONVEYOR_DATABASE_URL": ""})
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreachable_database_is_one_line(tmp_path):
    result = conveyor("migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "conveyor: error:" in result.stderr


def test_migrate_and_enqueue(db_url):
    migrated = conveyor("migrate", "--database-url", db_url)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema up to date" in migrated.stdout
    payload = json.dumps({"to": "ada@example.com", "template": "password_reset", "subject": "Reset", "variables": {"link": "x"}})
    result = conveyor("enqueue", "email.send", "--json", payload, "--delay", "10m", "--dedup-key", "k", env={"DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    import psycopg

    with psycopg.connect(db_url) as conn:
        queue, delay = conn.execute("SELECT queue, run_at - created_at FROM conveyor.outbox WHERE id = %s", (job_id,)).fetchone()
    assert queue == "email-high" and 590 <= delay.total_seconds() <= 610


def test_invoke_runs_a_handler_on_a_sample_event_without_any_server():
    result = conveyor("invoke", "email.send", "--event", "events/email.send.json", env={"AWS_ENDPOINT_URL": ""})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"batchItemFailures": []}
    assert "succeeded" in result.stderr


def test_jobs_lists_the_registry():
    result = conveyor("jobs")
    assert result.returncode == 0
    assert "email.send" in result.stdout and "rate(15 minutes)" in result.stdout


@pytest.fixture
def running_dev(db_url, stage, aws_endpoint, tmp_path):
    """A `conveyor dev` in ``tmp_path``, ready; stopped with Ctrl-C after the test."""
    env = {**os.environ, "DATABASE_URL": "", "CONVEYOR_DATABASE_URL": "", "AWS_ENDPOINT_URL": aws_endpoint}
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "dev", "--stage", stage, "--database-url", db_url, "--no-scheduler", "--api-port", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    try:
        for line in process.stdout:
            output.append(line)
            if line.startswith("ready"):
                break
        assert (tmp_path / ".conveyor" / "dev.json").exists(), "".join(output)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def test_a_second_dev_in_the_same_folder_refuses_and_leaves_the_first_alone(running_dev, db_url, tmp_path):
    state_file = tmp_path / ".conveyor" / "dev.json"
    before = state_file.read_text()
    second = conveyor("dev", "--no-scheduler", cwd=tmp_path, env={"DATABASE_URL": "", "CONVEYOR_DATABASE_URL": ""})
    assert second.returncode == 2, second
    assert "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "already running" in second.stderr and f"pid {running_dev.pid}" in second.stderr, second.stderr
    assert running_dev.poll() is None
    assert state_file.read_text() == before
    # The first one still serves this folder: enqueue finds it through its state file.
    payload = json.dumps({"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}})
    enqueued = conveyor("enqueue", "email.send", "--json", payload, cwd=tmp_path, env={"DATABASE_URL": "", "CONVEYOR_DATABASE_URL": ""})
    assert enqueued.returncode == 0, enqueued.stderr


@pytest.mark.parametrize("source", ["@file", "-"])
def test_enqueue_takes_a_payload_larger_than_one_argument_may_be(source, db_url, tmp_path):
    # Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN), so such a payload cannot be given inline.
    payload = {"to": "ada@example.com", "template": "receipt", "subject": "Your order", "variables": {"lines": "x" * 200_000}}
    text = json.dumps(payload)
    assert len(text.encode()) > 128 * 1024
    if source == "@file":
        (tmp_path / "payload.json").write_text(text)
        result = conveyor("enqueue", "email.send", "--json", f"@{tmp_path / 'payload.json'}", "--database-url", db_url)
    else:
        result = conveyor("enqueue", "email.send", "--json", "-", "--database-url", db_url, stdin=text)
    assert result.returncode == 0, result.stderr
    import psycopg

    with psycopg.connect(db_url) as conn:
        (stored,) = conn.execute("SELECT payload FROM conveyor.outbox WHERE id = %s", (result.stdout.strip(),)).fetchone()
    assert stored == payload


def test_outbox_lists_pending_and_dead_rows_and_requeues_them(db_url):
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT conveyor.add_job('reservations.cleanup')")
        conn.execute(
            "INSERT INTO conveyor.outbox_dead (id, job_name, queue, payload, run_at, created_at, publish_attempts, last_error) "
            "VALUES ('00000000-0000-7000-8000-000000000001', 'email.send', 'email-default', '{}', now(), now(), 20, "
            "'QueueDoesNotExist: gone')"
        )
    url = ["--database-url", db_url]
    summary = conveyor("outbox", *url)
    assert summary.returncode == 0, summary.stderr
    assert "reservations.cleanup" in summary.stdout and "pending=1 due=1" in summary.stdout
    assert "conveyor outbox --failed" in summary.stdout
    failed = conveyor("outbox", "--failed", *url)
    assert "00000000-0000-7000-8000-000000000001" in failed.stdout and "QueueDoesNotExist: gone" in failed.stdout
    bad = conveyor("outbox", "--requeue", "not-a-uuid", *url)
    assert bad.returncode == 2 and "is not a job id" in bad.stderr
    missing = conveyor("outbox", "--requeue", "00000000-0000-7000-8000-0000000000ff", *url)
    assert missing.returncode == 2 and "not dead outbox rows" in missing.stderr
    moved = conveyor("outbox", "--requeue", "00000000-0000-7000-8000-000000000001", *url)
    assert moved.returncode == 0 and "requeued 1 job(s)" in moved.stdout
    assert "no dead outbox rows" in conveyor("outbox", "--failed", *url).stdout
    assert "email.send" in conveyor("outbox", *url).stdout


def test_migrate_warns_about_rows_no_job_will_take(db_url):
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO conveyor.outbox (id, job_name, queue, payload) VALUES (gen_random_uuid(), 'old.job', 'gone', '{}')"
        )
    result = conveyor("migrate", "--database-url", db_url)
    assert result.returncode == 0, result.stderr
    assert "WARNING: 1 row(s) in the outbox for job 'old.job' on queue 'gone' will never run" in result.stderr


def test_runs_and_show_print_the_ledger_as_tables_or_json(db_url):
    import psycopg
    from psycopg import sql

    from tests.support import insert_run

    with psycopg.connect(db_url, autocommit=True) as conn:
        parent = insert_run(
            conn, "reservations.cleanup", "failed", age_days=0.1, reason="child 2 died", payload='{"older_than_minutes": 5}',
            result=sql.SQL("'{\"cancelled\": 3}'::json"), scheduled_for=sql.SQL("now() - interval '3 hours'"),
        )  # fmt: skip
        children = [
            insert_run(conn, "email.send", "succeeded", age_days=0.2, parent_id=parent,
                       first_started_at=sql.SQL("now() - interval '0.2 days' - interval '2.5 seconds'")),
            insert_run(conn, "email.send", "dead", age_days=0.3, parent_id=parent, attempt=5,
                       last_error_type="RuntimeError", last_error="SES said no\n" + "x" * 300),
        ]  # fmt: skip
    env = {"DATABASE_URL": db_url}

    table = conveyor("runs", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "JOB", "STATUS", "ATTEMPT", "CREATED", "FINISHED", "DURATION", "LAST", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == [str(parent), *map(str, children)]  # newest first
    starts = [lines[0].index(name) for name in ("JOB", "STATUS", "ATTEMPT", "CREATED", "FINISHED")]
    assert all(line[start - 2:start] == "  " and line[start] != " " for line in lines[1:] for start in starts), lines
    assert "2.5s" in lines[2] and "RuntimeError: SES said no xxx" in lines[3] and lines[3].endswith("…")
    assert "child 2 died" in lines[1]

    dead = conveyor("runs", "--status", "dead", "--json", env=env)
    (record,) = json.loads(dead.stdout)["runs"]
    assert record["id"] == str(children[1]) and record["status"] == "dead" and record["attempt"] == 5
    assert datetime.fromisoformat(record["created_at"]).tzinfo is not None

    first = conveyor("runs", "--limit", "2", "--since", "1d", env=env)
    cursor = first.stdout.rsplit("--cursor ", 1)[1].split(")")[0]
    rest = conveyor("runs", "--limit", "2", "--cursor", cursor, "--json", env=env)
    assert [r["id"] for r in json.loads(rest.stdout)["runs"]] == [str(children[1])]
    # --before ID pages from a job id, as earlier versions did.
    before = conveyor("runs", "--limit", "2", "--before", str(children[0]), "--json", env=env)
    assert [r["id"] for r in json.loads(before.stdout)["runs"]] == [str(children[1])]
    assert json.loads(conveyor("runs", "--job", "email.send", "--json", env=env).stdout)["runs"][0]["job"] == "email.send"
    assert conveyor("runs", "--until", "1d", env=env).stdout.strip() == "no runs match"

    shown = conveyor("show", str(parent), env=env)
    assert shown.returncode == 0, shown.stderr
    for fragment in (f"id:               {parent}", "status:           failed", "reason:           child 2 died",
                     '"older_than_minutes": 5', '"cancelled": 3', "scheduled_for:", "children (2):", str(children[1])):  # fmt: skip
        assert fragment in shown.stdout, shown.stdout
    as_json = json.loads(conveyor("show", str(parent), "--json", env=env).stdout)
    assert as_json["payload"] == {"older_than_minutes": 5} and as_json["result"] == {"cancelled": 3}
    assert [c["id"] for c in as_json["children"]] == [str(c) for c in children] and as_json["children_total"] == 2
    assert json.loads(conveyor("show", str(children[0]), "--json", env=env).stdout)["parent_id"] == str(parent)


def test_runs_finds_the_database_of_a_running_dev(running_dev, tmp_path):
    payload = json.dumps({"to": "ada@example.com", "template": "welcome", "subject": "Hi", "variables": {"name": "Ada"}})
    no_env = {"DATABASE_URL": "", "CONVEYOR_DATABASE_URL": ""}
    job_id = conveyor("enqueue", "email.send", "--json", payload, cwd=tmp_path, env=no_env).stdout.strip()
    listed = conveyor("runs", "--json", cwd=tmp_path, env=no_env)
    assert listed.returncode == 0, listed.stderr
    assert job_id in [r["id"] for r in json.loads(listed.stdout)["runs"]]
    assert conveyor("show", job_id, cwd=tmp_path, env=no_env).returncode == 0
    # From a folder inside the project, as git finds its repository.
    deeper = tmp_path / "src" / "app"
    deeper.mkdir(parents=True)
    found = conveyor("show", job_id, "--json", cwd=deeper, env=no_env)
    assert found.returncode == 0, found.stderr


def test_reading_the_ledger_needs_no_aws_configuration(db_url):
    bare = {k: "" for k in os.environ if k.startswith("AWS_") and k != "AWS_CA_BUNDLE"}
    listed = conveyor("runs", "--json", env={**bare, "DATABASE_URL": db_url})
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["runs"] == []
