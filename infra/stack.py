"""The Conveyor stack: wires one construct per concern, all generated from the job registry.

Adding a job to the registry is all it takes to get its queue, DLQ, function, trigger, schedule and alarms.

CloudFormation holds at most 500 resources per stack, and each registry queue brings about a dozen (queue, DLQ, two
queue policies, function, role, policy, log group, trigger, three alarms), so a stack fits about 35 queues with a
database it creates and a few more with an existing one. The stack counts its resources once built and stops with
the queue count, the cost per queue and the limit, rather than leaving CDK to fail the synth with a resource total.
"""

from __future__ import annotations

from aws_cdk import Annotations, CfnOutput, CfnResource, Duration, Stack
import jsii
from constructs import Construct, IConstruct, IValidation

from infra.config import PREFIX, ConveyorConfig, is_placeholder_email, is_placeholder_url
from infra.database import DatabaseAccess
from infra.documents import DocumentsBucket
from infra.job_queue import JobQueue
from infra.lambda_defaults import FunctionArtifacts, FunctionFactory
from infra.monitoring import Monitoring
from infra.operations import OperationsApi
from infra.queue_function import QueueConsumer
from infra.relay import OutboxRelay
from infra.scheduling import Scheduling
from shared.names import system_function_name
from shared.registry import Registry


# CloudFormation's limit per stack, and what CDK may add at synth: its version-reporting resource (CDKMetadata).
CLOUDFORMATION_MAX_RESOURCES = 500
ADDED_AT_SYNTH = 1


class StackLimitError(ValueError):
    """The registry needs more than one CloudFormation stack can hold; the message says how many queues fit."""


def construct_id(label: str) -> str:
    """``email-high`` -> ``EmailHigh``: a readable construct id for a registry name."""
    return "".join(part.capitalize() for part in label.replace(".", "-").split("-"))


class ConveyorStack(Stack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: ConveyorConfig,
        registry: Registry,
        artifacts: FunctionArtifacts,
        **kwargs,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        self.config = config
        if config.email_from and is_placeholder_email(config.email_from):
            Annotations.of(self).add_warning_v2(
                "conveyor:emailFromPlaceholder",
                f"{PREFIX}emailFrom is {config.email_from!r}, a placeholder at a domain reserved for examples: SES "
                "cannot verify it and every email a job sends will fail; set a verified SES identity (cdk.json or "
                f"-c {PREFIX}emailFrom=...)",
            )
        for name, integration in config.integrations.items():
            if is_placeholder_url(integration.url):
                Annotations.of(self).add_warning_v2(
                    f"conveyor:integrationUrlPlaceholder:{name}",
                    f"{PREFIX}integrations.{name}.url is {integration.url!r}, a placeholder at a domain reserved for "
                    f"examples: every job calling the {name} integration will fail and retry until dead; set the "
                    f"service's real base URL (cdk.json or -c '{PREFIX}integrations={{...}}')",
                )
        if config.ops_email and is_placeholder_email(config.ops_email):
            Annotations.of(self).add_warning_v2(
                "conveyor:opsEmailPlaceholder",
                f"{PREFIX}opsEmail is {config.ops_email!r}, a placeholder at a domain reserved for examples: the "
                "operations digest cannot be delivered; set a real address (cdk.json or -c "
                f"{PREFIX}opsEmail=...)",
            )
        self.database = DatabaseAccess(
            self, "Database", config=config.database, log_retention_days=config.log_retention_days, stage=config.stage
        )
        self.factory = FunctionFactory(
            self,
            "Functions",
            artifacts=artifacts,
            architecture=config.architecture,
            log_retention_days=config.log_retention_days,
            stage=config.stage,
            registry=config.registry,
            network=self.database.network,
            base_environment={"CONVEYOR_EMAIL_FROM": config.email_from} if config.email_from else {},
        )
        self.queues = {
            label: JobQueue(self, f"Queue{construct_id(label)}", settings=registry.queue_settings(label), stage=config.stage)
            for label in registry.queues()
        }
        # Only a registry whose jobs store documents gets the bucket (it is retained, so it should not appear idly).
        self.documents = DocumentsBucket(self, "Documents") if "documents_bucket" in registry.permission_placeholders() else None
        consumers = {
            label: QueueConsumer(
                self, f"Consumer{construct_id(label)}", job_queue=job_queue, registry=registry, factory=self.factory, database=self.database,
                email_from=config.email_from, documents_bucket=self.documents.bucket_name if self.documents else None,
                config=config,
            )
            for label, job_queue in self.queues.items()
        }
        self.consumers = {label: consumer.function for label, consumer in consumers.items()}
        self.scheduling = Scheduling(self, "Scheduling", registry=registry, factory=self.factory, database=self.database)
        self.relay = OutboxRelay(
            self,
            "Relay",
            config=config.relay,
            queues=list(self.queues.values()),
            factory=self.factory,
            database=self.database,
            scheduling=self.scheduling,
        )
        self.operations = OperationsApi(
            self,
            "Operations",
            config=config.api,
            relay_lag_seconds=config.alarms.relay_lag_seconds,
            queues=self.queues,
            event_sources={label: consumer.event_source for label, consumer in consumers.items()},
            scheduling=self.scheduling,
            factory=self.factory,
            database=self.database,
        )
        self.migrate = self.factory.function(
            self,
            "Migrate",
            function_name=system_function_name("migrate", stage=config.stage),
            handler="functions.migrate.handler.handler",
            description="Conveyor: apply database migrations (invoke after each deploy)",
            timeout=Duration.minutes(5),
            environment=self.database.environment,
            dead_letter_reason="Invoked by hand (synchronously) after a deploy; the caller sees any error.",
        )
        self.database.grant_connect(self.migrate)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config.alarms,
            stage=config.stage,
            queues=list(self.queues.values()),
            consumers=self.consumers,
            relay=self.relay.function,
            relay_service=self.relay.function_name,
            schedule_dead_letters=self.scheduling.dead_letter_queue,
        )
        for label, job_queue in self.queues.items():
            CfnOutput(self, f"QueueUrl{construct_id(label)}", value=job_queue.queue.queue_url, description=f"queue {label}")
            CfnOutput(self, f"DlqUrl{construct_id(label)}", value=job_queue.dead_letter_queue.queue_url, description=f"DLQ of {label}")
        if self.documents:
            CfnOutput(self, "DocumentsBucket", value=self.documents.bucket_name, description="rendered PDFs and packages")
        CfnOutput(self, "MigrateFunction", value=self.migrate.function_name)
        CfnOutput(self, "AlarmTopic", value=self.monitoring.topic.topic_arn)
        self._per_queue_scopes = {
            label: (self.queues[label], consumers[label], *self.monitoring.queue_alarms.get(label, [])) for label in self.queues
        }
        # Now, to fail before anything is synthesized; and again at synth, after CDK's aspects ran: a role whose
        # inline policy outgrows IAM's limit is split into managed policies then (the operations function's, which
        # names every queue, from about 20 queues on), and those count too.
        problem = self.resource_limit_problem()
        if problem:
            raise StackLimitError(problem)
        self.node.add_validation(_ResourceLimit(self))

    @property
    def resource_count(self) -> int:
        """The stack's CloudFormation resources so far (after synth: what the template holds)."""
        return count_resources(self)

    def resource_limit_problem(self) -> str | None:
        total = self.resource_count + ADDED_AT_SYNTH
        if total <= CLOUDFORMATION_MAX_RESOURCES:
            return None
        per_queue_scopes = self._per_queue_scopes
        per_queue = {label: sum(count_resources(scope) for scope in scopes) for label, scopes in per_queue_scopes.items()}
        each = max(per_queue.values())
        rest = total - sum(per_queue.values())
        fits = max((CLOUDFORMATION_MAX_RESOURCES - rest) // each, 0)
        return (
            f"the registry's {len(per_queue)} queues need {total} CloudFormation resources ({each} per queue, {rest} "
            f"for the rest of the stack), but CloudFormation allows {CLOUDFORMATION_MAX_RESOURCES} resources per "
            f"stack: this stack holds at most {fits} queues. Put more jobs on shared queues (a queue may carry several "
            f"jobs), or split the registry across stacks with their own {PREFIX}registry and {PREFIX}stage"
        )


@jsii.implements(IValidation)
class _ResourceLimit:
    def __init__(self, stack: ConveyorStack) -> None:
        self.stack = stack

    def validate(self) -> list[str]:
        problem = self.stack.resource_limit_problem()
        return [problem] if problem else []


def count_resources(scope: IConstruct) -> int:
    """CloudFormation resources defined under ``scope`` (what the template will hold, before synth adds any)."""
    return sum(1 for node in scope.node.find_all() if isinstance(node, CfnResource))
