"""bench/peers/run.py end to end on Conveyor alone (`--quick --only conveyor`): every measure yields its figures,
every job it enqueues is counted, and results.json says what was run. Slow (an embedded PostgreSQL and a moto
server of its own, about a minute), so only `make test-all` runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, out: Path, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.peers.run", *args, "--out", str(out)],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": path}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_quick_run_of_conveyor_measures_everything(tmp_path):
    out = tmp_path / "results.json"
    done = bench("--quick", "--only", "conveyor", out=out)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["meta"]["command"] == "python -m bench.peers.run --quick --only conveyor"
    assert list(report["results"]) == ["conveyor"]
    runs = report["results"]["conveyor"]
    for measure in ("latency", "bulk", "drain", "pickup", "e2e"):
        assert len(runs[measure]) == 1 and "error" not in runs[measure][0], (measure, runs[measure])
    sizes = report["meta"]["sizes"]
    assert runs["pickup"][0]["handled"] == sizes["pickup"]
    assert runs["e2e"][0]["handled"] == sizes["e2e"]
    assert runs["bulk"][0]["jobs_per_s"] > 0 and runs["drain"][0]["jobs_per_s"] > 0
    assert "| latency enqueue() adds to a domain transaction, p50 (ms) |" in done.stdout


@pytest.mark.slow
def test_a_peer_that_cannot_run_is_reported_and_the_run_goes_on(tmp_path):
    # No `node` on PATH: every pg-boss measure fails; Conveyor's are still measured and the table still printed.
    out = tmp_path / "results.json"
    done = bench("--quick", "--only", "pgboss,conveyor", out=out, path=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    for measure in ("latency", "bulk", "drain", "pickup"):
        assert "FileNotFoundError" in results["pgboss"][measure][0]["error"]
        assert "error" not in results["conveyor"][measure][0]
    assert "pgboss latency failed: FileNotFoundError" in done.stdout
    assert "| drain of N queued jobs (jobs/s) |" in done.stdout


def test_an_unknown_system_is_refused_before_anything_starts(tmp_path):
    done = bench("--only", "conveyor,sidekiq", out=tmp_path / "results.json")
    assert done.returncode == 2
    assert "unknown system(s) sidekiq" in done.stderr
    assert not (tmp_path / "results.json").exists()


def test_a_latency_at_or_below_zero_is_not_taken_for_the_best_peer():
    """An added p99 is the difference of two noisy quantiles; a quick run can make it negative, which is noise, not a
    peer that adds negative time."""
    from bench.peers.run import table

    def latency(p50, p99):
        return {"latency": [{"added_p50_ms": p50, "added_p99_ms": p99}], "bulk": [], "drain": [], "pickup": []}

    results = {"conveyor": latency(0.2, 0.4), "pgboss": latency(0.7, -1.3), "graphile": latency(0.6, 0.65)}
    p99 = [line for line in table(results, ["conveyor", "pgboss", "graphile"]) if "p99" in line and "latency" in line]
    assert p99 and p99[0].endswith("| 0.62× (graphile) |")
    results["graphile"] = latency(0.6, 0.0)
    p99 = [line for line in table(results, ["conveyor", "pgboss", "graphile"]) if "p99" in line and "latency" in line]
    assert "no peer figure above zero" in p99[0]
