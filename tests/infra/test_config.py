"""cdk.json context: documented keys, checked before anything is built, with errors that say what to fix."""

from __future__ import annotations

import json

import pytest

from infra.config import ConfigError, CreatedDatabase, ExistingDatabase, load_config
from tests.infra.conftest import EXISTING


def config(**overrides):
    context = {"conveyor:database": EXISTING}
    context.update({f"conveyor:{k}": v for k, v in overrides.items()})
    return load_config(context)


def test_defaults_and_both_database_modes():
    existing = config()
    assert existing.stage == "dev" and existing.architecture == "arm64" and existing.relay.mode == "resident"
    assert isinstance(existing.database, ExistingDatabase)
    assert existing.database.proxy_endpoint == EXISTING["proxyEndpoint"]
    created = config(database={"mode": "create", "maxCapacity": 8})
    assert created.database == CreatedDatabase(min_capacity=0.5, max_capacity=8.0)


def test_objects_may_come_from_the_command_line_as_json():
    # npx cdk deploy -c 'conveyor:relay={"mode": "on-demand"}' passes the object as text
    parsed = config(relay=json.dumps({"mode": "on-demand"}), database=json.dumps({"mode": "create"}), logRetentionDays="90")
    assert parsed.relay.mode == "on-demand" and parsed.log_retention_days == 90


def test_the_repository_cdk_json_is_valid():
    from pathlib import Path

    context = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())["context"]
    assert load_config(context).database == CreatedDatabase()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"stage": "Prod"}, "conveyor:stage: stage 'Prod' is invalid"),
        ({"architecture": "sparc"}, "conveyor:architecture='sparc' is not one of arm64, x86_64"),
        ({"logRetentionDays": 10}, "conveyor:logRetentionDays=10 is not a CloudWatch Logs retention"),
        ({"registry": "shared.jobs"}, "must look like 'package.module:attribute'"),
        ({"database": None}, "conveyor:database is missing"),
        ({"database": "{oops"}, "conveyor:database is not valid JSON"),
        ({"database": {"mode": "borrowed"}}, "conveyor:database.mode='borrowed' is not one of existing, create"),
        ({"database": {**EXISTING, "secretArn": "my-secret"}}, "conveyor:database.secretArn='my-secret' is not the complete ARN of a Secrets Manager secret"),
        ({"database": {**EXISTING, "vpcId": "vpc-1"}}, "is not a VPC id"),
        ({"database": {**EXISTING, "subnetIds": []}}, "subnetIds must be a non-empty list"),
        ({"database": {**EXISTING, "subnetIds": ["subnet-0123456789abcdef0"] * 2}}, "lists a subnet more than once"),
        ({"database": {**EXISTING, "securityGroupId": "default"}}, "is not a security group id"),
        ({"database": {**EXISTING, "proxyEndpoint": "not a host"}}, "is not a hostname"),
        ({"database": {**EXISTING, "password": "x"}}, "has unknown keys ['password']"),
        ({"database": {"mode": "create", "minCapacity": 0.3}}, "must be 0-256 ACUs in steps of 0.5"),
        ({"database": {"mode": "create", "minCapacity": 4, "maxCapacity": 2}}, "maxCapacity=2.0 must be at least 1 and at least minCapacity"),
        ({"relay": {"mode": "sometimes"}}, "conveyor:relay.mode='sometimes' is not one of resident, on-demand"),
        ({"relay": {"reservedConcurrency": 0}}, "reservedConcurrency=0 must be 1-10"),
        ({"relay": {"reservedConcurrency": 11}}, "reservedConcurrency=11 must be 1-10"),
        ({"relay": {"reservedConcurrency": "two"}}, "relay.reservedConcurrency must be a whole number"),
        ({"alarms": {"email": "ops"}}, "conveyor:alarms.email='ops' is not an email address"),
        ({"alarms": {"relayLagSeconds": 0}}, "relayLagSeconds=0 must be a positive number"),
        ({"alarms": {"relayLagSeconds": "soon"}}, "must be a whole number"),
        ({"emailFrom": "nobody"}, "conveyor:emailFrom='nobody' is not an email address"),
        ({"database": {**EXISTING, "secretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db"}}, "the complete ARN"),
        ({"database": {**EXISTING, "secretKmsKeyArn": "alias/db"}}, "is not a KMS key ARN"),
        ({"database": {**EXISTING, "dbname": "my-db"}}, "is not a PostgreSQL database name"),
        ({"api": {"issuer": "cognito-idp.eu-west-1.amazonaws.com/pool", "audience": "a"}}, "conveyor:api.issuer='cognito-idp.eu-west-1.amazonaws.com/pool' is not an https URL of a JWT issuer"),
        ({"api": {"issuer": "http://issuer.example.com/", "audience": "a"}}, "is not an https URL"),
        ({"api": {"issuer": "https://issuer.example.com/?tenant=1", "audience": "a"}}, "is not an https URL"),
        ({"api": {"issuer": "https://localhost/", "audience": "a"}}, "is not an https URL"),
        ({"api": {"issuer": "https://issuer.example.com:0/", "audience": "a"}}, "is not an https URL"),
        ({"api": {"issuer": 42, "audience": "a"}}, "conveyor:api.issuer=42 is not an https URL"),
        ({"api": {"issuer": "https://issuer.example.com/"}}, "conveyor:api.audience=None must be the audience your tokens carry"),
        ({"api": {"issuer": "https://issuer.example.com/", "audience": []}}, "conveyor:api.audience=[] must be"),
        ({"api": {"audience": "client"}}, "conveyor:api.audience is set but conveyor:api.issuer is not"),
        ({"api": {"rateLimit": 0}}, "conveyor:api.rateLimit=0 must be 1-10000"),
        ({"api": {"scopes": "x"}}, "conveyor:api has unknown keys ['scopes']"),
        ({"api": {"scopePrefix": "conveyor/"}}, "conveyor:api.scopePrefix is set but conveyor:api.issuer is not"),
        ({"api": {"issuer": "https://issuer.example.com/", "audience": "a", "scopePrefix": "conveyor"}}, "must be what your identity provider puts before each scope name, ending in '/'"),
        ({"api": {"issuer": "https://issuer.example.com/", "audience": "a", "scopePrefix": "my api/"}}, "scopePrefix='my api/' must be"),
    ],
)
def test_bad_values_fail_with_the_key_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as error:
        config(**overrides)
    assert message in str(error.value)


def test_relay_reserves_no_concurrency_unless_asked():
    # A reservation must leave the account 100 unreserved executions; new accounts have a limit of 10, so any
    # default reservation would fail their first deploy. Overlapping relays are safe, so none is needed.
    assert config().relay.reserved_concurrency is None
    assert config(relay={"mode": "resident", "reservedConcurrency": None}).relay.reserved_concurrency is None
    assert config(relay={"reservedConcurrency": 3}).relay.reserved_concurrency == 3
    assert config(relay='{"reservedConcurrency": "2"}').relay.reserved_concurrency == 2


def test_rds_managed_secrets_and_their_missing_fields_are_accepted():
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!cluster-0a1b2c3d-4e5f-AbCdEf"
    parsed = config(database={**EXISTING, "secretArn": arn, "host": "db.example.internal", "dbname": "app"})
    assert (parsed.database.secret_arn, parsed.database.host, parsed.database.dbname) == (arn, "db.example.internal", "app")


def test_a_job_that_sends_email_needs_a_sender(tmp_path):
    from aws_cdk import App

    from infra.app import build_app
    from infra.lambda_defaults import FunctionArtifacts

    (tmp_path / "layer" / "python").mkdir(parents=True)
    app = App(context={"conveyor:database": {"mode": "create"}}, outdir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="conveyor:emailFrom is required: queue 'email-default' runs email.send"):
        build_app(app, artifacts=FunctionArtifacts(code_dir=tmp_path, layer_dir=tmp_path / "layer"))


def test_synth_stops_on_bad_context_before_building_anything(tmp_path):
    from aws_cdk import App

    from infra.app import build_app
    from infra.lambda_defaults import FunctionArtifacts

    app = App(context={"conveyor:database": {"mode": "create"}, "conveyor:stage": "no_underscores"}, outdir=str(tmp_path))
    with pytest.raises(ConfigError, match="conveyor:stage"):
        build_app(app, artifacts=FunctionArtifacts(code_dir=tmp_path, layer_dir=tmp_path))
    assert app.node.children == []


def test_the_api_uses_iam_auth_unless_an_issuer_is_given():
    # Secure by default: no identity provider configured means SigV4 on every data route, never an open API.
    assert config().api.uses_jwt is False
    jwt = config(api={"issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123", "audience": "client-1"})
    assert jwt.api.uses_jwt is True and jwt.api.audience == ("client-1",)
    listed = config(api=json.dumps({"issuer": "https://tenant.eu.auth0.com/", "audience": ["a", "b"], "rateLimit": "50"}))
    assert listed.api.audience == ("a", "b") and listed.api.rate_limit == 50 and listed.api.burst_limit == 20
    assert listed.api.scope_prefix == ""
    cognito = config(api={"issuer": "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123", "audience": "c", "scopePrefix": "https://ops.example.com/"})
    assert cognito.api.scope_prefix == "https://ops.example.com/"
