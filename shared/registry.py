"""The job registry: the single list of jobs that the runtime, the local runtime and the CDK stacks all read.

A :class:`JobSpec` says everything about a job that is not its code: the payload model, which queue(s) carry it,
how it is retried, how long it may run, how it is batched and how many run at once, and when it is scheduled.
Specs are validated when they are built, so a bad setting fails at import time with a message that names the job
and the setting, not at deploy time or at 3 a.m.

This module deliberately imports neither psycopg nor boto3: infrastructure code and the CLI load it cheaply.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, ValidationError

from shared import settings as env
from shared.integrations import INTEGRATIONS, secret_name
from shared.names import JOB_NAME_RE, ResourceNameError, check_queue_label, module_name, schedule_name, slug
from shared.schedule import Schedule, ScheduleError, parse_schedule
from shared.scheduled.policy import MissedPolicy, OverlapPolicy

# SQS and Lambda limits that registry settings must respect (checked here so synth and deploy never see them).
SQS_MAX_VISIBILITY_SECONDS = 12 * 60 * 60
SQS_MAX_RECEIVE_COUNT = 1000
SQS_MAX_BATCH_SIZE = 10
SQS_MAX_BATCHING_WINDOW_SECONDS = 300
LAMBDA_MAX_TIMEOUT_SECONDS = 900
ESM_MIN_CONCURRENCY = 2
ESM_MAX_CONCURRENCY = 1000
# AWS advises a maxReceiveCount of at least 5 on a queue that feeds Lambda: a throttled invocation hands its batch
# back and each message still counts a receive.
SQS_ADVISED_MIN_RECEIVE_COUNT = 5
# Receives on top of that which are not runs: throttled invocations, records left unstarted near a deadline.
RECEIVE_COUNT_MARGIN = 5
# Lambda's SQS trigger keeps a message invisible for the queue's visibility timeout; AWS advises at least 6x the
# function timeout so a throttled or retried batch does not reappear while still being processed.
VISIBILITY_TIMEOUT_FACTOR = 6
# One invocation carries up to batch_size records, run one after another. Each record may take its job's timeout,
# plus this margin to report its outcome (a DLQ copy or a retry delay: a few SQS calls); the runtime starts a record
# only while that much of the invocation is left.
RECORD_MARGIN_SECONDS = 5
# What an invocation needs besides its records: reading the event, returning the batch response.
INVOCATION_MARGIN_SECONDS = 5
# The longest job timeout: one record, with its margins, in Lambda's longest invocation.
MAX_JOB_TIMEOUT_SECONDS = LAMBDA_MAX_TIMEOUT_SECONDS - RECORD_MARGIN_SECONDS - INVOCATION_MARGIN_SECONDS
# Seconds kept between a retry delay and SQS's 12-hour limit, for the clocks of SQS and Lambda to differ.
RETRY_DELAY_SAFETY_SECONDS = 10
# How long every job queue and its DLQ keep a message (SQS's maximum; infra/job_queue.py sets it). Retention keeps a
# dead or cancelled job's ledger row at least this long, since its message may still be waiting in a queue.
QUEUE_RETENTION_DAYS = 14
# Ledger retention a job may set (keep_succeeded, keep_failed): whole days, at least one, at most a century.
MAX_KEEP_DAYS = 36500


class RegistryError(ValueError):
    """A job definition that cannot work, or a lookup of a job that does not exist."""


class UnknownJobError(RegistryError, KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown job {name!r}; registered jobs: {', '.join(sorted(known)) or '(none)'}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class JobPayload(BaseModel):
    """Base for payload models: immutable, and unknown fields are an error rather than silently dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def wire_name_problems(model: type[BaseModel], path: str = "", seen: frozenset[type] = frozenset()) -> list[str]:
    """Fields whose name on the wire (what ``model_dump_json(by_alias=True)`` writes, and so what the relay sends)
    is not a name the model accepts when the handler validates the body. Such a payload would be enqueued fine and
    dead-lettered by its handler (``PayloadInvalid: from: Field required``)."""
    import typing

    problems: list[str] = []
    config = model.model_config
    by_name = bool(config.get("populate_by_name") or config.get("validate_by_name"))
    for name, field in model.model_fields.items():
        sent = field.serialization_alias or field.alias or name
        accepted = field.validation_alias
        if accepted is not None:
            choices = accepted.choices if isinstance(accepted, AliasChoices) else [accepted]
            names = {c if isinstance(c, str) else (c.path[0] if isinstance(c, AliasPath) and len(c.path) == 1 else None) for c in choices}
            ok = sent in names or (by_name and sent == name)
        else:
            ok = sent == (field.alias or name) or (by_name and sent == name)
        if not ok:
            problems.append(f"{path}{name} is sent as {sent!r} but read back only as {accepted or field.alias or name!r}")
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
                problems += wire_name_problems(annotation, f"{path}{name}.", seen | {model})
            stack.extend(typing.get_args(annotation))
    return problems


class Backoff(StrEnum):
    EXPONENTIAL = "exponential"
    FIXED = "fixed"


def function_timeout(timeout: int, batch_size: int) -> int:
    """The consuming function's timeout: room for every record of a full batch to use its whole ``timeout``, with
    the margins. The one place it is derived (queue settings, the CDK function and the local poller read it)."""
    return batch_size * (timeout + RECORD_MARGIN_SECONDS) + INVOCATION_MARGIN_SECONDS


def max_retry_delay(function_timeout: int, batch_window: int) -> int:
    """The longest retry delay SQS can hold: it hides a message at most 12 h after the receive, and the runtime
    sets the delay up to a batching window (gathering the batch) plus a function timeout (running it) later."""
    return SQS_MAX_VISIBILITY_SECONDS - function_timeout - batch_window - RETRY_DELAY_SAFETY_SECONDS


def visibility_timeout(timeout: int, batch_window: int) -> int:
    """Six times the function timeout (:func:`function_timeout`) plus the batching window, as AWS advises for SQS
    event sources: a message must not reappear while a batch that holds it may still be gathering or running (with
    Lambda's own retries)."""
    return timeout * VISIBILITY_TIMEOUT_FACTOR + batch_window


def max_receive_count(max_attempts: int) -> int:
    """The redrive policy's maxReceiveCount: ``max(max_attempts, 5)`` plus a margin, so throttled and unstarted
    receives never move a message to the DLQ before its attempts ran. The handler dead-letters a job itself when
    its ``max_attempts``-th run fails; the redrive policy is the backstop for runs that never report back."""
    return max(max_attempts, SQS_ADVISED_MIN_RECEIVE_COUNT) + RECEIVE_COUNT_MARGIN


# What a permission's resources and condition values may name; the CDK app fills each in for its stack.
PERMISSION_PLACEHOLDERS = frozenset({"partition", "region", "account", "stage", "documents_bucket", "email_from"})
# The one resource that is not an ARN: what IAM requires of actions without resource-level permissions.
ANY_RESOURCE = "*"


def placeholders_in(text: str) -> set[str]:
    """The ``{name}`` placeholders in ``text`` (``{{`` and ``}}`` are literal braces)."""
    import string

    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise RegistryError(f"AwsPermission text {text!r} has unbalanced braces: {exc}") from None


@dataclass(frozen=True)
class AwsPermission:
    """AWS actions a job's handler calls beyond its own queue and the database, e.g. SES for ``email.send``.

    Resources and condition values may use these placeholders, filled in by the CDK app for its stack:
    ``{partition}``, ``{region}``, ``{account}``; ``{stage}`` (the ``conveyor:stage``, e.g. for the Secrets Manager
    secrets ``conveyor/{stage}/<name>``); ``{documents_bucket}`` (the name of the stack's documents bucket, which
    the stack creates only when a permission names it, and whose name it gives the function as
    ``CONVEYOR_DOCUMENTS_BUCKET``); ``{email_from}`` (the configured sender, ``conveyor:emailFrom``). Any other
    ``{name}`` is refused here rather than at synth.

    Actions must be exact (``ses:SendEmail``): wildcards are refused, so every function keeps least privilege.
    Resources must be ARNs or ARN patterns (``identity/*``). The one exception is an action that has no
    resource-level permissions at all (``sns:Publish`` to a phone number: a phone number has no ARN), for which IAM
    accepts only ``Resource: "*"``: ``resources=("*",)`` is allowed only with ``any_resource_reason`` saying why no
    ARN exists, and the stack acknowledges cdk-nag's AwsSolutions-IAM5 finding with that reason. ``denied_resources``
    (only with ``"*"``) narrows such a grant back down: the stack adds a Deny statement for the same actions on them
    (``sns:Publish`` on every topic ARN, so the role can text a phone but not publish to the account's topics).
    """

    actions: tuple[str, ...]
    resources: tuple[str, ...]
    reason: str = ""
    # IAM conditions as (operator, key, value) triples, e.g. ("StringEquals", "ses:FromAddress", "{email_from}").
    conditions: tuple[tuple[str, str, str], ...] = ()
    # Why the actions need Resource "*" (required with it, refused without it).
    any_resource_reason: str = ""
    # ARN patterns the actions are denied on, when the grant is on "*".
    denied_resources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", tuple(self.actions))
        object.__setattr__(self, "resources", tuple(self.resources))
        object.__setattr__(self, "conditions", tuple(tuple(c) for c in self.conditions))
        object.__setattr__(self, "denied_resources", tuple(self.denied_resources))
        if not all(len(c) == 3 and all(isinstance(part, str) and part for part in c) for c in self.conditions):
            raise RegistryError("AwsPermission conditions must be (operator, key, value) triples of text")
        if not self.actions or not self.resources:
            raise RegistryError("AwsPermission needs at least one action and one resource")
        for action in self.actions:
            service, _, name = action.partition(":")
            if not service or not name or "*" in action:
                raise RegistryError(f"AwsPermission action {action!r} must be an exact 'service:Action' (no wildcards)")
        reason = self.any_resource_reason.strip()
        if ANY_RESOURCE in self.resources:
            if not reason:
                raise RegistryError(
                    f"AwsPermission for {', '.join(self.actions)}: resources must name ARNs (patterns like "
                    "'identity/*' are fine), not '*'; an action with no resource-level permissions may use '*' only "
                    "with any_resource_reason saying why no ARN exists"
                )
            if self.resources != (ANY_RESOURCE,):
                raise RegistryError(
                    f"AwsPermission for {', '.join(self.actions)}: '*' already covers {', '.join(r for r in self.resources if r != ANY_RESOURCE)}; "
                    "give '*' alone"
                )
        elif reason:
            raise RegistryError(
                f"AwsPermission for {', '.join(self.actions)}: any_resource_reason is only for resources=('*',); "
                "these resources are ARNs, which need no such reason"
            )
        elif self.denied_resources:
            raise RegistryError(
                f"AwsPermission for {', '.join(self.actions)}: denied_resources narrow a grant on '*'; with ARNs, "
                "grant only the ARNs meant"
            )
        if ANY_RESOURCE in self.denied_resources:
            raise RegistryError(f"AwsPermission for {', '.join(self.actions)}: denying '*' would deny everything it grants")
        unknown = self.placeholders() - PERMISSION_PLACEHOLDERS
        if unknown:
            raise RegistryError(
                f"AwsPermission for {', '.join(self.actions)}: unknown placeholder(s) {', '.join(sorted(unknown))}; "
                f"the stack fills in {', '.join(sorted(PERMISSION_PLACEHOLDERS))}"
            )

    @property
    def any_resource(self) -> bool:
        """Whether this grants the actions on ``"*"`` (see ``any_resource_reason``)."""
        return self.resources == (ANY_RESOURCE,)

    def placeholders(self) -> set[str]:
        """Every ``{name}`` this permission's resources and condition values use."""
        texts = (*self.resources, *self.denied_resources, *(value for _, _, value in self.conditions))
        return set().union(*(placeholders_in(text) for text in texts))


def integration_secret(name: str) -> AwsPermission:
    """Reading an integration's token from its Secrets Manager secret ``conveyor/<stage>/<name>``
    (``shared.integrations.secret_name``; the ``-??????`` matches the '-' and six random characters Secrets Manager
    appends to every secret's ARN, and nothing longer: ``-*`` would also grant ``conveyor/<stage>/<name>-admin``).
    Granted for each integration a job declares (:attr:`JobSpec.granted_permissions`), never written by hand."""
    return AwsPermission(
        actions=("secretsmanager:GetSecretValue",),
        resources=(f"arn:{{partition}}:secretsmanager:{{region}}:{{account}}:secret:{secret_name('{stage}', name)}-??????",),
        reason=f"reads the {name} integration's token (secret {secret_name('<stage>', name)})",
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart a failing job is attempted.

    ``max_attempts`` counts every run, the first included: 1 means never retried. The delay after failed attempt
    ``n`` is ``base_delay`` (fixed) or ``base_delay * 2 ** (n - 1)`` (exponential), capped at ``max_delay``; with
    ``jitter`` a random value in ``[delay / 2, delay]`` is used instead, so a burst of failures does not come back
    as a burst (the "equal jitter" scheme).
    """

    max_attempts: int = 5
    backoff: Backoff = Backoff.EXPONENTIAL
    base_delay: int = 10
    max_delay: int = 15 * 60
    jitter: bool = True

    def __post_init__(self) -> None:
        most = SQS_MAX_RECEIVE_COUNT - RECEIVE_COUNT_MARGIN
        if not 1 <= self.max_attempts <= most:
            raise RegistryError(
                f"max_attempts must be between 1 and {most} (SQS's maxReceiveCount limit of {SQS_MAX_RECEIVE_COUNT} "
                f"less {RECEIVE_COUNT_MARGIN} receives kept for throttling), got {self.max_attempts}"
            )
        object.__setattr__(self, "backoff", Backoff(self.backoff))
        if self.base_delay < 0:
            raise RegistryError(f"base_delay must be >= 0 seconds, got {self.base_delay}")
        if not self.base_delay <= self.max_delay <= SQS_MAX_VISIBILITY_SECONDS:
            raise RegistryError(
                f"max_delay must be between base_delay ({self.base_delay}) and {SQS_MAX_VISIBILITY_SECONDS} seconds "
                f"(SQS's longest visibility timeout), got {self.max_delay}"
            )

    def delay_after(self, attempt: int, *, rand: Callable[[], float] = random.random) -> int:
        """Seconds to wait before the attempt that follows failed attempt ``attempt`` (1-based)."""
        if self.backoff is Backoff.FIXED:
            delay = self.base_delay
        else:
            delay = self.base_delay * 2 ** min(max(attempt - 1, 0), 32)
        delay = min(delay, self.max_delay)
        if self.jitter and delay > 0:
            delay = delay / 2 + rand() * delay / 2
        return int(round(delay))


@dataclass(frozen=True)
class JobSpec:
    """One job. See the module docstring; every field is checked in ``__post_init__``.

    ``queue`` is where the job goes by default. ``queues`` lists other queues the job may be sent to, and ``route``
    picks one from the payload (e.g. password resets on ``email-high``). Several jobs may share a queue.
    ``schedule`` is an EventBridge Scheduler expression (``cron(...)``, ``rate(...)``) evaluated in ``timezone``;
    each scheduled run gets ``schedule_payload`` as its payload. For scheduled jobs only: ``overlap`` (``skip`` or
    ``allow``, :class:`~shared.scheduled.policy.OverlapPolicy`) says whether a period may start while an earlier run
    is live, ``missed`` (``once`` or ``skip``, :class:`~shared.scheduled.policy.MissedPolicy`) what a fire arriving
    after the next period began does, and ``pre_check`` is an optional callable ``pre_check(ctx) -> str | None`` run
    under the job's schedule lock before each period is enqueued (``ctx`` is a
    :class:`shared.scheduled.fire.PreCheckContext`): a returned reason skips the period and is recorded.
    ``integrations`` (and ``optional_integrations``) name the HTTP integrations the job calls, so the stack gives its
    function their URLs and token secrets; ``environment`` names deployment settings it reads (``CONVEYOR_OPS_EMAIL``).
    """

    name: str
    payload: type[BaseModel]
    queue: str
    queues: tuple[str, ...] = ()
    route: Callable[[Any], str] | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: int = 30
    memory: int = 256
    batch_size: int = 10
    concurrency: int = 5
    schedule: str | None = None
    timezone: str = "UTC"
    schedule_payload: Mapping[str, Any] = field(default_factory=dict)
    handler: str | None = None
    description: str = ""
    # Seconds the event source may wait to fill a batch (Lambda's MaximumBatchingWindowInSeconds): fewer, fuller
    # invocations for high-volume jobs, at the price of that much latency.
    batch_window: int = 0
    permissions: tuple[AwsPermission, ...] = ()
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    missed: MissedPolicy = MissedPolicy.ONCE
    # A callable, not a database object: the registry must load without psycopg (the CDK app, the CLI).
    pre_check: Callable[[Any], str | None] | None = None
    # Days the run ledger keeps this job's finished rows (``conveyor.retention``): succeeded, skipped and cancelled
    # ones, and failed and dead ones. None: the retention job's defaults (14 and 30).
    keep_succeeded: int | None = None
    keep_failed: int | None = None
    # The HTTP integrations (``shared.integrations.INTEGRATIONS``) the job calls. The stack gives its function the
    # integration's URL (``CONVEYOR_<NAME>_URL``, from ``conveyor:integrations``; synth stops without one) and read
    # access to its token's secret ``conveyor/<stage>/<name>``: see :attr:`granted_permissions`.
    integrations: tuple[str, ...] = ()
    # Integrations the job calls only when configured (``sms.send`` uses SNS unless an SMS gateway URL is set): the
    # same secret access, and the URL when one is configured, but no URL is required.
    optional_integrations: tuple[str, ...] = ()
    # Deployment settings the job's code reads from its environment, which the stack fills in from configuration
    # on this job's function only (``shared.settings.JOB_SETTINGS``, e.g. ``CONVEYOR_OPS_EMAIL``).
    environment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise RegistryError(f"job {self.name!r}: {message}")

        if not isinstance(self.name, str) or not JOB_NAME_RE.match(self.name):
            raise RegistryError(
                f"job name {self.name!r} is invalid: use lowercase dotted words of letters, digits and '_' "
                "(e.g. 'email.send', 'bills.monthly')"
            )
        if not (isinstance(self.payload, type) and issubclass(self.payload, BaseModel)):
            fail(f"payload must be a pydantic model class, got {self.payload!r}")
        config = self.payload.model_config
        if config.get("extra") != "forbid" or not config.get("frozen"):
            fail(
                f"payload model {self.payload.__name__} must be frozen with extra='forbid' "
                "(subclass shared.registry.JobPayload)"
            )
        wire = wire_name_problems(self.payload)
        if wire:
            fail(
                f"payload model {self.payload.__name__} cannot read back what it sends: {'; '.join(wire)}. Use "
                "alias= (one name both ways) or make validation_alias accept the serialized name"
            )
        object.__setattr__(self, "queues", tuple(self.queues))
        for queue in self.all_queues:
            try:
                check_queue_label(queue)  # pattern, reserved names, collisions with DLQ names, length for any stage
            except ResourceNameError as exc:
                fail(str(exc))
        if len(set(self.all_queues)) != len(self.all_queues):
            fail(f"queues list {self.queue!r} more than once: {self.all_queues}")
        if self.route is not None and not self.queues:
            fail("route is set but no other queues are listed in queues=; a route can only pick the default queue")
        if not 1 <= self.timeout <= MAX_JOB_TIMEOUT_SECONDS:
            fail(
                f"timeout must be between 1 and {MAX_JOB_TIMEOUT_SECONDS} seconds (Lambda's {LAMBDA_MAX_TIMEOUT_SECONDS} "
                f"less Conveyor's margins for reporting the outcome), got {self.timeout}"
            )
        if not 128 <= self.memory <= 10240:
            fail(f"memory must be between 128 and 10240 MB, got {self.memory}")
        if not 0 <= self.batch_window <= SQS_MAX_BATCHING_WINDOW_SECONDS:
            fail(f"batch_window must be between 0 and {SQS_MAX_BATCHING_WINDOW_SECONDS} seconds, got {self.batch_window}")
        object.__setattr__(self, "permissions", tuple(self.permissions))
        if not all(isinstance(p, AwsPermission) for p in self.permissions):
            fail("permissions must be AwsPermission values")
        for setting in ("integrations", "optional_integrations", "environment"):
            if isinstance(getattr(self, setting), str):
                fail(f"{setting} must be a tuple of names, got the string {getattr(self, setting)!r}")
            object.__setattr__(self, setting, tuple(getattr(self, setting)))
        for setting in ("integrations", "optional_integrations"):
            unknown = [name for name in getattr(self, setting) if name not in INTEGRATIONS]
            if unknown:
                fail(f"{setting} names unknown integration(s) {', '.join(map(repr, unknown))}; known: {', '.join(INTEGRATIONS)}")
        called = (*self.integrations, *self.optional_integrations)
        if len(set(called)) != len(called):
            fail(f"integrations and optional_integrations list an integration more than once: {called}")
        unknown = [name for name in self.environment if name not in env.JOB_SETTINGS]
        if unknown:
            fail(
                f"environment names {', '.join(map(repr, unknown))}, which the stack does not set; it sets "
                f"{', '.join(sorted(env.JOB_SETTINGS))}"
            )
        if not 1 <= self.batch_size <= SQS_MAX_BATCH_SIZE:
            fail(f"batch_size must be between 1 and {SQS_MAX_BATCH_SIZE}, got {self.batch_size}")
        if self.concurrency < ESM_MIN_CONCURRENCY:
            fail(
                f"concurrency must be at least {ESM_MIN_CONCURRENCY}: SQS event sources cannot cap concurrency lower "
                f"(MaximumConcurrency minimum is 2), got {self.concurrency}; for strictly one-at-a-time work use a "
                "dedup key or a lock in the handler"
            )
        if self.concurrency > ESM_MAX_CONCURRENCY:
            fail(f"concurrency must be at most {ESM_MAX_CONCURRENCY}, got {self.concurrency}")
        # A whole batch must fit in one invocation: otherwise Lambda kills it midway and every record comes back,
        # the ones that succeeded included.
        needed = function_timeout(self.timeout, self.batch_size)
        if needed > LAMBDA_MAX_TIMEOUT_SECONDS:
            room = LAMBDA_MAX_TIMEOUT_SECONDS - INVOCATION_MARGIN_SECONDS
            fail(
                f"batch_size {self.batch_size} x timeout {self.timeout} s needs a {needed} s function timeout "
                f"(each record's timeout + {RECORD_MARGIN_SECONDS} s, + {INVOCATION_MARGIN_SECONDS} s), over "
                f"Lambda's {LAMBDA_MAX_TIMEOUT_SECONDS} s; use batch_size <= {room // (self.timeout + RECORD_MARGIN_SECONDS)} "
                f"or timeout <= {room // self.batch_size - RECORD_MARGIN_SECONDS}"
            )
        if visibility_timeout(needed, self.batch_window) > SQS_MAX_VISIBILITY_SECONDS:
            fail(f"timeout {self.timeout}s needs a visibility timeout above SQS's 12-hour maximum")
        longest = max_retry_delay(needed, self.batch_window)
        if self.retry.max_delay > longest:
            fail(
                f"retry max_delay {self.retry.max_delay} s is longer than SQS can hide a message: at most 12 h from "
                f"its receive, which may be {needed + self.batch_window} s before the retry is set (batching window "
                f"+ function timeout); use max_delay <= {longest}"
            )
        for setting in ("keep_succeeded", "keep_failed"):
            days = getattr(self, setting)
            if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_KEEP_DAYS):
                fail(f"{setting} must be a whole number of days from 1 to {MAX_KEEP_DAYS} (or None for the default), got {days!r}")
        if self.handler is not None and ":" in self.handler:
            fail(f"handler {self.handler!r} must be a module path like 'functions.email_send.handler'")
        for setting, policy in (("overlap", OverlapPolicy), ("missed", MissedPolicy)):
            try:
                object.__setattr__(self, setting, policy(getattr(self, setting)))
            except ValueError:
                fail(f"{setting} must be one of {', '.join(p.value for p in policy)}, got {getattr(self, setting)!r}")
        if self.pre_check is not None and not callable(self.pre_check):
            fail(f"pre_check must be a callable pre_check(ctx) -> str | None, got {self.pre_check!r}")
        if self.schedule is None:
            if (
                self.timezone != "UTC" or self.schedule_payload or self.pre_check is not None
                or self.overlap is not OverlapPolicy.SKIP or self.missed is not MissedPolicy.ONCE
            ):
                fail("timezone, schedule_payload, overlap, missed and pre_check only apply to scheduled jobs; set schedule= too")
        else:
            try:
                parse_schedule(self.schedule, self.timezone)
            except ScheduleError as exc:
                fail(f"bad schedule: {exc}")
            try:
                schedule_name(self.name)
            except ResourceNameError as exc:
                fail(str(exc))
            try:
                self.payload.model_validate(dict(self.schedule_payload))
            except ValidationError as exc:
                fail(f"schedule_payload does not fit {self.payload.__name__}: {exc.errors()[0]['msg']} at "
                     f"{'.'.join(map(str, exc.errors()[0]['loc'])) or '(root)'}")

    @property
    def all_queues(self) -> tuple[str, ...]:
        return (self.queue, *self.queues)

    @property
    def granted_permissions(self) -> tuple[AwsPermission, ...]:
        """Everything the job's function may call: the declared ``permissions`` and, for each integration it calls
        (required or optional), reading that integration's token secret."""
        return (*self.permissions, *(integration_secret(name) for name in (*self.integrations, *self.optional_integrations)))

    @property
    def slug(self) -> str:
        return slug(self.name)

    @property
    def handler_module(self) -> str:
        """Where the job's Lambda handler lives: ``functions/<job_with_underscores>/handler.py`` unless overridden."""
        return self.handler or f"functions.{module_name(self.name)}.handler"

    @property
    def parsed_schedule(self) -> Schedule | None:
        return None if self.schedule is None else parse_schedule(self.schedule, self.timezone)

    def queue_for(self, payload: BaseModel, explicit: str | None = None) -> str:
        """The queue a payload goes to: the explicit choice, else the route's, else the default queue."""
        chosen = explicit or (self.route(payload) if self.route else self.queue)
        if chosen not in self.all_queues:
            source = "queue=" if explicit else "route"
            raise RegistryError(f"job {self.name!r}: {source} chose queue {chosen!r}, which is not one of {self.all_queues}")
        return chosen


class Registry:
    """An ordered set of jobs. Refuses duplicates, so two definitions can never silently fight over a name."""

    def __init__(self, jobs: list[JobSpec] | None = None) -> None:
        self._jobs: dict[str, JobSpec] = {}
        for job in jobs or []:
            self.add(job)

    def add(self, job: JobSpec) -> JobSpec:
        if not isinstance(job, JobSpec):
            raise RegistryError(f"expected a JobSpec, got {job!r}")
        if job.name in self._jobs:
            raise RegistryError(f"job {job.name!r} is registered twice")
        self._jobs[job.name] = job
        return job

    def job(self, name: str, **settings: Any) -> JobSpec:
        """Build and add a :class:`JobSpec` in one call."""
        return self.add(JobSpec(name=name, **settings))

    def __getitem__(self, name: str) -> JobSpec:
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJobError(name, list(self._jobs)) from None

    def get(self, job: str | JobSpec) -> JobSpec:
        """Resolve a name or spec to this registry's spec (a spec from another registry is looked up by name)."""
        return self[job.name if isinstance(job, JobSpec) else job]

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[JobSpec]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def queues(self) -> dict[str, list[JobSpec]]:
        """Every queue label with the jobs it carries, in registration order."""
        by_queue: dict[str, list[JobSpec]] = {}
        for job in self:
            for queue in job.all_queues:
                by_queue.setdefault(queue, []).append(job)
        return by_queue

    def queue_settings(self, queue: str) -> QueueSettings:
        """Settings for a physical queue shared by several jobs: the strictest of theirs."""
        jobs = self.queues().get(queue)
        if not jobs:
            raise RegistryError(f"unknown queue {queue!r}; queues: {', '.join(self.queues())}")
        # Each job fits a batch of its own size; the queue's batch is the smallest of them, so this fits too.
        timeout = function_timeout(max(j.timeout for j in jobs), min(j.batch_size for j in jobs))
        return QueueSettings(
            name=queue,
            jobs=tuple(j.name for j in jobs),
            visibility_timeout=visibility_timeout(timeout, min(j.batch_window for j in jobs)),
            max_receive_count=max_receive_count(max(j.retry.max_attempts for j in jobs)),
            batch_size=min(j.batch_size for j in jobs),
            concurrency=max(j.concurrency for j in jobs),
            timeout=max(j.timeout for j in jobs),
            function_timeout=timeout,
            memory=max(j.memory for j in jobs),
            batch_window=min(j.batch_window for j in jobs),
            permissions=tuple(p for j in jobs for p in j.granted_permissions),
        )

    def scheduled(self) -> list[JobSpec]:
        return [job for job in self if job.schedule is not None]

    def permission_placeholders(self) -> set[str]:
        """Every placeholder the jobs' permissions use (the stack creates the documents bucket only when named)."""
        return set().union(*(p.placeholders() for job in self for p in job.granted_permissions))


@dataclass(frozen=True)
class QueueSettings:
    """What a queue needs to be created: derived from the jobs on it, never declared separately."""

    name: str
    jobs: tuple[str, ...]
    visibility_timeout: int
    max_receive_count: int
    batch_size: int
    concurrency: int
    # The queue's one function serves every job on it, so it gets the largest timeout and memory among them.
    # ``timeout`` is one record's; ``function_timeout`` covers a whole batch (see :func:`function_timeout`).
    timeout: int = 30
    function_timeout: int = 30
    memory: int = 256
    batch_window: int = 0
    permissions: tuple[AwsPermission, ...] = ()


def load_registry(path: str) -> Registry:
    """Import a registry from ``"package.module:attribute"`` (the ``CONVEYOR_REGISTRY`` setting)."""
    import importlib

    module_name_, _, attribute = path.partition(":")
    if not module_name_ or not attribute:
        raise RegistryError(f"registry path {path!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name_)
    except ImportError as exc:
        raise RegistryError(f"cannot import registry module {module_name_!r}: {exc}") from exc
    registry = getattr(module, attribute, None)
    if not isinstance(registry, Registry):
        raise RegistryError(f"{path!r} is not a Registry (got {type(registry).__name__})")
    return registry


def default_registry() -> Registry:
    from shared.settings import Settings

    return load_registry(Settings.from_env().registry)
