"""The HTTP integrations as deployed: each consumer function gets the URL of exactly the integrations its jobs declare
(``CONVEYOR_<NAME>_URL``), the read access to their token secrets, and the deployment settings its jobs read; a
required integration without a URL stops the synth, naming the job, the integration and the context key."""

from __future__ import annotations

import pytest
from aws_cdk import App
from aws_cdk.assertions import Annotations, Match

from infra.config import ConfigError, load_config
from shared.integrations import INTEGRATIONS, url_variable
from shared.jobs import registry
from shared.names import consumer_function_name
from shared.settings import OPS_EMAIL as OPS_EMAIL_VARIABLE
from tests.infra.conftest import CDK_CONTEXT, EXISTING, INTEGRATION_URLS, OPS_EMAIL, SENDER, SMS_GATEWAY_URL
from tests.infra.test_documents import grants

CONFIGURED = {"conveyor:database": EXISTING, "conveyor:emailFrom": SENDER}


def variables(synth, label: str) -> dict:
    [function] = [
        f["Properties"]
        for f in synth.resources("AWS::Lambda::Function").values()
        if f["Properties"].get("FunctionName") == consumer_function_name(label, stage=synth.stack.config.stage)
    ]
    return function["Environment"]["Variables"]


def test_receipt_push_gets_the_configured_url_and_its_token_secret(existing_synth):
    assert variables(existing_synth, "receipt-push")[url_variable("receipts")] == INTEGRATION_URLS["receipts"]
    secrets = {g[2] for g in grants(existing_synth, consumer_function_name("receipt-push", stage="test"))
               if g[1] == "secretsmanager:GetSecretValue"}  # fmt: skip
    assert "arn:aws:secretsmanager:REGION:ACCOUNT:secret:conveyor/test/receipts-??????" in secrets


def test_each_function_gets_exactly_the_urls_and_settings_its_jobs_declare(existing_synth, create_synth):
    for synth in (existing_synth, create_synth):
        urls = synth.stack.config.integrations
        for label, jobs in registry.queues().items():
            present = variables(synth, label)
            expected = {
                url_variable(name): urls[name].url
                for job in jobs
                for name in (*job.integrations, *job.optional_integrations)
                if name in urls
            }
            assert {k: v for k, v in present.items() if k in map(url_variable, INTEGRATIONS)} == expected, label
            assert (OPS_EMAIL_VARIABLE in present) is any(OPS_EMAIL_VARIABLE in job.environment for job in jobs), label
    # Jobs without integrations (the retention job, a cleanup) get none; orders.digest gets the operations address.
    for label in ("reservations-cleanup", "conveyor-maintenance", "email-default"):
        assert not any(k in variables(existing_synth, label) for k in map(url_variable, INTEGRATIONS)), label
    assert variables(existing_synth, "orders-digest")[OPS_EMAIL_VARIABLE] == OPS_EMAIL
    assert variables(create_synth, "orders-digest")[OPS_EMAIL_VARIABLE] == CDK_CONTEXT["conveyor:opsEmail"]


def test_sms_goes_through_sns_unless_a_gateway_url_is_configured(existing_synth, create_synth):
    assert url_variable("sms") not in variables(existing_synth, "sms-send")
    assert variables(create_synth, "sms-send")[url_variable("sms")] == SMS_GATEWAY_URL


def test_placeholder_urls_and_ops_address_warn_at_synth(existing_synth, create_synth):
    def warnings(synth, text: str) -> list:
        return Annotations.from_stack(synth.stack).find_warning("*", Match.string_like_regexp(text))

    # create_synth keeps cdk.json's https://<name>.example.com placeholders and ops@example.com.
    for name in ("push", "receipts", "pos", "bank", "sms"):
        [warning] = warnings(create_synth, f"conveyor:integrations.{name}.url is")
        assert "placeholder" in warning.entry.data
    [warning] = warnings(create_synth, "conveyor:opsEmail is")
    assert "ops@example.com" in warning.entry.data
    assert warnings(existing_synth, "conveyor:integrations") == warnings(existing_synth, "conveyor:opsEmail") == []


def build(tmp_path, context: dict):
    from infra.app import build_app
    from infra.lambda_defaults import FunctionArtifacts

    (tmp_path / "layer" / "python").mkdir(parents=True, exist_ok=True)
    app = App(context=context, outdir=str(tmp_path / "out"))
    return build_app(app, artifacts=FunctionArtifacts(code_dir=tmp_path, layer_dir=tmp_path / "layer"))


def test_a_missing_integration_url_stops_the_synth_naming_job_integration_and_key(tmp_path):
    without_receipts = {name: {"url": url} for name, url in INTEGRATION_URLS.items() if name != "receipts"}
    with pytest.raises(ConfigError) as error:
        build(tmp_path, {**CONFIGURED, "conveyor:opsEmail": OPS_EMAIL, "conveyor:integrations": without_receipts})
    message = str(error.value)
    assert "job 'receipt.push' (queue 'receipt-push') calls the receipts integration" in message
    assert "set conveyor:integrations.receipts.url" in message and "conveyor/dev/receipts" in message


def test_a_missing_ops_email_stops_the_synth_naming_the_job(tmp_path):
    integrations = {name: {"url": url} for name, url in INTEGRATION_URLS.items()}
    with pytest.raises(ConfigError, match="conveyor:opsEmail is required: job 'orders.digest' .* CONVEYOR_OPS_EMAIL"):
        build(tmp_path, {**CONFIGURED, "conveyor:integrations": integrations})


@pytest.mark.parametrize(
    "integrations, message",
    [
        ({"fax": {"url": "https://fax.acme.io"}}, "conveyor:integrations names unknown integrations \\['fax'\\]; known: push"),
        ({"pos": "https://pos.acme.io"}, "conveyor:integrations.pos must be an object like"),
        ({"pos": {"url": "https://pos.acme.io", "token": "secret"}}, "conveyor:integrations.pos has unknown keys \\['token'\\]"),
        ({"pos": {}}, "conveyor:integrations.pos.url=None is not an https base URL"),
        ({"pos": {"url": "http://pos.acme.io"}}, "conveyor:integrations.pos.url='http://pos.acme.io' is not an https"),
        ({"pos": {"url": "https://user:pw@pos.acme.io"}}, "is not an https base URL"),
        ({"pos": {"url": "https://pos.acme.io/?key=1"}}, "is not an https base URL"),
        ({"pos": {"url": "https://localhost"}}, "is not an https base URL"),
        ('{"pos": ', "conveyor:integrations is not valid JSON"),
        (["pos"], "conveyor:integrations must be an object"),
    ],
)
def test_bad_integration_config_fails_with_the_key_and_what_is_allowed(integrations, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"conveyor:database": {"mode": "create"}, "conveyor:integrations": integrations})


def test_integration_config_and_ops_email_are_read():
    parsed = load_config(
        {
            "conveyor:database": {"mode": "create"},
            "conveyor:integrations": '{"receipts": {"url": "https://receipts.tax.mn/api/v1"}}',  # as -c gives it
            "conveyor:opsEmail": "ops@acme.io",
        }
    )
    assert {name: c.url for name, c in parsed.integrations.items()} == {"receipts": "https://receipts.tax.mn/api/v1"}
    assert parsed.ops_email == "ops@acme.io"
    assert load_config({"conveyor:database": {"mode": "create"}}).integrations == {}
    with pytest.raises(ConfigError, match="conveyor:opsEmail='ops' is not an email address"):
        load_config({"conveyor:database": {"mode": "create"}, "conveyor:opsEmail": "ops"})
    # The repository's cdk.json configures every integration a product job requires (placeholders, warned about).
    shipped = load_config(CDK_CONTEXT)
    required = {name for job in registry for name in job.integrations}
    assert required <= set(shipped.integrations) and shipped.ops_email
