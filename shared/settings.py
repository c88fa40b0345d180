"""Environment variables that configure Conveyor, named once here and imported by the runtime, the local runtime
and the CDK constructs, so the names the stack sets and the names the code reads cannot drift apart."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
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
# The ops function (issue 14): each registry queue's event source mapping id, as JSON {label: uuid}, so pause/resume
# needs no lambda:ListEventSourceMappings; and the schedule group whose schedules pause/resume switches.
EVENT_SOURCE_MAPPINGS = "CONVEYOR_EVENT_SOURCE_MAPPINGS"
SCHEDULE_GROUP = "CONVEYOR_SCHEDULE_GROUP"
# The local API's static tokens: "TOKEN=scope,scope;TOKEN2=scope" (see shared.operations.local_server).
API_TOKENS = "CONVEYOR_API_TOKENS"
# The ops function: when GET /health calls the relay behind (seconds); the stack sets the relay-lag alarm's threshold.
RELAY_LAG_THRESHOLD = "CONVEYOR_RELAY_LAG_SECONDS"
# The ops function: the prefix the identity provider puts before each scope name (Cognito: "<resource server>/").
SCOPE_PREFIX = "CONVEYOR_SCOPE_PREFIX"
# The scopes the `conveyor` operations verbs act with (default: all), e.g. "jobs:read" for a look-only shell.
SCOPES = "CONVEYOR_SCOPES"

# The S3 bucket for rendered PDFs and packages (pdf.render, pdf.package): set by the stack on every function whose
# jobs' permissions name {documents_bucket} (infra.documents), and by the local runtime for its moto bucket.
DOCUMENTS_BUCKET = "CONVEYOR_DOCUMENTS_BUCKET"

# Where orders.digest sends the operations digest; on AWS the stack sets it from conveyor:opsEmail.
OPS_EMAIL = "CONVEYOR_OPS_EMAIL"
# Deployment settings a job may ask for in its registry entry (``JobSpec.environment``): the stack sets each one, from
# its configuration, on the functions of the jobs that name it, and on no other.
JOB_SETTINGS = frozenset({OPS_EMAIL})

DEFAULT_REGISTRY = "shared.jobs:registry"

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class SettingsError(ValueError):
    pass


def job_enabled_variable(job_name: str) -> str:
    """``CONVEYOR_JOB_<NAME>_ENABLED``: the per-job switch read when its schedule fires (``reservations.cleanup``
    -> ``CONVEYOR_JOB_RESERVATIONS_CLEANUP_ENABLED``)."""
    return f"CONVEYOR_JOB_{job_name.upper().replace('.', '_')}_ENABLED"


def job_enabled(job_name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a scheduled job's periods may run: true unless its variable says false (``false``/``0``/``no``/
    ``off``, any case). Any other value than those and ``true``/``1``/``yes``/``on`` is refused rather than
    guessed: a typo in a kill switch must not leave the job running."""
    name = job_enabled_variable(job_name)
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None:
        return True
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(
        f"{name}={raw!r} is not a boolean: use false (or 0, no, off) to disable job {job_name!r}, true (or 1, yes, "
        "on) or leave it unset to enable it"
    )


def json_map(name: str, what: str = "URL") -> dict[str, str]:
    """The environment variable ``name`` as a JSON object of queue label to ``what`` (empty when unset)."""
    raw = os.environ.get(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} must be a JSON object of queue label to {what}: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SettingsError(f"{name} must be a JSON object of queue label to {what}")
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
            queue_urls=json_map(QUEUE_URLS),
            dlq_urls=json_map(DLQ_URLS),
            registry=os.environ.get(REGISTRY, DEFAULT_REGISTRY),
        )
