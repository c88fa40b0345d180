"""The Conveyor stack: wires one construct per concern, all generated from the job registry.

Adding a job to the registry is all it takes to get its queue, DLQ, function, trigger, schedule and alarms.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack
from constructs import Construct

from infra.config import ConveyorConfig
from infra.database import DatabaseAccess
from infra.job_queue import JobQueue
from infra.lambda_defaults import FunctionArtifacts, FunctionFactory
from infra.monitoring import Monitoring
from infra.queue_function import QueueConsumer
from infra.relay import OutboxRelay
from infra.scheduling import Scheduling
from shared.names import system_function_name
from shared.registry import Registry


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
        self.consumers = {
            label: QueueConsumer(
                self, f"Consumer{construct_id(label)}", job_queue=job_queue, registry=registry, factory=self.factory, database=self.database,
                email_from=config.email_from,
            ).function
            for label, job_queue in self.queues.items()
        }
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
        CfnOutput(self, "MigrateFunction", value=self.migrate.function_name)
        CfnOutput(self, "AlarmTopic", value=self.monitoring.topic.topic_arn)
