"""Physical AWS names derived from registry names, in one place.

Job names are dotted (``email.send``) and queue names are short labels (``email-high``), but SQS queue names and
Lambda function names allow only letters, digits, ``-`` and ``_``. Every physical name is derived here, so the CDK
stacks, the relay, the handlers and the local runtime can never disagree about what a queue is called.

The registry calls :func:`check_queue_label` and :func:`schedule_name` for every job, so a name that would collide
with another (``jobs-dlq`` is the DLQ of ``jobs``; ``schedule-dlq`` is the stack's own) or exceed an AWS limit for
some stage fails when the registry loads, naming the job, rather than at synth or deploy.
"""

from __future__ import annotations

import re

APP = "conveyor"
SQS_NAME_MAX = 80
LAMBDA_NAME_MAX = 64
SCHEDULE_NAME_MAX = 64  # EventBridge Scheduler
STAGE_MAX = 16
DLQ_SUFFIX = "-dlq"

JOB_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
QUEUE_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]*[a-z0-9])?$")
STAGE_RE = re.compile(rf"^[a-z][a-z0-9]{{0,{STAGE_MAX - 1}}}$")
# The longest label whose every name fits with the longest stage: conveyor-<stage>-<label> as a Lambda function is
# the tightest (SQS allows 80 with "-dlq"), so a registry that synthesizes for "dev" also does for any other stage.
QUEUE_LABEL_MAX = LAMBDA_NAME_MAX - len(f"{APP}--") - STAGE_MAX


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
    return _checked(f"{queue_resource_name(queue, stage=stage)}{DLQ_SUFFIX}", SQS_NAME_MAX, "SQS queue")


# The stack's own queues, named like registry queues; labels ending in DLQ_SUFFIX are refused, so none can take these.
SCHEDULE_DLQ = f"schedule{DLQ_SUFFIX}"


def schedule_dlq_resource_name(*, stage: str) -> str:
    """Where EventBridge Scheduler and the schedule function put deliveries that failed: ``conveyor-dev-schedule-dlq``."""
    return _checked(f"{APP}-{stage}-{SCHEDULE_DLQ}", SQS_NAME_MAX, "SQS queue")


# Functions that are not queue consumers; a registry queue may not take these labels, so names cannot collide.
SYSTEM_FUNCTIONS = frozenset({"relay", "schedule", "migrate", "ops"})


def consumer_function_name(queue: str, *, stage: str) -> str:
    """The Lambda that consumes a registry queue (one per queue), e.g. ``conveyor-dev-email-high``."""
    return _checked(f"{APP}-{stage}-{queue}", LAMBDA_NAME_MAX, "Lambda function")


def check_queue_label(label: str) -> str:
    """Refuse a registry queue label whose physical names could collide with another's or exceed an AWS limit."""
    if not isinstance(label, str) or not QUEUE_NAME_RE.match(label):
        raise ResourceNameError(f"queue {label!r} is invalid: use lowercase letters, digits and '-' (e.g. 'email-high')")
    if label in SYSTEM_FUNCTIONS:
        raise ResourceNameError(f"queue {label!r} is reserved for Conveyor's own {label} function; pick another name")
    if label.endswith(DLQ_SUFFIX):
        owner = (
            "the stack's own schedule DLQ" if label == SCHEDULE_DLQ
            else f"the DLQ of queue {label.removesuffix(DLQ_SUFFIX)!r}"
        )  # fmt: skip
        raise ResourceNameError(
            f"queue {label!r} ends in {DLQ_SUFFIX!r}, which names dead-letter queues: {APP}-<stage>-{label} is "
            f"{owner}; pick a label that does not end in {DLQ_SUFFIX!r}"
        )
    if len(label) > QUEUE_LABEL_MAX:
        raise ResourceNameError(
            f"queue {label!r} is {len(label)} characters; at most {QUEUE_LABEL_MAX} fit in a Lambda function name "
            f"{APP}-<stage>-<queue> ({LAMBDA_NAME_MAX}) with a stage of up to {STAGE_MAX}"
        )
    return label


# Schedules of the stack's own, in the same schedule group as the registry's.
SYSTEM_SCHEDULES = frozenset({"relay"})


def schedule_name(job_name: str) -> str:
    """The EventBridge Scheduler schedule of a scheduled job: its slug (``bills.monthly`` -> ``bills-monthly``)."""
    name = slug(job_name)
    if name in SYSTEM_SCHEDULES:
        raise ResourceNameError(f"schedule {name!r} is the {name}'s own schedule; a scheduled job needs another name")
    if len(name) > SCHEDULE_NAME_MAX:
        raise ResourceNameError(
            f"schedule name {name!r} (the job's name) is {len(name)} characters; EventBridge Scheduler allows at "
            f"most {SCHEDULE_NAME_MAX}"
        )
    return name


def schedule_group_name(*, stage: str) -> str:
    """The EventBridge Scheduler group holding every schedule of a stage, e.g. ``conveyor-dev``."""
    return _checked(f"{APP}-{stage}", SCHEDULE_NAME_MAX, "schedule group")


def system_schedule_name(role: str) -> str:
    """The schedule that starts one of Conveyor's own functions, e.g. ``relay``."""
    if role not in SYSTEM_SCHEDULES:
        raise ResourceNameError(f"unknown system schedule {role!r}; known: {', '.join(sorted(SYSTEM_SCHEDULES))}")
    return role


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
    return label.removesuffix(DLQ_SUFFIX)


def check_stage(stage: str) -> str:
    if not STAGE_RE.match(stage):
        raise ResourceNameError(
            f"stage {stage!r} is invalid: use 1-16 lowercase letters or digits, starting with a letter (e.g. 'dev', 'prod')"
        )
    return stage
