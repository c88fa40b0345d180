"""The metrics a batch writes: one Embedded Metric Format line per invocation, which CloudWatch bills as log bytes.

Counts are summed per batch (one value, not one ``1.0`` per job) and durations rounded to 0.1 ms, so a batch of ten
costs about one job's line of log, not ten (docs/COST.md: logs are the largest share of a light job's cost).
"""

from __future__ import annotations

import json

import pytest

from shared.registry import JobPayload, Registry
from shared.runtime import job_handler
from shared.testing import sqs_event


class Item(JobPayload):
    n: int


registry = Registry()
ITEM = registry.job("test.metered", payload=Item, queue="metered")


class Context:
    function_name = "conveyor-test-metered"
    aws_request_id = "request-1"

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


def emf_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"_aws"')]


@pytest.fixture
def metrics_on(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "Conveyor")


def test_a_batch_writes_one_summed_count_per_outcome_and_rounded_durations(metrics_on, capsys):
    def run(payload: Item, ctx) -> None:
        if payload.n == 3:
            raise ValueError("boom")

    handler = job_handler(ITEM, run)
    records = [sqs_event(ITEM, {"n": n})["Records"][0] for n in range(5)]
    capsys.readouterr()
    response = handler({"Records": records}, Context())
    assert len(response["batchItemFailures"]) == 1

    [line] = emf_lines(capsys.readouterr().out)
    counts = {name: value for name, value in line.items() if name.startswith("Job") and name != "JobDuration"}
    assert counts == {"JobSucceeded": [4.0], "JobRetrying": [1.0]}
    durations = line["JobDuration"]
    assert len(durations) == 5  # one per job that ran: percentiles need each value
    assert all(round(d, 1) == d for d in durations)


def test_metrics_off_writes_no_metrics_line(capsys):
    handler = job_handler(ITEM, lambda payload, ctx: None)
    capsys.readouterr()
    handler(sqs_event(ITEM, {"n": 1}), Context())
    assert emf_lines(capsys.readouterr().out) == []
