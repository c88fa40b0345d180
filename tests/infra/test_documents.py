"""The documents bucket and the job permissions as the template grants them: each consumer's role holds exactly what
its jobs declare in the registry, with the stack's values in place of the placeholders, and nothing else."""

from __future__ import annotations

import pytest

from shared.jobs import registry
from shared.names import consumer_function_name, system_function_name
from shared.settings import DOCUMENTS_BUCKET
from tests.infra.conftest import SENDER

# How the tests write the pseudo parameters (the stacks are synthesized without an account or region).
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "REGION", "AWS::AccountId": "ACCOUNT"}


@pytest.fixture(params=["existing", "create"])
def synth(request, existing_synth, create_synth):
    return existing_synth if request.param == "existing" else create_synth


def text(value) -> str:
    """A CloudFormation value as text: pseudo parameters as above, other references as <LogicalId>."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return PSEUDO.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(text(part) for part in parts)
    raise AssertionError(f"unexpected value {value!r}")


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def grants(synth, function_name: str) -> set[tuple[str, str, str, str]]:
    """(effect, action, resource, condition) of every statement in the function's role's policies."""
    [function] = [
        f for f in synth.resources("AWS::Lambda::Function").values() if f["Properties"].get("FunctionName") == function_name
    ]
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    found = set()
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in synth.resources(kind).values():
            if {"Ref": role} not in policy["Properties"].get("Roles", []):
                continue
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                condition = repr(sorted((statement.get("Condition") or {}).items()))
                for action in as_list(statement["Action"]):
                    for resource in as_list(statement["Resource"]):
                        found.add((statement["Effect"], action, text(resource), condition))
    return found


def documents_bucket(synth) -> tuple[str, dict]:
    outputs = synth.template["Outputs"]
    logical_id = outputs["DocumentsBucket"]["Value"]["Ref"]
    return logical_id, synth.template["Resources"][logical_id]


def declared(synth, label: str) -> set[tuple[str, str, str, str]]:
    """What the registry says the queue's jobs may do, placeholders filled in the way the template is read."""
    bucket_id, _ = documents_bucket(synth)
    values = {
        "partition": "aws", "region": "REGION", "account": "ACCOUNT", "stage": synth.stack.config.stage,
        "documents_bucket": f"<{bucket_id}>", "email_from": SENDER,
    }  # fmt: skip
    expected = set()
    for permission in registry.queue_settings(label).permissions:
        condition = {}
        for operator, key, value in permission.conditions:
            condition.setdefault(operator, {})[key] = value.format(**values)
        for action in permission.actions:
            for resource in permission.resources:
                expected.add(("Allow", action, resource.format(**values), repr(sorted(condition.items()))))
            for resource in permission.denied_resources:
                expected.add(("Deny", action, resource.format(**values), "[]"))
    return expected


def test_each_consumer_role_holds_exactly_its_jobs_declared_permissions(synth):
    stage = synth.stack.config.stage
    # What every function has besides its jobs' permissions: the migrate function has nothing else.
    baseline = grants(synth, system_function_name("migrate", stage=stage))
    for label in registry.queues():
        extra = {
            g for g in grants(synth, consumer_function_name(label, stage=stage)) - baseline if not g[1].startswith("sqs:")
        }
        assert extra == declared(synth, label), label


def test_the_new_jobs_get_their_narrow_grants(existing_synth):
    synth = existing_synth
    bucket_id, _ = documents_bucket(synth)
    render = grants(synth, consumer_function_name("pdf-render", stage="test"))
    s3 = {g for g in render if g[1].startswith("s3:")}
    assert s3 == {("Allow", "s3:PutObject", f"arn:aws:s3:::<{bucket_id}>/documents/*", "[]")}
    package = grants(synth, consumer_function_name("pdf-package", stage="test"))
    # Reads the rendered PDFs, writes only packages: it cannot overwrite an invoice.
    assert {g for g in package if g[1].startswith("s3:")} == {
        ("Allow", "s3:GetObject", f"arn:aws:s3:::<{bucket_id}>/documents/*", "[]"),
        ("Allow", "s3:PutObject", f"arn:aws:s3:::<{bucket_id}>/packages/*", "[]"),
    }
    push = grants(synth, consumer_function_name("notification-dispatch", stage="test"))
    secrets = {g[2] for g in push if g[1] == "secretsmanager:GetSecretValue"}
    database_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:conveyor-db-AbCdEf"
    assert secrets == {database_secret, "arn:aws:secretsmanager:REGION:ACCOUNT:secret:conveyor/test/push-??????"}
    sms = grants(synth, consumer_function_name("sms-send", stage="test"))
    publish = {g for g in sms if g[1] == "sns:Publish"}
    # '*' because a phone number has no ARN; every topic and platform endpoint (all have ARNs) denied.
    assert publish == {("Allow", "sns:Publish", "*", "[]"), ("Deny", "sns:Publish", "arn:aws:sns:*:*:*", "[]")}
    # No other function may publish: the alarm topic's publishers are CloudWatch alarms, not roles.
    for label in registry.queues():
        if label != "sms-send":
            assert not any(g[1] == "sns:Publish" for g in grants(synth, consumer_function_name(label, stage="test"))), label


def test_only_functions_whose_jobs_store_documents_get_the_bucket_name(synth):
    bucket_id, _ = documents_bucket(synth)
    stage = synth.stack.config.stage
    functions = {f["Properties"]["FunctionName"]: f["Properties"] for f in synth.resources("AWS::Lambda::Function").values() if "FunctionName" in f["Properties"]}
    for label in registry.queues():
        variables = functions[consumer_function_name(label, stage=stage)]["Environment"]["Variables"]
        names_bucket = any("{documents_bucket}" in r for p in registry.queue_settings(label).permissions for r in p.resources)
        assert (variables.get(DOCUMENTS_BUCKET) == {"Ref": bucket_id}) is names_bucket, label
        assert names_bucket or DOCUMENTS_BUCKET not in variables
    assert {"pdf-render", "pdf-package"} <= {
        label for label in registry.queues() if DOCUMENTS_BUCKET in functions[consumer_function_name(label, stage=stage)]["Environment"]["Variables"]
    }


def tls_only(synth, bucket_id: str) -> bool:
    for policy in synth.resources("AWS::S3::BucketPolicy").values():
        if policy["Properties"]["Bucket"] == {"Ref": bucket_id}:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                if statement["Effect"] == "Deny" and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}:
                    return True
    return False


def test_the_documents_bucket_is_private_encrypted_tls_only_logged_and_kept(synth):
    bucket_id, bucket = documents_bucket(synth)
    props = bucket["Properties"]
    logs_id = props["LoggingConfiguration"]["DestinationBucketName"]["Ref"]
    for logical_id in (bucket_id, logs_id):
        resource = synth.template["Resources"][logical_id]
        assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
        checked = resource["Properties"]
        assert checked["BucketEncryption"] == {"ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
        assert checked["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        }  # fmt: skip
        assert checked["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        assert tls_only(synth, logical_id)
        assert "BucketName" not in checked  # CloudFormation names it: a retained bucket blocks no re-create
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-packages"]["Prefix"] == "packages/" and rules["expire-packages"]["ExpirationInDays"] == 30
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 90}
    assert rules["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
