"""The integrations' HTTP client against a real local server (fake_service): what it sends, and how each kind of
answer or failure becomes a retry decision the job runtime understands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.integrations.http import (
    DEFAULT_RETRY_AFTER,
    HttpError,
    Integration,
    IntegrationNotConfigured,
    IntegrationUnavailable,
)
from shared.runtime import PermanentJobError, RetryAfter


def test_success_sends_bearer_token_and_json(fake_service):
    fake_service.use("receipts", token="secret-1")
    fake_service.reply(201, {"receipt_id": "r-1"}, path="/receipts")

    response = Integration.from_env("receipts").request(
        "POST", "/receipts", json={"sale_id": 7, "total": "12.50"}, params={"dry": "no"},
        headers={"Idempotency-Key": "job-1"},
    )  # fmt: skip

    assert response.status == 201
    assert response.json() == {"receipt_id": "r-1"}
    assert json.loads(response.text) == {"receipt_id": "r-1"}
    assert response.headers["content-type"] == "application/json"
    [request] = fake_service.requests
    assert (request.method, request.path, request.query) == ("POST", "/receipts", {"dry": ["no"]})
    assert request.header("Authorization") == "Bearer secret-1"
    assert request.header("Idempotency-Key") == "job-1"
    assert request.header("Content-Type") == "application/json"
    assert request.json == {"sale_id": 7, "total": "12.50"}


def test_json_body_takes_models_decimals_and_dates(fake_service):
    from decimal import Decimal

    from pydantic import BaseModel

    class Line(BaseModel):
        sku: str
        amount: Decimal

    fake_service.use("receipts")
    when = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)

    Integration.from_env("receipts").request(
        "POST", "/receipts", json={"lines": [Line(sku="A-1", amount=Decimal("9.90"))], "at": when, "total": Decimal("9.90")}
    )

    assert fake_service.requests[0].json == {
        "lines": [{"sku": "A-1", "amount": "9.90"}], "at": "2025-03-01T12:30:00+00:00", "total": "9.90",
    }  # fmt: skip


def test_no_token_sends_no_authorization(fake_service, monkeypatch):
    fake_service.use("pos", token=None)
    monkeypatch.delenv("CONVEYOR_STAGE", raising=False)  # no stage: no Secrets Manager lookup either

    Integration.from_env("pos").request("GET", "/items")

    assert fake_service.requests[0].header("Authorization") is None


def test_base_url_path_is_kept(fake_service, monkeypatch):
    fake_service.use("bank")
    monkeypatch.setenv("CONVEYOR_BANK_URL", fake_service.url + "/v2/")

    Integration.from_env("bank").request("GET", "statements")

    assert fake_service.requests[0].path == "/v2/statements"


def test_5xx_is_retryable(fake_service):
    fake_service.use("push")
    fake_service.reply(503, "maintenance")

    with pytest.raises(IntegrationUnavailable, match="push answered 503 to POST /send: maintenance") as caught:
        Integration.from_env("push").request("POST", "/send", json={})

    # A plain exception to the job runtime: the job's own backoff applies.
    assert not isinstance(caught.value, (PermanentJobError, RetryAfter))
    assert caught.value.status == 503
    assert len(fake_service.requests) == 1  # urllib3 did not retry by itself


def test_timeout_is_retryable(fake_service):
    fake_service.use("receipts", timeout="0.3")
    fake_service.hang()

    with pytest.raises(IntegrationUnavailable, match="receipts did not answer POST /receipts in time") as caught:
        Integration.from_env("receipts").request("POST", "/receipts", json={})

    assert caught.value.status is None
    assert len(fake_service.requests) == 1


def test_connection_refused_is_retryable(fake_service, monkeypatch):
    fake_service.use("sms")
    client = Integration.from_env("sms")
    fake_service.stop()  # nothing listens on its port any more

    with pytest.raises(IntegrationUnavailable, match="sms unreachable for POST /messages"):
        client.request("POST", "/messages", json={})


def test_4xx_is_permanent_with_the_body_in_the_reason(fake_service):
    fake_service.use("receipts")
    fake_service.reply(400, {"error": "vat number invalid"})

    with pytest.raises(PermanentJobError) as caught:
        Integration.from_env("receipts").request("POST", "/receipts", json={})

    assert caught.value.reason == 'receipts answered 400 to POST /receipts: {"error": "vat number invalid"}'
    assert isinstance(caught.value, HttpError) and caught.value.status == 400


def test_4xx_reason_keeps_the_first_1000_characters(fake_service):
    fake_service.use("receipts")
    fake_service.reply(422, "x" * 5000)

    with pytest.raises(PermanentJobError) as caught:
        Integration.from_env("receipts").request("POST", "/receipts")

    assert caught.value.reason == "receipts answered 422 to POST /receipts: " + "x" * 1000


def test_429_with_delta_seconds_retries_after_them(fake_service):
    fake_service.use("sms")
    fake_service.reply(429, "slow down", headers={"Retry-After": "7"})

    with pytest.raises(RetryAfter) as caught:
        Integration.from_env("sms").request("POST", "/messages", json={})

    assert caught.value.seconds == 7


def test_429_with_http_date_retries_at_that_time(fake_service):
    fake_service.use("sms")
    when = datetime.now(UTC) + timedelta(seconds=120)
    fake_service.reply(429, "", headers={"Retry-After": format_datetime(when, usegmt=True)})

    with pytest.raises(RetryAfter) as caught:
        Integration.from_env("sms").request("POST", "/messages", json={})

    # The header has whole seconds and some time passes before it is read: somewhere up to two minutes, not the
    # default.
    assert 100 <= caught.value.seconds <= 120


@pytest.mark.parametrize("header", [None, "soon", "-5"])
def test_429_without_a_readable_retry_after_waits_the_default(fake_service, header):
    fake_service.use("sms")
    fake_service.reply(429, "", headers={"Retry-After": header} if header else {})

    with pytest.raises(RetryAfter) as caught:
        Integration.from_env("sms").request("POST", "/messages", json={})

    assert caught.value.seconds == DEFAULT_RETRY_AFTER


def test_429_with_a_huge_retry_after_is_capped(fake_service):
    fake_service.use("sms")
    fake_service.reply(429, "", headers={"Retry-After": "999999"})

    with pytest.raises(RetryAfter) as caught:
        Integration.from_env("sms").request("POST", "/messages", json={})

    assert caught.value.seconds == 3600


def test_token_from_secrets_manager_when_no_token_variable(fake_service, aws_endpoint, stage):
    import boto3

    boto3.client("secretsmanager").create_secret(Name=f"conveyor/{stage}/bank", SecretString='{"token": "from-sm"}')
    boto3.client("secretsmanager").create_secret(Name=f"conveyor/{stage}/pos", SecretString="plain-token")
    fake_service.use("bank", token=None)
    fake_service.use("pos", token=None)

    Integration.from_env("bank").request("GET", "/statements")
    Integration.from_env("pos").request("GET", "/items")

    assert [r.header("Authorization") for r in fake_service.requests] == ["Bearer from-sm", "Bearer plain-token"]


def test_secret_is_read_once_per_container(fake_service, aws_endpoint, stage):
    import boto3

    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name=f"conveyor/{stage}/push", SecretString='{"token": "first"}')
    fake_service.use("push", token=None)
    Integration.from_env("push").request("POST", "/send")
    secrets.put_secret_value(SecretId=f"conveyor/{stage}/push", SecretString='{"token": "second"}')

    Integration.from_env("push").request("POST", "/send")  # a new client, the same container: the cached token
    fake_service.reply(401, "token expired")
    # A 401 for a token from the cache: it may have been rotated since, so the cache is dropped and the job retries
    # (not dead-lettered: the next attempt is what reads the rotated token).
    with pytest.raises(IntegrationUnavailable, match="push answered 401 to POST /send") as caught:
        Integration.from_env("push").request("POST", "/send")
    assert not isinstance(caught.value, PermanentJobError) and caught.value.status == 401
    Integration.from_env("push").request("POST", "/send")  # the retry: the rotated token is read

    assert [r.header("Authorization") for r in fake_service.requests] == [
        "Bearer first", "Bearer first", "Bearer first", "Bearer second",
    ]  # fmt: skip


def test_401_for_a_token_just_read_from_secrets_manager_is_permanent(fake_service, aws_endpoint, stage):
    import boto3

    boto3.client("secretsmanager").create_secret(Name=f"conveyor/{stage}/push", SecretString='{"token": "wrong"}')
    fake_service.use("push", token=None)
    fake_service.reply(401, "bad token")

    # Read fresh for this request: reading it again would send the same token.
    with pytest.raises(PermanentJobError) as caught:
        Integration.from_env("push").request("POST", "/send")
    assert caught.value.reason == "push answered 401 to POST /send: bad token"
    assert fake_service.requests[0].header("Authorization") == "Bearer wrong"


def test_401_for_a_token_from_the_environment_is_permanent(fake_service):
    fake_service.use("receipts", token="wrong")
    fake_service.reply(401, "bad token")

    with pytest.raises(PermanentJobError) as caught:
        Integration.from_env("receipts").request("POST", "/receipts")
    assert caught.value.reason == "receipts answered 401 to POST /receipts: bad token"


@pytest.mark.parametrize("status", [408, 409, 425])
def test_transient_4xx_is_retryable(fake_service, status):
    # 408 Request Timeout, 409 Conflict (a concurrent change on the service's side), 425 Too Early: the same request
    # can succeed a moment later, so the job retries with its backoff instead of dead-lettering.
    fake_service.use("receipts")
    fake_service.reply(status, "try again")

    with pytest.raises(IntegrationUnavailable, match=f"receipts answered {status} to POST /receipts: try again") as caught:
        Integration.from_env("receipts").request("POST", "/receipts")
    assert not isinstance(caught.value, PermanentJobError) and caught.value.status == status


def test_no_secret_sends_no_authorization(fake_service, aws_endpoint, stage):
    fake_service.use("pos", token=None)

    Integration.from_env("pos").request("GET", "/items")

    assert fake_service.requests[0].header("Authorization") is None


def test_missing_url_names_the_variable(monkeypatch):
    monkeypatch.delenv("CONVEYOR_RECEIPTS_URL", raising=False)

    with pytest.raises(IntegrationNotConfigured, match="set CONVEYOR_RECEIPTS_URL"):
        Integration.from_env("receipts")


@pytest.mark.parametrize(("variable", "value"), [("CONVEYOR_POS_URL", "pos.example.com"), ("CONVEYOR_POS_TIMEOUT", "ten")])
def test_malformed_settings_name_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv("CONVEYOR_POS_URL", "https://pos.example.com")
    monkeypatch.setenv(variable, value)

    with pytest.raises(IntegrationNotConfigured, match=variable):
        Integration.from_env("pos")


def test_body_that_is_not_json_is_retryable(fake_service):
    fake_service.use("pos")
    fake_service.reply(200, "<html>proxy error</html>")

    response = Integration.from_env("pos").request("GET", "/items")

    assert response.text == "<html>proxy error</html>"
    with pytest.raises(IntegrationUnavailable, match="not JSON"):
        response.json()
