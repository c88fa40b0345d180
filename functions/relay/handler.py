"""The outbox relay as a Lambda: started every minute, it drains the outbox for most of the minute.

The drain stops well before the function's own timeout so a run never dies mid-batch (which would only cause
duplicates, but costs a retry); the next scheduled run picks up from there.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger

from shared.database import connect
from shared.outbox.relay import Relay

DRAIN_SECONDS = float(os.environ.get("CONVEYOR_RELAY_DRAIN_SECONDS", "50"))
SAFETY_MARGIN_MS = 5_000

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "conveyor-relay"))
_relay: Relay | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _relay
    if _relay is None:
        _relay = Relay(connect, boto3.client("sqs"))
    budget = DRAIN_SECONDS
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        budget = min(budget, max(0.0, (context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS) / 1000))
    stats = _relay.drain(budget)
    logger.info("relay drained", extra={"published": stats.published, "failed": stats.failed, "cycles": stats.cycles})
    return {"published": stats.published, "failed": stats.failed, "cycles": stats.cycles}
