"""The operations verbs of `conveyor` against a running `conveyor dev`: real subprocesses, real PostgreSQL and moto.

They call the same service as the HTTP API (tests/integration/test_api.py covers the permission model there; the
terminal holds every scope), so these tests check what only the CLI does: finding the system, tables, ``--json``,
exit codes and one-line refusals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shared.local.pausewatch import REFRESH_SECONDS
from tests.integration.test_cli import ROOT

REGISTRY = "tests.cli_registry:registry"


@pytest.fixture
def dev(db_url, stage, aws_endpoint, tmp_path):
    """`conveyor dev` on the test registry in ``tmp_path``; returns a function running `conveyor ARGS` beside it."""
    env = {
        **os.environ, "DATABASE_URL": "", "CONVEYOR_DATABASE_URL": "", "AWS_ENDPOINT_URL": aws_endpoint,
        "PYTHONPATH": str(ROOT), "CONVEYOR_REGISTRY": REGISTRY,
    }  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "dev", "--stage", stage, "--database-url", db_url, "--no-scheduler",
         "--api-port", "0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("ready"):
            break
    assert (tmp_path / ".conveyor" / "dev.json").exists(), "".join(output)

    # A new terminal: no AWS endpoint, region or credentials; the state file of `conveyor dev` is all it has.
    terminal = {k: v for k, v in env.items() if not k.startswith("AWS_") or k == "AWS_CA_BUNDLE"}

    def run(*args, stdin=None):
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", *args], cwd=tmp_path, env=terminal, capture_output=True, text=True,
            timeout=120, input=stdin,
        )  # fmt: skip

    yield run
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def _ok(result) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _refused(result, fragment: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr, result.stderr
    return result.stderr


def _wait_status(run, job_id: str, wanted: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = json.loads(_ok(run("show", job_id, "--json")))
        if shown["status"] in wanted or time.monotonic() > deadline:
            assert shown["status"] in wanted, shown
            return shown
        time.sleep(0.2)


def test_a_dead_job_is_seen_retried_and_redriven_from_the_terminal(dev):
    job_id = _ok(dev("enqueue", "test.work", "--json", '{"n": 1, "permanent": true}')).strip()
    dead = _wait_status(dev, job_id, {"dead"})
    assert dead["attempts"] and dead["attempts"][-1]["outcome"] == "dead"

    queues = json.loads(_ok(dev("queues", "--json")))
    (work,) = [q for q in queues["queues"] if q["name"] == "work"]
    assert work["dlq_depth"] == 1 and work["paused"] is False
    (stats,) = work["jobs"]
    assert stats["name"] == "test.work" and stats["failed_1h"] == 1
    table = _ok(dev("queues"))
    assert table.splitlines()[0].split()[:3] == ["QUEUE", "STATE", "VISIBLE"] and "work" in table

    health = dev("health")
    assert health.returncode == 1, health
    assert "FAIL" in health.stdout and "unhealthy" in health.stdout
    assert json.loads(dev("health", "--json").stdout)["healthy"] is False

    retried = json.loads(_ok(dev("retry", job_id, "--json")))
    assert retried["job_id"] == job_id and retried["status"] == "pending"
    again = _wait_status(dev, job_id, {"dead"})
    assert again["attempt"] == 1  # a fresh count: it failed for good on its first attempt again
    assert [a["action"] for a in again["audit"]] == ["retry"] and again["audit"][0]["actor"].startswith("cli:")
    shown = _ok(dev("show", job_id))
    assert "operator actions:" in shown and "failed attempts" in shown

    # Both dead copies are in the DLQ now; redrive moves them back, and the job runs (and dies) once more.
    moved = _ok(dev("redrive", "work", "--job", "test.work"))
    assert "moved 2" in moved, moved
    _refused(dev("redrive", "nowhere"), "nowhere")
    _refused(dev("redrive", "work", "--job", "no.such"), "no.such")


def test_actions_refused_by_state_or_input_exit_non_zero_in_one_line(dev):
    job_id = json.loads(_ok(dev("trigger", "test.work", "--json", '{"n": 2}', "--json-output")))["job_id"]
    assert _ok(dev("trigger", "test.work", "--json", '{"n": 5}')).startswith("job test.work enqueued as ")
    _wait_status(dev, job_id, {"succeeded"})
    _refused(dev("retry", job_id), "succeeded")
    _refused(dev("cancel", job_id), "succeeded")
    _refused(dev("retry", "00000000-0000-7000-8000-0000000000ff"), "no job")
    _refused(dev("trigger", "test.work", "--json", '{"n": "many"}'), "invalid payload")
    _refused(dev("trigger", "no.such.job"), "no.such.job")
    _refused(dev("pause", "nowhere"), "nowhere")


def test_cancel_pause_and_resume(dev):
    later = _ok(dev("enqueue", "test.work", "--json", '{"n": 3}', "--delay", "1h")).strip()
    cancelled = json.loads(_ok(dev("cancel", later, "--reason", "not needed", "--json")))
    assert cancelled["status"] == "cancelled"
    assert json.loads(_ok(dev("show", later, "--json")))["reason"] == "not needed"

    assert "paused" in _ok(dev("pause", "work"))
    assert "already paused" in _ok(dev("pause", "work"))
    # The pollers read the pauses at most once a REFRESH_SECONDS: a pause takes effect within that (README).
    time.sleep(2 * REFRESH_SECONDS)
    held = _ok(dev("enqueue", "test.work", "--json", '{"n": 4}')).strip()
    _wait_status(dev, held, {"queued"})
    time.sleep(3)  # the pollers had many cycles in which they could have taken it
    assert json.loads(_ok(dev("show", held, "--json")))["status"] == "queued"
    assert [q["paused"] for q in json.loads(_ok(dev("queues", "--json")))["queues"] if q["name"] == "work"] == [True]
    assert "resumed" in _ok(dev("resume", "work"))
    _wait_status(dev, held, {"succeeded"})


VERBS = {
    # verb and arguments → the scope it needs
    ("queues",): "jobs:read",
    ("health",): "jobs:read",
    ("runs",): "jobs:read",
    ("show", "00000000-0000-7000-8000-0000000000ff"): "jobs:read",
    ("retry", "00000000-0000-7000-8000-0000000000ff"): "jobs:retry",
    ("cancel", "00000000-0000-7000-8000-0000000000ff"): "jobs:cancel",
    ("trigger", "test.work", "--json", '{"n": 1}'): "jobs:retry",
    ("redrive", "work"): "jobs:retry",
    ("pause", "work"): "jobs:retry",
    ("resume", "work"): "jobs:retry",
}


def test_every_verb_refuses_without_its_scope_and_changes_nothing(db_url):
    """CONVEYOR_SCOPES narrows what a terminal may do (a look-only on-call shell): each verb checks the same scope
    its API route does, in the same service, before touching anything."""
    import psycopg

    from tests.integration.test_cli import conveyor

    for args, scope in VERBS.items():
        others = " ".join(s for s in ("jobs:read", "jobs:retry", "jobs:cancel") if s != scope)
        env = {"DATABASE_URL": db_url, "CONVEYOR_REGISTRY": REGISTRY, "CONVEYOR_SCOPES": others}
        refused = conveyor(*args, env=env)
        _refused(refused, f"needs the {scope} scope")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM conveyor.paused_queues").fetchone() == (0,)
    bad = conveyor("queues", env={"DATABASE_URL": db_url, "CONVEYOR_SCOPES": "jobs:read,jobs:write"})
    _refused(bad, "'jobs:write', which is not a scope")
