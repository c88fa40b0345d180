"""The operations API in the template: its function, who may call each route, and what the function may touch.

Two authorizer modes: ``existing_synth`` and ``create_synth`` have no ``conveyor:api.issuer`` (IAM auth on every data
route); ``jwt_synth`` has one (a JWT authorizer with per-route scopes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.jobs import registry
from shared.names import dlq_resource_name, queue_resource_name, schedule_group_name, system_function_name
from tests.infra.conftest import EXISTING, SENDER
from tests.infra.test_stack import as_list, by_property, logical_id, statements_of_role

ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
AUDIENCE = ["ops-dashboard", "ops-cli"]
# Cognito names a resource server's scopes "<identifier>/<scope>": the routes must ask for those names.
PREFIX = "conveyor/"

# Who may call what (CONTEXT "Routes"): written out here, not read from infra.operations, so a route that loses its
# scope or gains one fails this test.
JWT_ROUTES = {
    ("GET /me", "JWT", ()),
    ("GET /queues", "JWT", ("conveyor/jobs:read",)),
    ("GET /runs", "JWT", ("conveyor/jobs:read",)),
    ("GET /runs/{id}", "JWT", ("conveyor/jobs:read",)),
    ("POST /runs/{id}/retry", "JWT", ("conveyor/jobs:retry",)),
    ("POST /runs/{id}/cancel", "JWT", ("conveyor/jobs:cancel",)),
    ("POST /jobs/{name}/trigger", "JWT", ("conveyor/jobs:retry",)),
    ("POST /queues/{name}/redrive", "JWT", ("conveyor/jobs:retry",)),
    ("POST /queues/{name}/pause", "JWT", ("conveyor/jobs:retry",)),
    ("POST /queues/{name}/resume", "JWT", ("conveyor/jobs:retry",)),
    ("GET /health", "JWT", ("conveyor/jobs:read",)),
    ("GET /stats/throughput", "JWT", ("conveyor/jobs:read",)),
    ("GET /openapi.json", "JWT", ("conveyor/jobs:read",)),
    ("$default", "JWT", ()),
    ("GET /", "NONE", ()),
    ("GET /static/{proxy+}", "NONE", ()),
}
PAGE_ROUTES = {"GET /", "GET /static/{proxy+}"}


@pytest.fixture(scope="module")
def jwt_synth(tmp_path_factory):
    from tests.infra.conftest import synthesize

    return synthesize(
        tmp_path_factory.mktemp("jwt"),
        {
            "conveyor:stage": "ops",
            "conveyor:database": EXISTING,
            "conveyor:emailFrom": SENDER,
            "conveyor:api": {
                "issuer": ISSUER, "audience": AUDIENCE, "scopePrefix": PREFIX, "rateLimit": 5, "burstLimit": 7,
            },
        },
    )


@pytest.fixture(params=["existing", "create", "jwt"])
def synth(request, existing_synth, create_synth, jwt_synth):
    return {"existing": existing_synth, "create": create_synth, "jwt": jwt_synth}[request.param]


def stage_of(synth) -> str:
    return synth.stack.config.stage


def ops_function(synth) -> dict:
    return by_property(synth.resources("AWS::Lambda::Function"), "FunctionName", system_function_name("ops", stage=stage_of(synth)))


def routes(synth) -> dict[str, dict]:
    return {r["Properties"]["RouteKey"]: r["Properties"] for r in synth.resources("AWS::ApiGatewayV2::Route").values()}


def joined(value) -> str:
    """A token-valued string (``Fn::Join`` of text and ``Ref``s) as text, each ``Ref`` shown as ``<LogicalId>``."""
    if isinstance(value, str):
        return value
    [separator, parts] = value["Fn::Join"]
    return separator.join(part if isinstance(part, str) else f"<{part['Ref']}>" for part in parts)


def refs(value) -> set[str]:
    """The logical ids an ARN or list of ARNs points at (``Ref`` inside ``Fn::Join``, or ``Fn::GetAtt``), pseudo
    parameters (``AWS::Region``) aside."""
    found = set()
    for item in as_list(value):
        if "Fn::GetAtt" in item:
            found.add(item["Fn::GetAtt"][0])
        elif "Ref" in item:
            found.add(item["Ref"])
        else:
            found.update(
                part["Ref"] for part in item["Fn::Join"][1]
                if isinstance(part, dict) and "Ref" in part and not part["Ref"].startswith("AWS::")
            )  # fmt: skip
    return found


def test_the_ops_function_gets_queues_mappings_schedule_group_and_database(synth):
    stage = stage_of(synth)
    props = ops_function(synth)["Properties"]
    assert props["Handler"] == "functions.ops.handler.handler"
    assert props["Architectures"] == ["arm64"] and props["Runtime"].startswith("python3.")
    assert "VpcConfig" in props
    # API Gateway gives an integration 30 s: the function must answer before that.
    assert props["Timeout"] < 30
    variables = props["Environment"]["Variables"]
    assert variables["CONVEYOR_STAGE"] == stage
    assert variables["CONVEYOR_SCHEDULE_GROUP"] == schedule_group_name(stage=stage)
    assert variables["CONVEYOR_RELAY_LAG_SECONDS"] == "60"  # the relay-lag alarm's threshold: /health agrees with it
    assert "CONVEYOR_DB_SECRET_ARN" in variables and "CONVEYOR_DB_HOST" in variables

    queues = synth.resources("AWS::SQS::Queue")
    queue_urls = json.loads(joined(variables["CONVEYOR_QUEUE_URLS"]))
    dlq_urls = json.loads(joined(variables["CONVEYOR_DLQ_URLS"]))
    mappings = json.loads(joined(variables["CONVEYOR_EVENT_SOURCE_MAPPINGS"]))
    assert set(queue_urls) == set(dlq_urls) == set(mappings) == set(registry.queues())
    esms = synth.resources("AWS::Lambda::EventSourceMapping")
    for label in registry.queues():
        queue_id = logical_id(queues, "QueueName", queue_resource_name(label, stage=stage))
        assert queue_urls[label] == f"<{queue_id}>"
        assert dlq_urls[label] == f"<{logical_id(queues, 'QueueName', dlq_resource_name(label, stage=stage))}>"
        # Each label names the mapping that consumes that label's queue (its Ref is the mapping's UUID).
        mapping_id = mappings[label].strip("<>")
        assert esms[mapping_id]["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}


def test_jwt_routes_require_exactly_their_scopes(jwt_synth):
    found = {
        (key, props["AuthorizationType"], tuple(props.get("AuthorizationScopes", ())))
        for key, props in routes(jwt_synth).items()
    }
    assert found == JWT_ROUTES
    # The function strips the same prefix from the token's scopes.
    assert ops_function(jwt_synth)["Properties"]["Environment"]["Variables"]["CONVEYOR_SCOPE_PREFIX"] == PREFIX
    [authorizer] = jwt_synth.resources("AWS::ApiGatewayV2::Authorizer").values()
    assert authorizer["Properties"]["AuthorizerType"] == "JWT"
    assert authorizer["Properties"]["JwtConfiguration"] == {"Issuer": ISSUER, "Audience": AUDIENCE}
    assert authorizer["Properties"]["IdentitySource"] == ["$request.header.Authorization"]
    for key, props in routes(jwt_synth).items():
        if props["AuthorizationType"] == "JWT":
            assert props["AuthorizerId"] == {"Ref": logical_id(jwt_synth.resources("AWS::ApiGatewayV2::Authorizer"), "AuthorizerType", "JWT")}, key


def test_without_an_issuer_every_data_route_requires_iam_auth(existing_synth, create_synth):
    for synth in (existing_synth, create_synth):
        assert not synth.resources("AWS::ApiGatewayV2::Authorizer")  # no JWT authorizer to misconfigure
        found = {(key, props["AuthorizationType"], tuple(props.get("AuthorizationScopes", ()))) for key, props in routes(synth).items()}
        assert found == {(key, "NONE" if key in PAGE_ROUTES else "AWS_IAM", ()) for key, _, _ in JWT_ROUTES}


def test_only_the_page_routes_are_public(synth):
    public = {key for key, props in routes(synth).items() if props.get("AuthorizationType", "NONE") == "NONE"}
    assert public == PAGE_ROUTES
    # Every route reaches the ops function through one integration.
    [integration] = synth.resources("AWS::ApiGatewayV2::Integration").values()
    assert integration["Properties"]["IntegrationUri"] == {"Fn::GetAtt": [logical_id(synth.resources("AWS::Lambda::Function"), "FunctionName", system_function_name("ops", stage=stage_of(synth))), "Arn"]}
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"


def test_api_gateway_may_invoke_the_function_only_from_this_apis_stage(synth):
    functions = synth.resources("AWS::Lambda::Function")
    function_id = logical_id(functions, "FunctionName", system_function_name("ops", stage=stage_of(synth)))
    [permission] = [
        p["Properties"] for p in synth.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]  # fmt: skip  (one for all routes, not one per route: the stack has 500 resources to spend)
    assert permission["Principal"] == "apigateway.amazonaws.com" and permission["Action"] == "lambda:InvokeFunction"
    [api_id] = synth.resources("AWS::ApiGatewayV2::Api")
    assert joined(permission["SourceArn"]) == (
        f"arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<{api_id}>/$default/*"
    )


def test_the_stage_logs_every_request_and_is_throttled(synth, jwt_synth):
    [api] = synth.resources("AWS::ApiGatewayV2::Api").values()
    assert "CorsConfiguration" not in api["Properties"]  # the page is served from the API's own origin
    [stage] = synth.resources("AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "$default" and props["AutoDeploy"] is True
    log_group = synth.resources("AWS::Logs::LogGroup")[props["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]]
    assert log_group["Properties"]["RetentionInDays"] == 30
    fields = json.loads(props["AccessLogSettings"]["Format"])
    assert {"requestId", "routeKey", "status", "caller", "ip"} <= set(fields)
    assert fields["caller"] == ("$context.authorizer.claims.sub" if synth is jwt_synth else "$context.identity.userArn")
    limits = props["DefaultRouteSettings"]
    expected = (5, 7) if synth is jwt_synth else (10, 20)
    assert (limits["ThrottlingRateLimit"], limits["ThrottlingBurstLimit"]) == expected
    assert "OperationsApiUrl" in synth.template["Outputs"]


def test_the_ops_role_touches_only_this_stacks_queues_mappings_and_schedules(synth):
    stage = stage_of(synth)
    queues = synth.resources("AWS::SQS::Queue")
    main = {logical_id(queues, "QueueName", queue_resource_name(label, stage=stage)) for label in registry.queues()}
    dead = {logical_id(queues, "QueueName", dlq_resource_name(label, stage=stage)) for label in registry.queues()}
    mappings = set(synth.resources("AWS::Lambda::EventSourceMapping"))
    [scheduler_role] = [
        k for k, r in synth.resources("AWS::IAM::Role").items()
        if "scheduler.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])
    ]  # fmt: skip
    granted: dict[str, set[str]] = {}
    for statement in statements_of_role(synth, ops_function(synth)["Properties"]["Role"]["Fn::GetAtt"][0]):
        actions = as_list(statement["Action"])
        resources = as_list(statement["Resource"])
        for action in actions:
            service = action.split(":")[0]
            if service in ("xray",):
                # X-Ray's trace calls have no resource-level permissions (acknowledged in infra.lambda_defaults).
                assert resources == ["*"] and set(actions) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
                continue
            assert "*" not in resources, statement
            if service in ("sqs", "lambda"):
                granted.setdefault(action, set()).update(refs(resources))
            elif service == "scheduler":
                granted.setdefault(action, set()).update(joined(r) for r in resources)
            elif service == "iam":
                assert action == "iam:PassRole"
                assert refs(resources) == {scheduler_role}
                assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
                granted.setdefault(action, set()).update(refs(resources))
            else:
                assert service in ("secretsmanager", "kms"), statement  # the database secret, as every function
    assert granted.pop("sqs:GetQueueAttributes") == main | dead
    # No CancelMessageMoveTask: nothing cancels a move task.
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:StartMessageMoveTask",
                   "sqs:ListMessageMoveTasks"):  # fmt: skip
        assert granted.pop(action) == dead, action
    # Messages go back to the job queues, never into a DLQ.
    assert granted.pop("sqs:SendMessage") == main
    assert granted.pop("lambda:GetEventSourceMapping") == granted.pop("lambda:UpdateEventSourceMapping") == mappings
    own_group = {f"arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:schedule/{schedule_group_name(stage=stage)}/*"}
    assert granted.pop("scheduler:GetSchedule") == granted.pop("scheduler:UpdateSchedule") == own_group
    assert granted.pop("iam:PassRole") == {scheduler_role}
    assert granted == {}, f"unexpected grants: {sorted(granted)}"


def test_the_mapping_arns_name_this_stacks_mappings(existing_synth):
    [statement] = [
        s for s in statements_of_role(existing_synth, ops_function(existing_synth)["Properties"]["Role"]["Fn::GetAtt"][0])
        if "lambda:UpdateEventSourceMapping" in as_list(s["Action"])
    ]  # fmt: skip
    for arn in as_list(statement["Resource"]):
        text = joined(arn)
        assert text.startswith("arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:event-source-mapping:<"), text


def test_cdk_nag_is_clean_in_both_modes(existing_synth, jwt_synth):
    # The fixtures' synth runs cdk-nag (AwsSolutions, Serverless) and would have raised on an unacknowledged error;
    # this checks the report says so too, and that nothing about the API is left as a warning.
    for synth in (existing_synth, jwt_synth):
        report = json.loads((Path(synth.stack.node.root.outdir) / "validation-report.json").read_text())
        for plugin in report["pluginReports"]:
            if plugin["pluginName"] == "Construct Annotations":
                continue
            assert plugin["conclusion"] == "success", plugin["pluginName"]
            for violation in plugin.get("violations", []):
                paths = [c["constructPath"] for c in violation["violatingConstructs"]]
                assert not any("/Operations/" in p for p in paths), violation["ruleName"]


def test_the_authorization_waiver_covers_only_the_page_routes(tmp_path):
    """A data route added without an authorizer fails the synth: the APIG4 acknowledgment is per page route, not
    for the whole API."""
    from aws_cdk import App
    from aws_cdk import aws_apigatewayv2 as apigw
    from aws_cdk import aws_apigatewayv2_integrations as integrations

    from infra.app import build_app
    from infra.bundling import stage_code
    from infra.lambda_defaults import FunctionArtifacts
    from tests.infra.conftest import PROJECT_ROOT

    (tmp_path / "layer" / "python").mkdir(parents=True)
    defaults = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"]
    app = App(
        context={**defaults, "conveyor:database": EXISTING, "conveyor:emailFrom": SENDER},
        outdir=str(tmp_path / "out"),
    )
    code = stage_code(project_root=PROJECT_ROOT, cache_dir=tmp_path / "build")
    stack = build_app(app, artifacts=FunctionArtifacts(code_dir=code, layer_dir=tmp_path / "layer"))
    operations = stack.operations
    apigw.HttpRoute(
        operations,
        "Leak",
        http_api=operations.api,
        route_key=apigw.HttpRouteKey.with_("/leak", apigw.HttpMethod.GET),
        integration=integrations.HttpLambdaIntegration("Leak", operations.function),
        authorizer=apigw.HttpNoneAuthorizer(),
    )
    with pytest.raises(RuntimeError) as error:
        app.synth()
    findings = [block for block in str(error.value).split("\n\n") if block.startswith(("ValidationFailed", "ERROR"))]
    assert len(findings) == 1 and "Operations/Leak/Resource" in findings[0] and "AwsSolutions-APIG4" in findings[0], findings
