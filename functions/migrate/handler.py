"""Apply Conveyor's migrations and record the registry in the database, from inside the VPC.

Invoke once after each deploy (``aws lambda invoke --function-name conveyor-<stage>-migrate out.json``): in
``create`` mode the database sits in isolated subnets that `conveyor migrate` on a laptop cannot reach. Safe to run
any number of times, and concurrently: migrations take an advisory lock and skip what is applied.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from shared.database import connect
from shared.migrate import migrate, sync_registry
from shared.registry import default_registry

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "conveyor-migrate"))


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    registry = default_registry()
    with connect() as conn:
        result = migrate(conn)
        warnings = sync_registry(conn, registry)
    applied = [f"{m.component}/{m.version:04d}_{m.name}" for m in result.applied]
    logger.info("migrations applied", extra={"applied": applied, "jobs": len(registry)})
    for warning in warnings:  # outbox rows no function will take: an operator must decide their fate
        logger.error("outbox rows will never run", extra={"warning": warning})
    return {"applied": applied, "jobs": [job.name for job in registry], "warnings": warnings}
