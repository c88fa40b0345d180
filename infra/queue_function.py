"""The function that consumes one registry queue, with its SQS trigger and nothing more than it needs.

One function per queue, not per job: an SQS queue can feed only one consumer safely (two event source mappings
on one queue compete for its messages, so a job's message could reach the other job's code). A queue that carries a
single job runs that job's handler directly; a queue shared by several jobs runs ``shared.runtime.dispatch``, which
routes each record by its ``conveyor.job`` attribute. ``email.send`` lives on two queues, so it gets two functions
with the same code and separate concurrency: a burst of receipts cannot delay password resets.

Permissions: consume its own queue (from the event source), send to its own DLQ (permanent failures go there at
once with the reason), read the database secret, and the job's declared ``permissions`` plus the token secret of each
integration it calls (``JobSpec.granted_permissions``) — nothing else. Their
placeholders are filled in for this stack: ``{partition}``, ``{region}``, ``{account}``, ``{stage}``,
``{email_from}`` and ``{documents_bucket}`` (whose name the function also gets as ``CONVEYOR_DOCUMENTS_BUCKET``). A
permission on Resource '*' (an action without resource-level permissions) comes with its registry reason, which
the function's cdk-nag acknowledgement repeats, and with a Deny statement on its ``denied_resources``.

Environment: what every function gets, plus what the queue's jobs declare: ``CONVEYOR_<NAME>_URL`` for each
integration they call (from ``conveyor:integrations``) and each deployment setting they read (``JobSpec.environment``,
e.g. ``CONVEYOR_OPS_EMAIL`` from ``conveyor:opsEmail``). A function of other jobs gets none of them, and a required one
that is not configured stops the synth naming the job and the context key.
"""

from __future__ import annotations

import json

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from infra.checks import acknowledge

from infra.config import PREFIX, ConfigError, ConveyorConfig
from infra.database import DatabaseAccess
from infra.job_queue import JobQueue
from infra.lambda_defaults import FunctionFactory
from shared import settings as env
from shared.integrations import secret_name, url_variable
from shared.names import consumer_function_name
from shared.registry import AwsPermission, Registry

DISPATCH_HANDLER = "shared.runtime.dispatch.handler"


def handler_path(registry: Registry, queue: str) -> str:
    """The Lambda handler string for a queue's function."""
    jobs = registry.queues()[queue]
    return f"{jobs[0].handler_module}.handler" if len(jobs) == 1 else DISPATCH_HANDLER


class QueueConsumer(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        job_queue: JobQueue,
        registry: Registry,
        factory: FunctionFactory,
        database: DatabaseAccess,
        email_from: str | None,
        documents_bucket: str | None = None,
        config: ConveyorConfig,
        extra_environment: dict[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        settings = job_queue.settings
        label = settings.name
        used = set().union(*(p.placeholders() for p in settings.permissions))
        placeholder_values = self._placeholder_values(
            label, settings.jobs, used, stage=factory.stage, email_from=email_from, documents_bucket=documents_bucket
        )
        self.function = factory.function(
            self,
            "Function",
            function_name=consumer_function_name(label, stage=factory.stage),
            handler=handler_path(registry, label),
            description=f"Conveyor: runs {', '.join(settings.jobs)} from queue {label}",
            # A whole batch: each record may use its job's timeout (the runtime starts none it cannot finish).
            timeout=Duration.seconds(settings.function_timeout),
            memory=settings.memory,
            environment={
                env.QUEUE: label,
                env.QUEUE_URLS: json.dumps({label: job_queue.queue.queue_url}),
                env.DLQ_URLS: json.dumps({label: job_queue.dead_letter_queue.queue_url}),
                **database.environment,
                **({env.DOCUMENTS_BUCKET: documents_bucket} if documents_bucket and "documents_bucket" in used else {}),
                **self._job_environment(registry, label, config),
                **(extra_environment or {}),
            },
            dead_letter_reason="Invoked synchronously by its SQS event source: a failed message stays on the queue "
            "and its redrive policy moves it to the queue's DLQ after the last attempt.",
            any_resource_reasons=[p.any_resource_reason for p in settings.permissions if p.any_resource],
        )
        # Kept: the operations API pauses and resumes the queue by disabling and enabling this mapping.
        self.event_source = sources.SqsEventSource(
            job_queue.queue,
            batch_size=settings.batch_size,
            max_batching_window=Duration.seconds(settings.batch_window) if settings.batch_window else None,
            report_batch_item_failures=True,
            max_concurrency=settings.concurrency,
        )
        self.function.add_event_source(self.event_source)
        acknowledge(
            self.function,
            id="Serverless-LambdaEventSourceMappingDestination",
            reason="SQS event sources take no on-failure destination (that is for streams and Kafka); the queue's "
            "redrive policy to its DLQ plays that part.",
        )
        job_queue.dead_letter_queue.grant_send_messages(self.function)
        database.grant_connect(self.function)
        self._grant_job_permissions(settings.permissions, placeholder_values)

    def _job_environment(self, registry: Registry, label: str, config: ConveyorConfig) -> dict[str, str]:
        """What the queue's jobs declare they read: ``CONVEYOR_<NAME>_URL`` for each integration they call (a required
        one without a configured URL stops the synth) and each deployment setting in their ``environment``."""
        integrations = config.integrations
        environment: dict[str, str] = {}
        for job in registry.queues()[label]:
            for name in job.integrations:
                if name not in integrations:
                    raise ConfigError(
                        f"job {job.name!r} (queue {label!r}) calls the {name} integration, but {PREFIX}integrations has "
                        f"no URL for it: set {PREFIX}integrations.{name}.url in cdk.json context, e.g. "
                        f'"{PREFIX}integrations": {{"{name}": {{"url": "https://..."}}}}, and create its token secret '
                        f"{secret_name(config.stage, name)}"
                    )
                environment[url_variable(name)] = integrations[name].url
            for name in job.optional_integrations:
                if name in integrations:
                    environment[url_variable(name)] = integrations[name].url
            for variable in job.environment:
                key, configured = config.job_setting(variable)
                if configured is None:
                    raise ConfigError(f"{key} is required: job {job.name!r} (queue {label!r}) reads it as {variable}")
                environment[variable] = configured
        return environment

    def _placeholder_values(
        self,
        label: str,
        jobs: tuple[str, ...],
        used: set[str],
        *,
        stage: str,
        email_from: str | None,
        documents_bucket: str | None,
    ) -> dict[str, str]:
        """What this stack puts in place of each permission placeholder; a missing one the jobs use stops the synth."""
        stack = Stack.of(self)
        if "email_from" in used and not email_from:
            raise ConfigError(
                f"{PREFIX}emailFrom is required: queue {label!r} runs {', '.join(jobs)}, which sends email and may "
                "send only as that address (a verified SES identity)"
            )
        if "documents_bucket" in used and not documents_bucket:
            # The stack creates the bucket whenever a registry permission names it; a consumer built without one is
            # a wiring mistake, not a configuration one.
            raise ValueError(f"queue {label!r} runs {', '.join(jobs)}, whose permissions name {{documents_bucket}}, but no documents bucket was given")
        return {
            "partition": stack.partition,
            "region": stack.region,
            "account": stack.account,
            "stage": stage,
            "email_from": email_from or "",
            "documents_bucket": documents_bucket or "",
        }

    def _grant_job_permissions(self, permissions: tuple[AwsPermission, ...], values: dict[str, str]) -> None:
        """The AWS calls the queue's jobs declare in the registry, with placeholders filled in for this stack."""
        stack = Stack.of(self)
        # How cdk-nag prints the same resource in a finding id: pseudo parameters as <AWS::…>, references as <Id.Attr>.
        shown = {
            **values,
            "partition": "<AWS::Partition>",
            "region": "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region,
            "account": "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account,
            "documents_bucket": finding_text(stack, values["documents_bucket"]),
        }
        for permission in permissions:
            for resource in permission.resources:
                if "*" in resource and not permission.any_resource:  # '*' itself: acknowledged with the function
                    acknowledge(
                        self.function,
                        id=f"AwsSolutions-IAM5[Resource::{resource.format(**shown)}]",
                        reason=f"Declared in the job registry ({permission.reason or ', '.join(permission.actions)}): a "
                        "resource pattern, not '*', for resources that differ per account.",
                    )
            conditions: dict[str, dict[str, str]] = {}
            for operator, key, value in permission.conditions:
                conditions.setdefault(operator, {})[key] = value.format(**values)
            self.function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=list(permission.actions),
                    resources=[r.format(**values) for r in permission.resources],
                    conditions=conditions or None,
                )
            )
            if permission.denied_resources:
                self.function.add_to_role_policy(
                    iam.PolicyStatement(
                        effect=iam.Effect.DENY,
                        actions=list(permission.actions),
                        resources=[r.format(**values) for r in permission.denied_resources],
                    )
                )


def finding_text(stack: Stack, value: str) -> str:
    """How cdk-nag writes a value inside a finding id: a reference to a resource's attribute as ``<LogicalId.Attr>``,
    a plain reference as ``<LogicalId>``, text as itself."""
    if not Token.is_unresolved(value):
        return value
    resolved = stack.resolve(value)
    if isinstance(resolved, dict) and "Ref" in resolved:
        return f"<{resolved['Ref']}>"
    if isinstance(resolved, dict) and "Fn::GetAtt" in resolved:
        return "<{}.{}>".format(*resolved["Fn::GetAtt"])
    return str(resolved)
