"""What Conveyor costs on AWS, from the registry's settings: per job (per million jobs) and the fixed monthly costs.

Pure arithmetic: no AWS calls, no database. ``conveyor cost`` prints it and ``docs/COST.md`` explains every term.
Prices are us-east-1 list prices for arm64 Lambda (the stack's architecture), without free tiers, Savings Plans or
volume tiers (none applies below billions of requests); each constant names its source and the date it was read.

A job's path, and the billed requests it makes (``docs/COST.md`` has the sources):

* the relay publishes it with ``SendMessageBatch`` (10 messages a call): 1/10 SQS request;
* Lambda's event source mapping receives it in a batch of up to ``batch_size`` (one ``ReceiveMessage``), invokes
  the function once per batch (one Lambda request, GB-seconds at the queue's memory for the job's duration), and
  deletes the batch's successes (one ``DeleteMessageBatch``);
* the runtime sets the batch's visibility to each record's slot (one ``ChangeMessageVisibilityBatch`` per
  invocation, ``shared.runtime.handler``);
* a failed attempt that will be retried is hidden for its retry delay (one ``ChangeMessageVisibility``) and comes
  back for another receive and invocation; a last failed attempt is copied to the DLQ (one ``SendMessage``);
* every attempt writes ``log_bytes`` of logs, and every invocation one metrics line of ``metrics_bytes`` (both
  measured by ``bench/log_bytes.py``).

Every call carrying messages is billed per 64 KB chunk of its payload.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.registry import JobSpec, Registry
from shared.schedule import parse_schedule

# -- prices: us-east-1, list, read 2026-11 -----------------------------------------------------------------------

# https://aws.amazon.com/sqs/pricing/ : standard queue, first 100 billion requests a month; "each 64 KB chunk of a
# payload is billed as 1 request".
SQS_PER_MILLION_REQUESTS = 0.40
SQS_CHUNK_BYTES = 64 * 1024
# https://aws.amazon.com/lambda/pricing/ : Arm, first 7.5 billion GB-seconds a month; requests for both architectures.
LAMBDA_ARM_PER_GB_SECOND = 0.0000133334
LAMBDA_PER_MILLION_REQUESTS = 0.20
# https://aws.amazon.com/eventbridge/pricing/ : Scheduler, per million invocations after 14 million free a month.
SCHEDULER_PER_MILLION_INVOCATIONS = 1.00
# https://aws.amazon.com/cloudwatch/pricing/ : Logs, Standard class, ingestion; Lambda's logs are "vended" logs
# since 2025-05-01, tiered from this price down (first 10 TB a month at this price).
LOGS_PER_GB_INGESTED = 0.50
# The billing GB taken as 10^9 bytes: the smaller unit, so the log cost errs high.
BYTES_PER_GB = 1_000_000_000

# AWS prices by the 730-hour month.
SECONDS_PER_MONTH = 730 * 3600
# Long polling's longest wait (SQS quota), which Lambda's pollers use on an empty queue.
LONG_POLL_SECONDS = 20

# The relay (infra/relay.py, which reads its memory from here): started every minute; resident runs drain for 65 s.
# 128 MB, Lambda's smallest: the relay's process peaks at ~70 MB draining a backlog (bench/relay_memory.py,
# docs/BENCHMARKS.md), which leaves the runtime's own share and a margin.
RELAY_MEMORY_MB = 128
RELAY_STARTS_PER_MONTH = SECONDS_PER_MONTH // 60
RESIDENT_DRAIN_SECONDS = 65
# The relay's SendMessageBatch carries up to 10 messages (SQS's limit).
RELAY_BATCH = 10
# A scheduled run is started by the ``schedule`` function (infra/scheduling.py), sized like the defaults.
SCHEDULE_FUNCTION_MEMORY_MB = 256

RelayMode = Literal["resident", "on-demand"]


class CostError(ValueError):
    """An assumption the model cannot use (a negative duration, a failure rate of 2, an unknown job in the mix)."""


@dataclass(frozen=True)
class Assumptions:
    """What the registry does not say. Defaults: docs/COST.md says where each comes from."""

    # Handler time per job, billed as GB-seconds (a no-op job's runtime overhead plus the ledger writes is far
    # less; real jobs that call a service take longer).
    duration_ms: float = 50.0
    # Log bytes per attempt at the default level (INFO): measured by bench/log_bytes.py, 382 bytes.
    log_bytes: int = 382
    # Bytes of the metrics line each invocation writes (Embedded Metric Format, billed as log ingestion): measured by
    # bench/log_bytes.py, 336 for a batch of one and 373 for a batch of ten; the larger is taken.
    metrics_bytes: int = 373
    # The share of attempts that fail (each failure is retried up to the job's max_attempts).
    failure_rate: float = 0.0
    # How full a batch is on average, as a share of batch_size: 1 at a steady high volume, lower at a trickle.
    batch_fill: float = 1.0
    # Body plus attributes per message, for SQS's 64 KB billing chunks.
    message_bytes: int = 1024
    relay_mode: RelayMode = "resident"
    # Seconds an on-demand relay run takes when nothing is due (connect, one claim, return).
    on_demand_run_seconds: float = 1.0
    # Lambda's pollers that keep long-polling an idle queue (AWS does not publish the number; see docs/COST.md).
    idle_pollers: int = 5

    def __post_init__(self) -> None:
        if _nan(self):
            raise CostError("assumptions must be numbers, not NaN")
        checks = (
            (self.duration_ms >= 0, f"duration must be at least 0 ms, got {self.duration_ms}"),
            (self.log_bytes >= 0, f"log bytes must be at least 0, got {self.log_bytes}"),
            (self.metrics_bytes >= 0, f"metrics bytes must be at least 0, got {self.metrics_bytes}"),
            (0 <= self.failure_rate < 1, f"failure rate must be at least 0 and less than 1, got {self.failure_rate}"),
            (0 < self.batch_fill <= 1, f"batch fill must be more than 0 and at most 1, got {self.batch_fill}"),
            (1 <= self.message_bytes <= 1024 * 1024, f"message bytes must be between 1 and 1 MiB, got {self.message_bytes}"),
            (self.relay_mode in ("resident", "on-demand"), f"relay mode must be resident or on-demand, got {self.relay_mode!r}"),
            (self.on_demand_run_seconds >= 0, f"on-demand run seconds must be at least 0, got {self.on_demand_run_seconds}"),
            (self.idle_pollers >= 0, f"idle pollers must be at least 0, got {self.idle_pollers}"),
        )
        for ok, message in checks:
            if not ok:
                raise CostError(message)


def _nan(a: Assumptions) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for v in (a.duration_ms, a.failure_rate, a.batch_fill, a.on_demand_run_seconds))


@dataclass(frozen=True)
class JobCost:
    """One job's cost per job, and per million jobs in dollars."""

    name: str
    queue: str
    batch_size: int
    memory_mb: int
    attempts: float
    sqs_requests: float
    lambda_requests: float
    gb_seconds: float
    log_bytes: float

    @property
    def sqs_dollars(self) -> float:
        return self.sqs_requests * SQS_PER_MILLION_REQUESTS

    @property
    def lambda_dollars(self) -> float:
        return self.lambda_requests * LAMBDA_PER_MILLION_REQUESTS + self.gb_seconds * 1e6 * LAMBDA_ARM_PER_GB_SECOND

    @property
    def logs_dollars(self) -> float:
        return self.log_bytes * 1e6 / BYTES_PER_GB * LOGS_PER_GB_INGESTED

    @property
    def per_million(self) -> float:
        """Dollars per million jobs (the ``*_dollars`` properties are each part of it)."""
        return self.sqs_dollars + self.lambda_dollars + self.logs_dollars


@dataclass(frozen=True)
class Fixed:
    """A monthly cost that does not depend on how many jobs run."""

    what: str
    dollars: float
    detail: str


@dataclass(frozen=True)
class Estimate:
    assumptions: Assumptions
    jobs: tuple[JobCost, ...]
    mix: Mapping[str, float]
    fixed: tuple[Fixed, ...] = field(default=())

    @property
    def per_million(self) -> float:
        """Dollars per million jobs of the mix (weights normalised)."""
        total = sum(self.mix.values())
        return sum(job.per_million * self.mix[job.name] / total for job in self.jobs if job.name in self.mix)

    @property
    def fixed_monthly(self) -> float:
        return sum(item.dollars for item in self.fixed)


def expected_attempts(failure_rate: float, max_attempts: int) -> float:
    """Attempts per job when each fails independently with ``failure_rate``: 1 + f + f² + … (max_attempts terms)."""
    return sum(failure_rate**k for k in range(max_attempts))


def _chunks(payload_bytes: float) -> int:
    return max(1, math.ceil(payload_bytes / SQS_CHUNK_BYTES))


def job_cost(registry: Registry, job: JobSpec, assumptions: Assumptions) -> JobCost:
    """Requests, GB-seconds and log bytes per job of ``job``, on its default queue's settings (the queue's function
    has the largest memory and the smallest batch of the jobs on it)."""
    queue = registry.queue_settings(job.queue)
    a = assumptions
    attempts = expected_attempts(a.failure_rate, job.retry.max_attempts)
    retries = attempts - 1
    dead = a.failure_rate**job.retry.max_attempts
    batch = max(1.0, queue.batch_size * a.batch_fill)  # records per invocation
    per_invocation = attempts / batch  # invocations per job, each attempt batched alike
    relay_send = _chunks(RELAY_BATCH * a.message_bytes) / RELAY_BATCH
    receive = per_invocation * _chunks(batch * a.message_bytes)
    visibility = per_invocation  # the runtime's ChangeMessageVisibilityBatch
    delete = 1 / batch  # the event source deletes each job once, in the batch it finished in
    retry_hide = retries  # ChangeMessageVisibility for each retry delay
    dead_letter = dead * _chunks(a.message_bytes)  # the DLQ copy of a job whose attempts all failed
    sqs = relay_send + receive + visibility + delete + retry_hide + dead_letter
    return JobCost(
        name=job.name,
        queue=job.queue,
        batch_size=queue.batch_size,
        memory_mb=queue.memory,
        attempts=attempts,
        sqs_requests=sqs,
        lambda_requests=per_invocation,
        gb_seconds=attempts * a.duration_ms / 1000 * queue.memory / 1024,
        log_bytes=attempts * a.log_bytes + per_invocation * a.metrics_bytes,
    )


def fires_per_month(expression: str, timezone: str) -> int:
    """Fires of a schedule in one 730-hour month (a fixed window, so the figure is the same every run)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return sum(1 for _ in parse_schedule(expression, timezone).fire_times(start, start + timedelta(seconds=SECONDS_PER_MONTH)))


def fixed_costs(registry: Registry, assumptions: Assumptions, jobs: Mapping[str, JobCost]) -> tuple[Fixed, ...]:
    a = assumptions
    relay_gb = RELAY_MEMORY_MB / 1024
    starts = RELAY_STARTS_PER_MONTH
    scheduler_relay = starts * SCHEDULER_PER_MILLION_INVOCATIONS / 1e6
    if a.relay_mode == "resident":
        seconds = starts * RESIDENT_DRAIN_SECONDS
        detail = f"{starts:,} runs x {RESIDENT_DRAIN_SECONDS} s x {RELAY_MEMORY_MB} MB"
    else:
        seconds = starts * a.on_demand_run_seconds
        detail = f"{starts:,} runs x {a.on_demand_run_seconds:g} s x {RELAY_MEMORY_MB} MB"
    relay = seconds * relay_gb * LAMBDA_ARM_PER_GB_SECOND + starts * LAMBDA_PER_MILLION_REQUESTS / 1e6 + scheduler_relay
    items = [Fixed(f"relay at rest ({a.relay_mode})", relay, detail + ", its Lambda requests and Scheduler starts")]
    queues = list(registry.queues())
    polls = a.idle_pollers * SECONDS_PER_MONTH / LONG_POLL_SECONDS
    per_queue = polls * SQS_PER_MILLION_REQUESTS / 1e6
    items.append(
        Fixed(
            "idle polling by the event sources",
            per_queue * len(queues),
            f"{len(queues)} queues x {a.idle_pollers} pollers x one {LONG_POLL_SECONDS} s long poll each "
            f"= {polls:,.0f} ReceiveMessage a queue (${per_queue:.2f})",
        )
    )
    runs = 0
    dollars = 0.0
    for job in registry.scheduled():
        fires = fires_per_month(job.schedule or "", job.timezone)
        runs += fires
        start = (
            SCHEDULER_PER_MILLION_INVOCATIONS
            + LAMBDA_PER_MILLION_REQUESTS
            + a.duration_ms / 1000 * SCHEDULE_FUNCTION_MEMORY_MB / 1024 * 1e6 * LAMBDA_ARM_PER_GB_SECOND
        )
        dollars += fires * (start + jobs[job.name].per_million) / 1e6
    items.append(
        Fixed(
            "scheduled runs",
            dollars,
            f"{len(registry.scheduled())} schedules, {runs:,} runs: Scheduler, the schedule function and the job",
        )
    )
    return tuple(items)


def parse_mix(text: str) -> dict[str, float]:
    """``email.send=5,sms.send=1`` as weights; refuses what is not that."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, weight = part.partition("=")
        if not sep or not name.strip():
            raise CostError(f"mix entry {part!r} must look like job=weight, e.g. email.send=5")
        try:
            value = float(weight)
        except ValueError:
            raise CostError(f"mix weight {weight!r} for {name.strip()!r} is not a number") from None
        if not value >= 0 or math.isinf(value):
            raise CostError(f"mix weight for {name.strip()!r} must be a finite number at least 0, got {weight}")
        mix[name.strip()] = value
    if not any(mix.values()):
        raise CostError("mix must give at least one job a weight above 0")
    return mix


def estimate(registry: Registry, assumptions: Assumptions | None = None, mix: Mapping[str, float] | None = None) -> Estimate:
    """The per-job costs of every job in ``registry``, the mix's cost per million and the fixed monthly costs.

    The default mix weighs every unscheduled job alike: scheduled jobs run a few thousand times a month whatever
    the volume, so they are priced in the fixed costs ("scheduled runs"), not in the cost per million jobs. A
    registry of scheduled jobs only weighs them all alike."""
    assumptions = assumptions or Assumptions()
    if len(registry) == 0:
        raise CostError("the registry has no jobs")
    jobs = {job.name: job_cost(registry, job, assumptions) for job in registry}
    if mix is None:
        unscheduled = [job.name for job in registry if job.schedule is None]
        mix = {name: 1.0 for name in unscheduled or jobs}
    unknown = sorted(set(mix) - set(jobs))
    if unknown:
        raise CostError(f"mix names unknown job(s) {', '.join(unknown)}; registered jobs: {', '.join(sorted(jobs))}")
    return Estimate(assumptions, tuple(jobs.values()), dict(mix), fixed_costs(registry, assumptions, jobs))


def render(est: Estimate) -> str:
    """The table ``conveyor cost`` prints."""
    a = est.assumptions
    lines = [
        f"Assumptions: {a.duration_ms:g} ms a job, {a.log_bytes} log bytes an attempt and {a.metrics_bytes} of metrics an "
        f"invocation, failure rate {a.failure_rate:g}, "
        f"batches {a.batch_fill:.0%} full, {a.message_bytes} B messages, relay {a.relay_mode}.",
        "Prices: us-east-1 list, arm64 (docs/COST.md).",
        "",
        f"{'job':<26} {'batch':>5} {'MB':>5} {'attempts':>8} {'SQS req':>8} {'λ req':>6} {'GB-s':>8} "
        f"{'SQS $':>6} {'λ $':>6} {'logs $':>6} {'$/M jobs':>8}",
    ]
    for job in est.jobs:
        weight = "" if job.name in est.mix and est.mix[job.name] > 0 else "  (not in mix)"
        lines.append(
            f"{job.name:<26} {job.batch_size:>5} {job.memory_mb:>5} {job.attempts:>8.3f} {job.sqs_requests:>8.3f} "
            f"{job.lambda_requests:>6.3f} {job.gb_seconds:>8.4f} {job.sqs_dollars:>6.3f} {job.lambda_dollars:>6.3f} "
            f"{job.logs_dollars:>6.3f} {job.per_million:>8.3f}{weight}"
        )
    lines += ["", f"Per million jobs of the mix: ${est.per_million:.3f}", "", "Fixed, per month:"]
    for item in est.fixed:
        lines.append(f"  {item.what:<36} ${item.dollars:>7.2f}  {item.detail}")
    lines.append(f"  {'total':<36} ${est.fixed_monthly:>7.2f}")
    return "\n".join(lines)


def as_json(est: Estimate) -> dict[str, object]:
    return {
        "assumptions": {k: getattr(est.assumptions, k) for k in Assumptions.__dataclass_fields__},
        "jobs": [
            {
                "job": j.name, "queue": j.queue, "batch_size": j.batch_size, "memory_mb": j.memory_mb,
                "attempts": j.attempts, "sqs_requests": j.sqs_requests, "lambda_requests": j.lambda_requests,
                "gb_seconds": j.gb_seconds, "log_bytes": j.log_bytes, "sqs_dollars_per_million": j.sqs_dollars,
                "lambda_dollars_per_million": j.lambda_dollars, "logs_dollars_per_million": j.logs_dollars,
                "dollars_per_million": j.per_million,
            }  # fmt: skip
            for j in est.jobs
        ],
        "mix": dict(est.mix),
        "dollars_per_million": est.per_million,
        "fixed_monthly": [{"what": f.what, "dollars": f.dollars, "detail": f.detail} for f in est.fixed],
        "fixed_monthly_total": est.fixed_monthly,
    }
