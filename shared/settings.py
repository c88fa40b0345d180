"""Environment variables that configure Conveyor, named once here and imported by the runtime, the local runtime
and the CDK constructs, so the names the stack sets and the names the code reads cannot drift apart."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from shared.names import check_stage

STAGE = "CONVEYOR_STAGE"
DATABASE_URL = "CONVEYOR_DATABASE_URL"
DATABASE_URL_FALLBACK = "DATABASE_URL"
DB_SECRET_ARN = "CONVEYOR_DB_SECRET_ARN"
# Overrides the secret's host: the RDS Proxy endpoint, when there is one (the secret names the cluster).
DB_HOST = "CONVEYOR_DB_HOST"
# Overrides the secret's database name (RDS-managed master secrets hold only a username and a password).
DB_NAME = "CONVEYOR_DB_NAME"
# On AWS, the registry queue a function consumes (a function per queue; see shared.runtime.dispatch).
QUEUE = "CONVEYOR_QUEUE"
RELAY_MODE = "CONVEYOR_RELAY_MODE"
RELAY_DRAIN_SECONDS = "CONVEYOR_RELAY_DRAIN_SECONDS"
QUEUE_URLS = "CONVEYOR_QUEUE_URLS"
DLQ_URLS = "CONVEYOR_DLQ_URLS"
REGISTRY = "CONVEYOR_REGISTRY"

DEFAULT_REGISTRY = "shared.jobs:registry"


class SettingsError(ValueError):
    pass


def _json_map(name: str) -> dict[str, str]:
    raw = os.environ.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} must be a JSON object of queue label to URL: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SettingsError(f"{name} must be a JSON object of queue label to URL")
    return value


@dataclass(frozen=True)
class Settings:
    stage: str = "dev"
    database_url: str | None = None
    db_secret_arn: str | None = None
    db_host: str | None = None
    db_name: str | None = None
    queue_urls: dict[str, str] = field(default_factory=dict)
    dlq_urls: dict[str, str] = field(default_factory=dict)
    registry: str = DEFAULT_REGISTRY

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            stage=check_stage(os.environ.get(STAGE, "dev")),
            database_url=os.environ.get(DATABASE_URL) or os.environ.get(DATABASE_URL_FALLBACK),
            db_secret_arn=os.environ.get(DB_SECRET_ARN),
            db_host=os.environ.get(DB_HOST) or None,
            db_name=os.environ.get(DB_NAME) or None,
            queue_urls=_json_map(QUEUE_URLS),
            dlq_urls=_json_map(DLQ_URLS),
            registry=os.environ.get(REGISTRY, DEFAULT_REGISTRY),
        )
