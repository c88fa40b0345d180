"""Every Conveyor function is built here, so runtime, architecture, logging, tracing and retention are decided once.

Why these defaults:

* Python 3.14 on arm64: the newest runtime (cdk-nag's L1 asks for it), and Graviton is ~20 % cheaper per GB-second.
* JSON logs at the platform level plus Powertools' structured lines: one format for Logs Insights queries.
* Active X-Ray tracing on the function; the Powertools ``Tracer`` in code stays opt-in (it costs ~250 ms of import).
* An explicit log group per function with a retention, instead of the never-expiring group Lambda would create.
* Functions live in the database's VPC subnets with one security group (see ``infra.database``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.checks import acknowledge

from shared import settings as env

RUNTIME = lambda_.Runtime.PYTHON_3_14
# The layer is built for the same interpreter (infra.bundling), so the version is read off the runtime.
PYTHON_VERSION = RUNTIME.name.removeprefix("python")
ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
METRICS_NAMESPACE = "Conveyor"


@dataclass(frozen=True)
class FunctionArtifacts:
    """What every function is made of: the staged ``functions/`` + ``shared/`` tree and the dependency layer."""

    code_dir: Path
    layer_dir: Path


@dataclass(frozen=True)
class Network:
    vpc: ec2.IVpc
    subnets: ec2.SubnetSelection
    security_group: ec2.ISecurityGroup


class FunctionFactory(Construct):
    """Holds the shared code asset and layer, and builds functions with the project's defaults."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        artifacts: FunctionArtifacts,
        architecture: str,
        log_retention_days: int,
        stage: str,
        registry: str,
        network: Network,
        base_environment: Mapping[str, str],
    ) -> None:
        super().__init__(scope, id)
        self.architecture = ARCHITECTURES[architecture]
        self.retention = retention(log_retention_days)
        self.stage = stage
        self.network = network
        self.code = lambda_.Code.from_asset(str(artifacts.code_dir))
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(str(artifacts.layer_dir)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[self.architecture],
            description="Conveyor runtime dependencies (Powertools, psycopg, pydantic), built without Docker",
        )
        self.environment = {
            env.STAGE: stage,
            env.REGISTRY: registry,
            "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            **base_environment,
        }

    def function(
        self,
        scope: Construct,
        id: str,
        *,
        function_name: str,
        handler: str,
        description: str,
        timeout: Duration,
        memory: int = 256,
        environment: Mapping[str, str] | None = None,
        reserved_concurrency: int | None = None,
        dead_letter_reason: str,
        any_resource_reasons: Sequence[str] = (),
    ) -> lambda_.Function:
        """A function with the project's defaults. ``dead_letter_reason`` says where this function's failed events
        go instead of a Lambda DLQ (cdk-nag's Serverless-LambdaDLQ), since every caller must have an answer.
        ``any_resource_reasons``: why the caller will also grant actions on Resource '*' (a job permission's
        ``any_resource_reason``), added to this function's one acknowledgement of that finding."""
        log_group = logs.LogGroup(
            scope,
            f"{id}Logs",
            log_group_name=f"/aws/lambda/{function_name}",
            retention=self.retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        function = lambda_.Function(
            scope,
            id,
            function_name=function_name,
            description=description,
            runtime=RUNTIME,
            architecture=self.architecture,
            code=self.code,
            handler=handler,
            layers=[self.layer],
            timeout=timeout,
            memory_size=memory,
            environment={**self.environment, "POWERTOOLS_SERVICE_NAME": function_name, **(environment or {})},
            logging_format=lambda_.LoggingFormat.JSON,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=reserved_concurrency,
            vpc=self.network.vpc,
            vpc_subnets=self.network.subnets,
            security_groups=[self.network.security_group],
        )
        for policy in ("AWSLambdaBasicExecutionRole", "AWSLambdaVPCAccessExecutionRole"):
            acknowledge(
                function,
                id=f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/{policy}]",
                reason="AWS's managed Lambda execution policies, scoped by AWS to writing logs and managing the "
                "function's VPC network interfaces: the least a function in a VPC needs.",
            )
        acknowledge(
            function,
            id="AwsSolutions-IAM5[Resource::*]",
            reason=" ".join(
                (
                    "X-Ray PutTraceSegments/PutTelemetryRecords (active tracing) have no resource-level permissions.",
                    *(f"Declared in the job registry: {reason}." for reason in any_resource_reasons),
                    "A job permission may use '*' only with a stated reason (shared.registry.AwsPermission).",
                )
            ),
        )
        acknowledge(function, id="Serverless-LambdaDLQ", reason=dead_letter_reason)
        return function


RETENTION_NAMES = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH", 60: "TWO_MONTHS",
    90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS", 1827: "FIVE_YEARS",
    2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS", 3653: "TEN_YEARS",
}


def retention(days: int) -> logs.RetentionDays:
    """The ``RetentionDays`` member for a number of days (``infra.config`` has already checked the number)."""
    return logs.RetentionDays(RETENTION_NAMES[days])
