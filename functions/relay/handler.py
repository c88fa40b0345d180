"""The outbox relay as a Lambda, started every minute by EventBridge Scheduler.

Two modes (``CONVEYOR_RELAY_MODE``):

* ``resident`` (default): each run keeps polling the outbox until its drain budget (set by the stack a little past
  the next run's start) runs out, polling 1 ms after a cycle that found work and doubling to 100 ms while idle
  (``Relay.drain(stay=True)``), so commit → SQS takes milliseconds under load without an always-on server. Cost:
  about one function busy all the time (see ``infra/relay.py``).
* ``on-demand``: each run publishes what is due and returns. Almost free when idle, but a job committed just after
  a run waits for the next one (up to a minute).

No send starts after the drain's end, and the function's timeout leaves room past it for one send's worst case
(``SEND_BUDGET``), so a run never dies mid-publish (which would only cause duplicates, after the lease). A drain
survives database and SQS outages, retrying with backoff until its budget ends. After the drain it reports the
relay lag (age of the oldest due job) and the rows in ``conveyor.outbox_dead`` as metrics for their alarms.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from shared import settings as env
from shared.database import connect
from shared.outbox.relay import Relay, relay_client_config

MODES = ("resident", "on-demand")
SAFETY_MARGIN_MS = 5_000

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "conveyor-relay"))
# The lag alarm matches these metrics by namespace and the service dimension the stack sets.
metrics = EphemeralMetrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Conveyor"),
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "conveyor-relay"),
)
_relay: Relay | None = None


def relay_mode() -> str:
    mode = os.environ.get(env.RELAY_MODE, "resident")
    if mode not in MODES:
        raise ValueError(f"{env.RELAY_MODE}={mode!r} is not one of {', '.join(MODES)}")
    return mode


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _relay
    mode = relay_mode()
    if _relay is None:
        _relay = Relay(connect, boto3.client("sqs", config=relay_client_config()))
    budget = float(os.environ.get(env.RELAY_DRAIN_SECONDS, "50"))
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        budget = min(budget, max(0.0, (context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS) / 1000))
    stats = _relay.drain(budget, stay=mode == "resident")
    try:
        lag_seconds, due = _relay.lag()
        dead_rows: int | None = _relay.dead_count()
    except Exception:  # noqa: BLE001 - no lag datapoint: the lag alarm treats a missing one as breaching
        logger.exception("relay: could not read the outbox lag")
        lag_seconds, due, dead_rows = None, None, None
    logger.info(
        "relay drained",
        extra={"mode": mode, "published": stats.published, "failed": stats.failed, "dead": stats.dead,
               "cycles": stats.cycles, "cycle_errors": stats.cycle_errors,
               "lag_seconds": None if lag_seconds is None else round(lag_seconds, 3), "due": due,
               "dead_rows": dead_rows, "errors": stats.errors[:3]},
    )  # fmt: skip
    if not is_metrics_disabled():
        metrics.add_metric(name="RelayPublished", unit=MetricUnit.Count, value=stats.published)
        metrics.add_metric(name="RelayPublishFailed", unit=MetricUnit.Count, value=stats.failed)
        metrics.add_metric(name="RelayCycleErrors", unit=MetricUnit.Count, value=stats.cycle_errors)
        metrics.add_metric(name="RelayDeadLettered", unit=MetricUnit.Count, value=stats.dead)
        if lag_seconds is not None:
            metrics.add_metric(name="OutboxLagSeconds", unit=MetricUnit.Seconds, value=lag_seconds)
            metrics.add_metric(name="OutboxDue", unit=MetricUnit.Count, value=due or 0)
            metrics.add_metric(name="OutboxDeadRows", unit=MetricUnit.Count, value=dead_rows or 0)
        metrics.flush_metrics()
    return {
        "published": stats.published, "failed": stats.failed, "dead": stats.dead, "cycles": stats.cycles,
        "cycle_errors": stats.cycle_errors, "lag_seconds": lag_seconds, "dead_rows": dead_rows,
    }  # fmt: skip
