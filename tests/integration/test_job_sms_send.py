"""sms.send: through SNS (moto, and a local HTTP server answering as SNS does for the errors moto cannot make), and
through the HTTP SMS gateway when CONVEYOR_SMS_URL is set."""

from __future__ import annotations

import random
from urllib.parse import parse_qs

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sns import sns_backends

from functions.sms_send.handler import handler as sms_handler
from shared.database import Database
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.queues import QueueDirectory
from shared.runtime import Outcome
from shared.settings import Settings
from shared.testing import invoke

REGION = "us-east-1"


@pytest.fixture
def bound(sqs, stage, db_url, monkeypatch):
    ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    sms_handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    monkeypatch.delenv("CONVEYOR_SMS_URL", raising=False)
    yield
    database.close()


def a_number(ending: str = "12") -> str:
    """A number of this test's own (moto's SNS is shared by the session). moto reports numbers ending in 99 opted
    out, so others end in 12."""
    return "+1555" + "".join(random.choices("0123456789", k=5)) + ending


def sms_sent_to(number: str) -> list[str]:
    """The messages moto's SNS published to ``number`` (its backend is in this process: the server is a thread)."""
    return [text for to, text in sns_backends[DEFAULT_ACCOUNT_ID][REGION].sms_messages.values() if to == number]


# -- through SNS (moto) -------------------------------------------------------------------------------------------


def test_sends_the_sms_through_sns(bound, stage):
    number = a_number()
    result = invoke(sms_handler, {"to": number, "text": "Your contract ends in 7 days."}, stage=stage)
    assert result.succeeded, result.reports
    assert sms_sent_to(number) == ["Your contract ends in 7 days."]


def test_an_opted_out_number_is_permanent_and_nothing_is_sent(bound, stage):
    number = a_number(ending="99")
    result = invoke(sms_handler, {"to": number, "text": "hello"}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    error = result.reports[0].error
    # The DLQ reason and the ledger (readable with jobs:read) name the recipient masked, never the full number.
    assert f"the recipient {number[:4]}****{number[-4:]} opted out" in error
    assert number not in error and number[1:] not in error
    assert sms_sent_to(number) == []


def test_a_redelivered_succeeded_job_sends_nothing_more(bound, stage):
    number = a_number()
    job_id = "01a20ff2-9a7d-746a-9023-" + "".join(random.choices("0123456789abcdef", k=12))
    assert invoke(sms_handler, {"to": number, "text": "once"}, stage=stage, job_id=job_id).succeeded
    again = invoke(sms_handler, {"to": number, "text": "once"}, stage=stage, job_id=job_id, receive_count=2)
    assert again.response == {"batchItemFailures": []}
    assert sms_sent_to(number) == ["once"]


# -- SNS's answers, from a local server speaking SNS's query protocol ---------------------------------------------

NS = "http://sns.amazonaws.com/doc/2010-03-31/"
OPTED_IN = f'<CheckIfPhoneNumberIsOptedOutResponse xmlns="{NS}"><CheckIfPhoneNumberIsOptedOutResult><isOptedOut>false</isOptedOut></CheckIfPhoneNumberIsOptedOutResult><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></CheckIfPhoneNumberIsOptedOutResponse>'
PUBLISHED = f'<PublishResponse xmlns="{NS}"><PublishResult><MessageId>m-1</MessageId></PublishResult><ResponseMetadata><RequestId>r2</RequestId></ResponseMetadata></PublishResponse>'
XML = {"Content-Type": "text/xml"}


def sns_error(code: str, message: str, kind: str = "Sender") -> str:
    return f'<ErrorResponse xmlns="{NS}"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r3</RequestId></ErrorResponse>'


@pytest.fixture
def fake_sns(bound, fake_service, monkeypatch):
    """SNS's endpoint pointed at the local server (boto3 reads AWS_ENDPOINT_URL_SNS when it makes the client)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", fake_service.url)
    monkeypatch.setattr("functions.sms_send.handler._sns", None)
    return fake_service


def form(request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.body.decode()).items()}


def test_publishes_a_transactional_sms_to_the_number(fake_sns, stage):
    fake_sns.reply(200, OPTED_IN, headers=XML)
    fake_sns.reply(200, PUBLISHED, headers=XML)
    assert invoke(sms_handler, {"to": "+97688112233", "text": "Сайн байна уу"}, stage=stage).succeeded
    check, publish = (form(r) for r in fake_sns.requests)
    assert check["Action"] == "CheckIfPhoneNumberIsOptedOut" and check["phoneNumber"] == "+97688112233"
    assert publish["Action"] == "Publish"
    assert publish["PhoneNumber"] == "+97688112233" and publish["Message"] == "Сайн байна уу"
    attribute = {k.rsplit(".", 1)[-1]: v for k, v in publish.items() if k.startswith("MessageAttributes.entry.1.")}
    assert attribute == {"Name": "AWS.SNS.SMS.SMSType", "DataType": "String", "StringValue": "Transactional"}


def test_an_invalid_parameter_is_permanent(fake_sns, stage):
    fake_sns.reply(200, OPTED_IN, headers=XML)
    fake_sns.reply(400, sns_error("InvalidParameter", "Invalid parameter: PhoneNumber Reason: not reachable"), headers=XML)
    result = invoke(sms_handler, {"to": "+97688112233", "text": "x"}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "SNS refused the SMS: InvalidParameter: Invalid parameter: PhoneNumber Reason: not reachable" in result.reports[0].error


def test_sns_errors_that_echo_the_number_do_not_put_it_in_the_error(fake_sns, stage):
    fake_sns.reply(200, OPTED_IN, headers=XML)
    fake_sns.reply(400, sns_error("InvalidParameter", "Invalid parameter: PhoneNumber Reason: +97688112233 is not valid"), headers=XML)
    dead = invoke(sms_handler, {"to": "+97688112233", "text": "x"}, stage=stage)
    assert dead.outcomes == [Outcome.DEAD]
    assert "PhoneNumber Reason: +976****2233 is not valid" in dead.reports[0].error
    assert "97688112233" not in dead.reports[0].error

    fake_sns.reply(200, OPTED_IN, headers=XML)
    fake_sns.reply(500, sns_error("InternalError", "could not route 97688112233", "Receiver"), headers=XML)
    retried = invoke(sms_handler, {"to": "+97688112233", "text": "x"}, stage=stage)
    assert retried.outcomes == [Outcome.RETRYING]
    assert "could not route +976****2233" in retried.reports[0].error
    assert "97688112233" not in retried.reports[0].error


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [(400, "Throttling", "Sender"), (500, "InternalError", "Receiver"), (400, "KMSThrottling", "Sender")],
)
def test_throttling_and_server_errors_are_retried(fake_sns, stage, status, code, kind):
    fake_sns.reply(200, OPTED_IN, headers=XML)
    fake_sns.reply(status, sns_error(code, "try later", kind), headers=XML)
    result = invoke(sms_handler, {"to": "+97688112233", "text": "x"}, stage=stage)
    assert result.outcomes == [Outcome.RETRYING]
    assert code in result.reports[0].error
    # One job attempt, one request: botocore does not retry behind the job's backoff.
    assert len(fake_sns.requests) == 2


# -- through the HTTP gateway -------------------------------------------------------------------------------------


def test_with_a_gateway_configured_it_posts_to_the_gateway_with_the_job_id_as_idempotency_key(bound, fake_service, stage):
    fake_service.use("sms")
    fake_service.route("/messages", 202, {"id": "g-1"})
    number = a_number()
    result = invoke(sms_handler, {"to": number, "text": "via gateway"}, stage=stage, job_id="01a20ff2-9a7d-746a-9023-cd1e200d5414")
    assert result.succeeded, result.reports
    [request] = fake_service.requests
    assert (request.method, request.path, request.json) == ("POST", "/messages", {"to": number, "text": "via gateway"})
    assert request.header("Idempotency-Key") == "01a20ff2-9a7d-746a-9023-cd1e200d5414"
    assert sms_sent_to(number) == []  # not through SNS


def test_a_gateway_refusal_is_permanent_with_its_body(bound, fake_service, stage):
    fake_service.use("sms")
    fake_service.route("/messages", 422, {"error": "number not reachable"})
    result = invoke(sms_handler, {"to": a_number(), "text": "x"}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "number not reachable" in result.reports[0].error


def test_a_gateway_refusal_that_echoes_the_number_does_not_put_it_in_the_error(bound, fake_service, stage):
    fake_service.use("sms")
    number = a_number()
    fake_service.route("/messages", 422, {"error": f"{number} not reachable"})
    result = invoke(sms_handler, {"to": number, "text": "x"}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    error = result.reports[0].error
    assert f"{number[:4]}****{number[-4:]} not reachable" in error
    assert number not in error and number[1:] not in error


def test_a_gateway_outage_is_retried(bound, fake_service, stage):
    fake_service.use("sms")
    fake_service.route("/messages", 503, "down")
    result = invoke(sms_handler, {"to": a_number(), "text": "x"}, stage=stage)
    assert result.outcomes == [Outcome.RETRYING]
