"""The cost model's arithmetic on a tiny registry, against figures worked out by hand (docs/COST.md's formulas)."""

from __future__ import annotations

import pytest

from shared import cost
from shared.cost import Assumptions, CostError, estimate, expected_attempts, job_cost, parse_mix
from shared.registry import JobPayload, Registry, RetryPolicy


class Note(JobPayload):
    n: int


def tiny(batch_size: int = 10) -> Registry:
    registry = Registry()
    registry.job("tiny.batched", payload=Note, queue="batched", batch_size=batch_size, retry=RetryPolicy(max_attempts=3))
    registry.job("tiny.single", payload=Note, queue="single", batch_size=1, memory=512)
    return registry


HAND = Assumptions(duration_ms=100, log_bytes=1000, metrics_bytes=500, message_bytes=1024)


def test_a_full_batch_of_ten_by_hand():
    c = job_cost(tiny(), tiny()["tiny.batched"], HAND)
    # send 1/10 (relay batches of 10) + receive 1/10 + ChangeMessageVisibilityBatch 1/10 + delete 1/10
    assert c.sqs_requests == pytest.approx(0.4)
    assert c.lambda_requests == pytest.approx(0.1)
    assert c.gb_seconds == pytest.approx(0.1 * 0.25)  # 100 ms at 256 MB
    assert c.sqs_dollars == pytest.approx(0.16)  # 0.4 requests x $0.40 per million requests, per million jobs
    assert c.lambda_dollars == pytest.approx(0.1 * 0.20 + 25_000 * 0.0000133334)
    # 1000 bytes a job and a 500-byte metrics line an invocation of ten: 1.05 GB per million jobs at $0.50.
    assert c.logs_dollars == pytest.approx(0.525)
    assert c.per_million == pytest.approx(0.16 + 0.02 + 0.333335 + 0.525)


def test_a_batch_of_one_by_hand():
    c = job_cost(tiny(), tiny()["tiny.single"], HAND)
    assert c.sqs_requests == pytest.approx(0.1 + 1 + 1 + 1)
    assert c.lambda_requests == pytest.approx(1)
    assert c.gb_seconds == pytest.approx(0.1 * 0.5)  # 512 MB


def test_batch_size_ten_costs_fewer_requests_than_batch_size_one():
    ten = job_cost(tiny(10), tiny(10)["tiny.batched"], HAND)
    one = job_cost(tiny(1), tiny(1)["tiny.batched"], HAND)
    assert ten.sqs_requests < one.sqs_requests
    assert ten.lambda_requests < one.lambda_requests
    assert ten.per_million < one.per_million
    # Half-full batches of ten are invocations of five.
    half = job_cost(tiny(10), tiny(10)["tiny.batched"], Assumptions(duration_ms=100, log_bytes=1000, batch_fill=0.5))
    assert half.lambda_requests == pytest.approx(0.2)


def test_large_messages_are_billed_per_64_kb_chunk():
    c = job_cost(tiny(), tiny()["tiny.batched"], Assumptions(message_bytes=10_000))
    # A batch of ten 10,000-byte messages is 100,000 bytes: two chunks, for the relay's send and for the receive.
    assert c.sqs_requests == pytest.approx(0.2 + 0.2 + 0.1 + 0.1)


def test_expected_attempts():
    assert expected_attempts(0.0, 3) == 1
    assert expected_attempts(0.5, 3) == pytest.approx(1.75)
    assert expected_attempts(0.5, 1) == 1


def test_a_failure_rate_raises_the_cost_by_hand():
    c = job_cost(tiny(), tiny()["tiny.batched"], Assumptions(duration_ms=100, log_bytes=1000, metrics_bytes=500, failure_rate=0.5))
    base = job_cost(tiny(), tiny()["tiny.batched"], HAND)
    assert c.attempts == pytest.approx(1.75)
    # send 0.1, receive and visibility 1.75/10 each, delete 0.1, a ChangeMessageVisibility per retry (0.75), and
    # the DLQ copy of the 1 in 8 jobs whose three attempts all fail.
    assert c.sqs_requests == pytest.approx(0.1 + 0.175 + 0.175 + 0.1 + 0.75 + 0.125)
    assert c.gb_seconds == pytest.approx(1.75 * base.gb_seconds)
    assert c.log_bytes == pytest.approx(1750 + 0.175 * 500)  # a line per attempt, a metrics line per invocation
    assert c.per_million > base.per_million


def test_the_mix_weighs_jobs_and_the_fixed_costs_by_hand():
    est = estimate(tiny(), HAND, {"tiny.batched": 3, "tiny.single": 1})
    by_name = {j.name: j for j in est.jobs}
    assert est.per_million == pytest.approx((3 * by_name["tiny.batched"].per_million + by_name["tiny.single"].per_million) / 4)
    fixed = {f.what: f.dollars for f in est.fixed}
    # 43,800 one-minute starts a 730-hour month, 65 s each at 128 MB, plus their Lambda requests and Scheduler starts.
    assert fixed["relay at rest (resident)"] == pytest.approx(43_800 * 65 * 0.125 * 0.0000133334 + 43_800 * 0.2e-6 + 43_800 * 1e-6)
    # Two queues, five pollers each, one 20 s long poll after another all month: 131,400 requests a poller.
    assert fixed["idle polling by the event sources"] == pytest.approx(2 * 5 * 131_400 * 0.4e-6)
    assert fixed["scheduled runs"] == 0
    on_demand = estimate(tiny(), Assumptions(relay_mode="on-demand", on_demand_run_seconds=1.0))
    assert {f.what: f.dollars for f in on_demand.fixed}["relay at rest (on-demand)"] == pytest.approx(
        43_800 * 1 * 0.125 * 0.0000133334 + 43_800 * 0.2e-6 + 43_800 * 1e-6
    )


def test_the_default_mix_is_the_unscheduled_jobs_and_schedules_are_fixed_costs():
    registry = tiny()
    registry.job("tiny.nightly", payload=Note, queue="nightly", batch_size=1, schedule="rate(1 day)", schedule_payload={"n": 1})
    est = estimate(registry, HAND)
    assert set(est.mix) == {"tiny.batched", "tiny.single"}
    assert cost.fires_per_month("rate(1 day)", "UTC") == 30  # 730 hours hold 30 whole days
    scheduled = {f.what: f for f in est.fixed}["scheduled runs"]
    nightly = {j.name: j for j in est.jobs}["tiny.nightly"]
    # Each fire: a Scheduler invocation, the schedule function (a request, 100 ms at 256 MB) and the job itself.
    assert scheduled.dollars == pytest.approx(30 * (1.0 + 0.2 + 0.1 * 0.25 * 1e6 * 0.0000133334 + nightly.per_million) / 1e6)


def test_the_product_registry_prices_every_job():
    from shared.jobs import registry

    est = estimate(registry)
    assert {j.name for j in est.jobs} == {job.name for job in registry}
    assert est.per_million > 0 and est.fixed_monthly > 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"duration_ms": -1}, "duration must be at least 0 ms"),
        ({"log_bytes": -5}, "log bytes must be at least 0"),
        ({"metrics_bytes": -1}, "metrics bytes must be at least 0"),
        ({"failure_rate": 1.0}, "failure rate must be at least 0 and less than 1"),
        ({"failure_rate": -0.1}, "failure rate must be at least 0 and less than 1"),
        ({"batch_fill": 0}, "batch fill must be more than 0 and at most 1"),
        ({"message_bytes": 0}, "message bytes must be between 1 and 1 MiB"),
        ({"relay_mode": "sometimes"}, "relay mode must be resident or on-demand"),
        ({"duration_ms": float("nan")}, "not NaN"),
    ],
)
def test_bad_assumptions_are_refused(options, message):
    with pytest.raises(CostError, match=message):
        Assumptions(**options)


@pytest.mark.parametrize(
    "text, message",
    [
        ("email.send", "must look like job=weight"),
        ("=3", "must look like job=weight"),
        ("email.send=lots", "is not a number"),
        ("email.send=-1", "at least 0"),
        ("email.send=inf", "finite"),
        ("email.send=0", "at least one job a weight above 0"),
    ],
)
def test_bad_mixes_are_refused(text, message):
    with pytest.raises(CostError, match=message):
        parse_mix(text)


def test_a_mix_naming_an_unknown_job_is_refused():
    assert parse_mix("tiny.batched=3, tiny.single=1") == {"tiny.batched": 3.0, "tiny.single": 1.0}
    with pytest.raises(CostError, match="mix names unknown job"):
        estimate(tiny(), HAND, {"nope": 1})
