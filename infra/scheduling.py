"""EventBridge Scheduler for the registry's schedules (and the relay's every-minute start).

Every scheduled job gets a schedule in the stack's schedule group, evaluated in the job's IANA timezone
(``ScheduleExpressionTimezone``: EventBridge skips a local time that does not exist and fires an ambiguous one
once). The target is the ``schedule`` function, not the job's queue: it enqueues through the outbox with the period
claimed in ``conveyor.schedule_fires`` (or records why the period is skipped: overlap, pre-check, enable flag,
missed), so a schedule delivered twice still gives one run, and the run then takes the normal path (relay → queue →
function) with the job's retries and DLQ. See ``functions/schedule/handler.py`` and ``shared/scheduled/fire.py``.

Failures are never silent: Scheduler retries a failed delivery and then sends the event to a dead-letter queue;
the schedule function's own errors get Lambda's async retries and then go to the same queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack, TimeZone
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as targets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.checks import acknowledge

from infra.database import DatabaseAccess
from infra.lambda_defaults import FunctionFactory
from shared.names import schedule_dlq_resource_name, schedule_group_name, schedule_name, slug, system_function_name
from shared.registry import Registry

DELIVERY_RETRIES = 3
MAX_EVENT_AGE = Duration.hours(1)


class Scheduling(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        registry: Registry,
        factory: FunctionFactory,
        database: DatabaseAccess,
    ) -> None:
        super().__init__(scope, id)
        stage = factory.stage
        # Destroyed with the stack: it holds no data, and a retained group keeps its name, so creating the stack
        # again would fail on it.
        self.group_name = schedule_group_name(stage=stage)
        self.group = scheduler.ScheduleGroup(
            self, "Group", schedule_group_name=self.group_name, removal_policy=RemovalPolicy.DESTROY
        )
        self.dead_letter_queue = sqs.Queue(
            self,
            "FailedDeliveries",
            queue_name=schedule_dlq_resource_name(stage=stage),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self.dead_letter_queue,
            id="AwsSolutions-SQS3", reason="This queue is the dead-letter queue for schedule deliveries."
        )
        acknowledge(
            self.dead_letter_queue,
            id="Serverless-SQSRedrivePolicy", reason="This queue is the dead-letter queue for schedule deliveries."
        )
        # One role for every schedule in the group, allowed to invoke only the functions it targets, and assumable
        # only by Scheduler acting for this account's schedules (confused-deputy prevention).
        self.role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com", conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}}
            ),
        )
        self._invokable: set[str] = set()
        self.schedules: dict[str, scheduler.Schedule] = {}
        self.function: lambda_.Function | None = None
        jobs = registry.scheduled()
        if not jobs:
            return
        self.function = factory.function(
            self,
            "Function",
            function_name=system_function_name("schedule", stage=stage),
            handler="functions.schedule.handler.handler",
            description="Conveyor: enqueues one run of a scheduled job per period",
            timeout=Duration.seconds(30),
            environment=database.environment,
            dead_letter_reason="Invoked asynchronously by Scheduler: failed invocations go to the schedule DLQ through "
            "an on-failure destination (the newer form of a Lambda DLQ, with the error attached).",
        )
        database.grant_connect(self.function)
        self.function.configure_async_invoke(
            retry_attempts=2,
            max_event_age=MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
        )
        for job in jobs:
            assert job.schedule is not None
            self.schedules[job.name] = self.add(
                f"Job{slug(job.name).title().replace('-', '')}",
                name=schedule_name(job.name),
                expression=job.schedule,
                timezone=job.timezone,
                function=self.function,
                payload={"job": job.name, "scheduled_time": scheduler.ContextAttribute.scheduled_time},
                description=job.description or f"Conveyor: {job.name}",
            )

    def add(
        self,
        id: str,
        *,
        name: str,
        expression: str,
        timezone: str,
        function: lambda_.IFunction,
        payload: Mapping[str, Any],
        description: str,
    ) -> scheduler.Schedule:
        """A schedule in this group invoking ``function`` with ``payload``, with retries and the DLQ."""
        if function.node.path not in self._invokable:
            self._invokable.add(function.node.path)
            stack = Stack.of(self)
            logical_id = stack.resolve(stack.get_logical_id(function.node.default_child))
            acknowledge(
                self.role,
                id=f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>:*]",
                reason="lambda:InvokeFunction on the function's versions and aliases ('<ARN>:*') is how CDK grants "
                "invoke; the role may invoke only the functions its schedules target.",
            )
        return scheduler.Schedule(
            self,
            id,
            schedule_name=name,
            schedule_group=self.group,
            schedule=scheduler.ScheduleExpression.expression(expression, TimeZone.of(timezone)),
            description=description[:512],
            target=targets.LambdaInvoke(
                function,
                input=scheduler.ScheduleTargetInput.from_object(dict(payload)),
                retry_attempts=DELIVERY_RETRIES,
                max_event_age=MAX_EVENT_AGE,
                dead_letter_queue=self.dead_letter_queue,
                role=self.role,
            ),
        )
