"""The operations API on AWS: the ``ops`` function behind an HTTP API, with per-route authorization.

What it serves is ``functions/ops/handler.py`` (the same routes ``conveyor dev`` serves on 127.0.0.1): queue and run
views, health, throughput, and the actions retry, cancel, trigger, redrive, pause and resume. Who may call what is
decided twice, by API Gateway before the function runs and by the operations service inside it:

* ``conveyor:api.issuer`` set: a JWT authorizer (issuer and audience from ``cdk.json``) on every data route, each
  route requiring its scope (``ROUTES``): reads ``jobs:read``; retry, trigger, redrive, pause and resume
  ``jobs:retry``; cancel ``jobs:cancel``; ``/me`` only a valid token. The function reads the same scopes from the
  token's claims, so a route reached some other way still refuses a caller without them.
* no issuer: IAM (SigV4) authorization on every data route instead, so an API deployed without an identity provider
  is never open. Which routes a principal may call is then its IAM policy's ``execute-api:Invoke`` resources
  (README "Operations on AWS" maps each scope to them); the function grants an IAM caller every scope.

Only ``GET /`` and ``GET /static/{proxy+}`` (the dashboard's own HTML, script and styles, which hold no data) take no
authorization, so a browser can load the page before it has a token. Unknown routes go to ``$default``, which
needs authentication too and answers the API's JSON 404.

The stage logs every request (JSON, to a log group with the stack's retention) and is throttled
(``conveyor:api.rateLimit``/``burstLimit``). No CORS: the page is served from the API's own origin.

Permissions of the function, all on this stack's resources only: read the attributes of every queue and DLQ;
receive, delete and change the visibility of DLQ messages, and start, list and cancel message move tasks on the DLQs
(a move task runs with its caller's permissions: receive/delete on the source DLQ, send on the destination); send to
the main queues (redrive's copy mode, and the move task's destination); read and update this stack's event source
mappings (pause/resume); read and update the schedules in this stack's schedule group (a paused queue's scheduled
jobs), passing only the Scheduler role, only to Scheduler; read the database secret. The queues use SQS-managed
encryption, so no KMS key needs granting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import jsii
from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.checks import acknowledge
from infra.config import ApiConfig
from infra.database import DatabaseAccess
from infra.job_queue import JobQueue
from infra.lambda_defaults import FunctionFactory
from infra.scheduling import Scheduling
from shared import settings as env
from shared.names import system_function_name
from shared.operations.scopes import Scope

HANDLER = "functions.ops.handler.handler"
# API Gateway gives an HTTP API integration at most 30 s; the function stops first, so the caller gets its answer
# (a redrive in copy mode works within the time left and reports what it moved) rather than a gateway timeout.
TIMEOUT = Duration.seconds(29)
DEFAULT_ROUTE = "$default"


@dataclass(frozen=True)
class Route:
    """One route of the API and who may call it: ``scope`` None with ``public`` False means any authenticated caller."""

    method: str
    path: str
    scope: Scope | None = None
    public: bool = False

    @property
    def key(self) -> str:
        return DEFAULT_ROUTE if self.path == DEFAULT_ROUTE else f"{self.method} {self.path}"


ROUTES: tuple[Route, ...] = (
    Route("GET", "/me"),
    Route("GET", "/queues", Scope.READ),
    Route("GET", "/runs", Scope.READ),
    Route("GET", "/runs/{id}", Scope.READ),
    Route("POST", "/runs/{id}/retry", Scope.RETRY),
    Route("POST", "/runs/{id}/cancel", Scope.CANCEL),
    Route("POST", "/jobs/{name}/trigger", Scope.RETRY),
    Route("POST", "/queues/{name}/redrive", Scope.RETRY),
    Route("POST", "/queues/{name}/pause", Scope.RETRY),
    Route("POST", "/queues/{name}/resume", Scope.RETRY),
    Route("GET", "/health", Scope.READ),
    Route("GET", "/stats/throughput", Scope.READ),
    Route("GET", "/openapi.json", Scope.READ),
    # The dashboard's static files: no data, and a browser must load them before it can hold a token.
    Route("GET", "/", public=True),
    Route("GET", "/static/{proxy+}", public=True),
    # Everything else (an unknown path, a wrong method): the function's JSON 404, for authenticated callers only.
    Route("ANY", DEFAULT_ROUTE),
)

# What an access log line records (HTTP API context variables); the caller is the token's subject or the IAM ARN.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "requestTime": "$context.requestTime",
    "ip": "$context.identity.sourceIp",
    "userAgent": "$context.identity.userAgent",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "routeKey": "$context.routeKey",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "integrationError": "$context.integrationErrorMessage",
    "authorizerError": "$context.authorizer.error",
}
JWT_CALLER = {"caller": "$context.authorizer.claims.sub", "clientId": "$context.authorizer.claims.client_id"}
IAM_CALLER = {"caller": "$context.identity.userArn"}


@jsii.implements(apigw.IAccessLogSettings)
class _AccessLog:
    def __init__(self, destination: apigw.IAccessLogDestination, format: apigateway.AccessLogFormat) -> None:
        self._destination, self._format = destination, format

    @property
    def destination(self) -> apigw.IAccessLogDestination:
        return self._destination

    @property
    def format(self) -> apigateway.AccessLogFormat:
        return self._format


class _SharedLambdaIntegration(integrations.HttpLambdaIntegration):
    """``HttpLambdaIntegration`` without its per-route ``AWS::Lambda::Permission``: the construct grants API Gateway
    one permission for the whole stage instead, which saves 15 of the stack's 500 resources (each queue costs 12)."""

    def _complete_bind(self, *, route: apigw.IHttpRoute, scope: Construct) -> None:
        """Where ``HttpLambdaIntegration`` would add the route's own invoke permission: nothing to add."""


class OperationsApi(Construct):
    """The ``ops`` function and the HTTP API in front of it; ``url`` is the API's base URL."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: ApiConfig,
        relay_lag_seconds: int,
        queues: Mapping[str, JobQueue],
        event_sources: Mapping[str, sources.SqsEventSource],
        scheduling: Scheduling,
        factory: FunctionFactory,
        database: DatabaseAccess,
    ) -> None:
        super().__init__(scope, id)
        stack = Stack.of(self)
        self.function_name = system_function_name("ops", stage=factory.stage)
        self.function = factory.function(
            self,
            "Function",
            function_name=self.function_name,
            handler=HANDLER,
            description="Conveyor: the operations API (queues, runs, health; retry, cancel, trigger, redrive, pause)",
            timeout=TIMEOUT,
            # Lambda's CPU grows with memory: pydantic validation and the page's answers stay quick at 512 MB.
            memory=512,
            environment={
                env.QUEUE_URLS: stack.to_json_string({label: q.queue.queue_url for label, q in queues.items()}),
                env.DLQ_URLS: stack.to_json_string({label: q.dead_letter_queue.queue_url for label, q in queues.items()}),
                env.EVENT_SOURCE_MAPPINGS: stack.to_json_string(
                    {label: source.event_source_mapping_id for label, source in event_sources.items()}
                ),
                env.SCHEDULE_GROUP: scheduling.group_name,
                env.RELAY_LAG_THRESHOLD: str(relay_lag_seconds),  # /health and the relay-lag alarm agree
                **({env.SCOPE_PREFIX: config.scope_prefix} if config.scope_prefix else {}),
                **database.environment,
            },
            dead_letter_reason="Invoked synchronously by API Gateway: the caller gets the error in the response.",
        )
        database.grant_connect(self.function)
        self._grant(queues, event_sources, scheduling)

        self.log_group = logs.LogGroup(
            self,
            "AccessLogs",
            log_group_name=f"/aws/apigateway/{self.function_name}",
            retention=factory.retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.api = apigw.HttpApi(
            self,
            "Api",
            api_name=self.function_name,
            description="Conveyor operations API",
            create_default_stage=False,  # the stage below, with access logs and throttling
        )
        self.stage = apigw.HttpStage(
            self,
            "Stage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=config.rate_limit, burst_limit=config.burst_limit),
            access_log_settings=_AccessLog(
                apigw.LogGroupLogDestination(self.log_group),
                apigateway.AccessLogFormat.custom(
                    stack.to_json_string({**ACCESS_LOG_FIELDS, **(JWT_CALLER if config.uses_jwt else IAM_CALLER)})
                ),
            ),
        )
        self.url = self.stage.url
        self._add_routes(config)
        CfnOutput(stack, "OperationsApiUrl", value=self.url, description="the operations API and dashboard page")

    def _add_routes(self, config: ApiConfig) -> None:
        integration = _SharedLambdaIntegration("Ops", self.function)
        # API Gateway may invoke the function for any route of this API's stage, and nothing else may.
        self.function.add_permission(
            "ApiInvoke",
            principal=iam.ServicePrincipal("apigateway.amazonaws.com"),
            source_arn=Stack.of(self).format_arn(service="execute-api", resource=self.api.api_id, resource_name=f"{self.stage.stage_name}/*"),
        )
        if config.uses_jwt:
            assert config.issuer is not None
            authorizer: apigw.IHttpRouteAuthorizer = authorizers.HttpJwtAuthorizer(
                "Jwt", config.issuer, jwt_audience=list(config.audience), authorizer_name=f"{self.function_name}-jwt"
            )
        else:
            authorizer = authorizers.HttpIamAuthorizer()
        public = apigw.HttpNoneAuthorizer()
        self.routes: dict[str, apigw.HttpRoute] = {}
        for route in ROUTES:
            if route.path == DEFAULT_ROUTE:
                key = apigw.HttpRouteKey.DEFAULT
            else:
                key = apigw.HttpRouteKey.with_(route.path, apigw.HttpMethod(route.method))
            scopes = [config.scope_prefix + route.scope.value] if route.scope and config.uses_jwt else None
            http_route = apigw.HttpRoute(
                self,
                "Route" + "".join(word.capitalize() for word in re.findall(r"[A-Za-z0-9]+", route.key)),
                http_api=self.api,
                route_key=key,
                integration=integration,
                authorizer=public if route.public else authorizer,
                authorization_scopes=scopes,
            )
            if route.public:
                acknowledge(
                    http_route,
                    id="AwsSolutions-APIG4",
                    reason="The dashboard page's own static files (HTML, script, styles, vendored chart library): "
                    "they hold no data, and a browser must load them before it holds a token. Every data route "
                    "requires the authorizer.",
                )
            self.routes[route.key] = http_route

    def _grant(
        self,
        queues: Mapping[str, JobQueue],
        event_sources: Mapping[str, sources.SqsEventSource],
        scheduling: Scheduling,
    ) -> None:
        stack = Stack.of(self)
        main = [q.queue.queue_arn for q in queues.values()]
        dead = [q.dead_letter_queue.queue_arn for q in queues.values()]
        statements = [
            # GET /queues, /health: depths and ages of every queue and DLQ (and a redrive's source and destination ARNs).
            iam.PolicyStatement(actions=["sqs:GetQueueAttributes"], resources=main + dead),
            # Redrive. Whole queue: StartMessageMoveTask, which runs with its caller's permissions (receive and delete
            # on the source DLQ, send on the destination), and ListMessageMoveTasks to tell a task already running
            # from SQS's other refusals; ?job=: receive, send a copy, then delete.
            iam.PolicyStatement(
                actions=[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:StartMessageMoveTask",
                    "sqs:ListMessageMoveTasks",
                ],
                resources=dead,
            ),
            # Messages go back only to the job queues, never into a DLQ.
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=main),
        ]
        if event_sources:
            # Pause/resume: disable/enable the queues' consumers (and nothing else's).
            statements.append(
                iam.PolicyStatement(
                    actions=["lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping"],
                    resources=[source.event_source_mapping_arn for source in event_sources.values()],
                )
            )
        schedules = stack.format_arn(service="scheduler", resource="schedule", resource_name=f"{scheduling.group_name}/*")
        statements += [
            # Pause/resume also turns a paused queue's schedules off and on; UpdateSchedule replaces the whole
            # definition, so the function reads it first.
            iam.PolicyStatement(actions=["scheduler:GetSchedule", "scheduler:UpdateSchedule"], resources=[schedules]),
            # UpdateSchedule hands the target's role to Scheduler again: only the stack's Scheduler role, only to Scheduler.
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[scheduling.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            ),
        ]
        for statement in statements:
            self.function.add_to_role_policy(statement)
        acknowledge(
            self.function,
            id=f"AwsSolutions-IAM5[Resource::{nag_form(stack, schedules)}]",
            reason="Schedules are named by the registry and created and deleted with it; the pattern covers only the "
            f"schedules in this stack's own group ({scheduling.group_name}), which holds nothing else.",
        )


def nag_form(stack: Stack, arn: str) -> str:
    """How cdk-nag prints an ARN built by ``Stack.format_arn`` in a finding id: pseudo parameters as <AWS::…>."""
    resolved = stack.resolve(arn)
    if isinstance(resolved, str):
        return resolved
    parts = resolved["Fn::Join"][1]
    shown = []
    for part in parts:
        if isinstance(part, str):
            shown.append(part)
        elif isinstance(part, dict) and "Ref" in part:
            shown.append(f"<{part['Ref']}>")
        else:  # pragma: no cover - format_arn joins only strings and pseudo parameters
            raise ValueError(f"unexpected part {part!r} in {arn}")
    return "".join(shown)

