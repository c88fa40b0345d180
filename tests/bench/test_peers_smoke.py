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


def bench(*args: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.peers.run", *args, "--out", str(out)],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=600,
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


def test_an_unknown_system_is_refused_before_anything_starts(tmp_path):
    done = bench("--only", "conveyor,sidekiq", out=tmp_path / "results.json")
    assert done.returncode == 2
    assert "unknown system(s) sidekiq" in done.stderr
    assert not (tmp_path / "results.json").exists()
