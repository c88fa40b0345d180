"""What makes a deploy, a delete and a re-create work: trust scoped to the account, nothing named left behind,
placeholders and stack limits caught at synth with a message rather than by CloudFormation."""

from __future__ import annotations

import pytest
from aws_cdk import App
from aws_cdk.assertions import Annotations, Match

from tests.infra.conftest import EXISTING

# Resources whose loss loses data; anything else that outlives the stack only blocks re-creating it (names) or costs.
HOLDS_DATA = {"AWS::RDS::DBCluster", "AWS::RDS::DBInstance", "AWS::SecretsManager::Secret", "AWS::S3::Bucket"}


@pytest.fixture(params=["existing", "create"])
def synth(request, existing_synth, create_synth):
    return existing_synth if request.param == "existing" else create_synth


def test_the_scheduler_role_trusts_only_schedules_of_this_account(synth):
    roles = [
        r["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        for r in synth.resources("AWS::IAM::Role").values()
        if "scheduler.amazonaws.com" in str(r["Properties"]["AssumeRolePolicyDocument"])
    ]
    assert roles
    for statements in roles:
        for statement in statements:
            assert statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
            assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_only_what_holds_data_outlives_the_stack(synth):
    kept = {
        logical_id: resource["Type"]
        for logical_id, resource in synth.template["Resources"].items()
        if {resource.get("DeletionPolicy", "Delete"), resource.get("UpdateReplacePolicy", "Delete")} != {"Delete"}
    }
    assert set(kept.values()) <= HOLDS_DATA, kept
    # A retained schedule group keeps its name, conveyor-<stage>, and the next create of the stack fails on it.
    [group] = synth.resources("AWS::Scheduler::ScheduleGroup").values()
    assert group.get("DeletionPolicy", "Delete") == "Delete"


def warnings(synth, text: str) -> list:
    return Annotations.from_stack(synth.stack).find_warning("*", Match.string_like_regexp(text))


def test_a_placeholder_sender_warns_at_synth(existing_synth):
    # The fixtures send as billing@example.com: example.com is reserved for documentation (RFC 2606), SES cannot
    # verify it, and every email.send would fail.
    [warning] = warnings(existing_synth, "conveyor:emailFrom")
    assert "billing@example.com" in warning.entry.data and "placeholder" in warning.entry.data


@pytest.mark.parametrize(
    "address, placeholder",
    [
        ("no-reply@example.com", True),
        ("a@mail.example.org", True),
        ("a@example.net", True),
        ("a@shop.test", True),
        ("a@acme.example", True),
        ("billing@acme-example.com", False),
        ("billing@examples.com", False),
        ("no-reply@acme.io", False),
    ],
)
def test_placeholder_addresses_are_the_reserved_domains(address, placeholder):
    from infra.config import is_placeholder_email

    assert is_placeholder_email(address) is placeholder


def test_the_stack_counts_the_resources_cloudformation_will(synth):
    assert synth.stack.resource_count == len(synth.template["Resources"])


def test_too_many_queues_for_one_stack_fail_with_the_count_and_the_limit(tmp_path):
    from infra.app import build_app
    from infra.lambda_defaults import FunctionArtifacts
    from infra.stack import StackLimitError
    from tests.infra.crowded_registry import QUEUES

    (tmp_path / "layer" / "python").mkdir(parents=True)
    app = App(
        context={"conveyor:database": EXISTING, "conveyor:registry": "tests.infra.crowded_registry:registry"},
        outdir=str(tmp_path / "out"),
    )
    with pytest.raises(StackLimitError) as error:
        build_app(app, artifacts=FunctionArtifacts(code_dir=tmp_path, layer_dir=tmp_path / "layer"))
    message = str(error.value)
    assert f"{QUEUES} queues" in message
    assert "CloudFormation allows 500 resources per stack" in message
    assert "per queue" in message and "at most" in message
