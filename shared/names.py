"""Physical AWS names derived from registry names, in one place.

Job names are dotted (``email.send``) and queue names are short labels (``email-high``), but SQS queue names and
Lambda function names allow only letters, digits, ``-`` and ``_``. Every physical name is derived here, so the CDK
stacks, the relay, the handlers and the local runtime can never disagree about what a queue is called.
"""

from __future__ import annotations

import re

APP = "conveyor"
SQS_NAME_MAX = 80
LAMBDA_NAME_MAX = 64

JOB_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
QUEUE_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
STAGE_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")


class ResourceNameError(ValueError):
    """A registry or stage name that cannot become an AWS resource name."""


def slug(job_name: str) -> str:
    """``email.send`` -> ``email-send``: the resource-safe form of a job name.

    Job names cannot contain ``-`` (see ``JOB_NAME_RE``), so the mapping is one-to-one.
    """
    return job_name.replace(".", "-")


def module_name(job_name: str) -> str:
    """``email.send`` -> ``email_send``: the Python package under ``functions/`` for a job."""
    return job_name.replace(".", "_")


def _checked(name: str, limit: int, kind: str) -> str:
    if len(name) > limit:
        raise ResourceNameError(f"{kind} name {name!r} is {len(name)} characters; AWS allows at most {limit}")
    return name


def queue_resource_name(queue: str, *, stage: str) -> str:
    """The SQS queue name for a registry queue label, e.g. ``conveyor-dev-email-high``."""
    return _checked(f"{APP}-{stage}-{queue}", SQS_NAME_MAX - len("-dlq"), "SQS queue")


def dlq_resource_name(queue: str, *, stage: str) -> str:
    """The dead-letter queue name for a registry queue label, e.g. ``conveyor-dev-email-high-dlq``."""
    return _checked(f"{queue_resource_name(queue, stage=stage)}-dlq", SQS_NAME_MAX, "SQS queue")


# Functions that are not queue consumers; a registry queue may not take these labels, so names cannot collide.
SYSTEM_FUNCTIONS = frozenset({"relay", "schedule", "migrate", "ops"})


def consumer_function_name(queue: str, *, stage: str) -> str:
    """The Lambda that consumes a registry queue (one per queue), e.g. ``conveyor-dev-email-high``."""
    return _checked(f"{APP}-{stage}-{queue}", LAMBDA_NAME_MAX, "Lambda function")


def system_function_name(role: str, *, stage: str) -> str:
    """The relay, the schedule target and other Conveyor functions, e.g. ``conveyor-dev-relay``."""
    if role not in SYSTEM_FUNCTIONS:
        raise ResourceNameError(f"unknown system function {role!r}; known: {', '.join(sorted(SYSTEM_FUNCTIONS))}")
    return _checked(f"{APP}-{stage}-{role}", LAMBDA_NAME_MAX, "Lambda function")


def queue_label_from_resource(resource_name: str, *, stage: str) -> str | None:
    """Reverse of :func:`queue_resource_name` (and of the DLQ name): the registry label, or None if foreign."""
    prefix = f"{APP}-{stage}-"
    if not resource_name.startswith(prefix):
        return None
    label = resource_name[len(prefix):]
    return label.removesuffix("-dlq")


def check_stage(stage: str) -> str:
    if not STAGE_RE.match(stage):
        raise ResourceNameError(
            f"stage {stage!r} is invalid: use 1-16 lowercase letters or digits, starting with a letter (e.g. 'dev', 'prod')"
        )
    return stage
