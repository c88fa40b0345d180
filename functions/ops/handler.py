"""The operations API as a Lambda, behind an API Gateway HTTP API (payload format 2.0) with a JWT authorizer.

API Gateway checks the token and passes its claims; :mod:`shared.operations.api` reads the caller from them and
serves every route (and the dashboard page) from the one resolver ``conveyor dev`` also runs. The service is built
on the first request that needs it, once per container, from the environment the stack sets (database, stage,
event source mappings, schedule group), so a cold start that only serves the page never opens a connection.

Logs are JSON with the API Gateway request id as the correlation id, so one request's lines can be found together.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from shared.operations.api import build_app
from shared.operations.service import Operations, build_operations
from shared.registry import default_registry
from shared.settings import Settings

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "conveyor-ops"))


def _operations() -> Operations:
    return build_operations(default_registry(), Settings.from_env(), local=False)


app = build_app(_operations, logger=logger)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = (event.get("requestContext") if isinstance(event, dict) else None) or {}
    logger.set_correlation_id(request.get("requestId"))
    logger.append_keys(method=(request.get("http") or {}).get("method"), path=event.get("rawPath"))
    return app.resolve(event, context)
