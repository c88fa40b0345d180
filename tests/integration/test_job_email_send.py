"""email.send: every template rendered and sent through SES v2 (moto), the routing of password resets, the failure
paths and what a redelivery does."""

from __future__ import annotations

import uuid

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses import ses_backends

from functions.email_send.handler import handler as email_handler
from functions.email_send.handler import render
from shared.database import Database
from shared.jobs import EMAIL_SEND
from shared.jobs import registry as product
from shared.local.aws import ensure_queues
from shared.outbox import enqueue
from shared.payloads import EmailSend, EmailTemplate
from shared.queues import QueueDirectory
from shared.runtime import Outcome
from shared.settings import Settings
from shared.testing import invoke

REGION = "us-east-1"
SENDER = "no-reply@conveyor.example"

# Each template with the variables it needs, the subject it makes, and one fragment each of its text and HTML parts.
# The name carries HTML's special characters: the HTML part must show them escaped, the text part as they are.
NAME = 'Ada <Lovelace> & "Co"'
CASES = {
    EmailTemplate.PASSWORD_RESET: (
        {"name": NAME, "link": "https://shop.example/reset?token=abc&u=1"},
        "Reset your password",
        "https://shop.example/reset?token=abc&u=1",
        'href="https://shop.example/reset?token=abc&amp;u=1"',
    ),
    EmailTemplate.ORDER_CONFIRMATION: (
        {"name": NAME, "order_id": "1042", "store": "Corner Shop", "total": "49.90"},
        "Your order 1042 is confirmed",
        "Thank you for your order 1042 at Corner Shop. Total: 49.90.",
        "<strong>1042</strong> at Corner Shop",
    ),
    EmailTemplate.ORDER_STATUS: (
        {"name": NAME, "order_id": "1042", "status": "shipped"},
        "Your order 1042 is shipped",
        "Your order 1042 is now shipped.",
        "is now <strong>shipped</strong>",
    ),
    EmailTemplate.WELCOME: ({"name": NAME}, f"Welcome, {NAME}", f"Welcome, {NAME}!", "Your account is ready."),
    EmailTemplate.USER_CREATED: (
        {"name": NAME, "link": "https://shop.example/set-password?t=x"},
        "An account was created for you",
        "https://shop.example/set-password?t=x",
        '<a href="https://shop.example/set-password?t=x">',
    ),
    EmailTemplate.NOTIFICATION: (
        {"name": NAME, "title": "Payment failed", "body": "Your card was declined.\nUpdate it in the app."},
        "Payment failed",
        "Your card was declined.\nUpdate it in the app.",
        "Your card was declined.<br>\nUpdate it in the app.",
    ),
    EmailTemplate.DIGEST: (
        {"name": NAME, "store": "Corner Shop", "date": "2026-03-02", "items": "- order 1 paid\n- order 2 <cancelled>"},
        "Your digest for Corner Shop, 2026-03-02",
        "- order 1 paid\n- order 2 <cancelled>",
        "- order 1 paid<br>\n- order 2 &lt;cancelled&gt;",
    ),
    EmailTemplate.RECEIPT: (
        {"order_id": "1042", "total": "49.90"},
        "Your receipt for order 1042",
        "Thank you for your order 1042. Total: 49.90.",
        "<strong>49.90</strong>",
    ),
}


def test_every_template_has_a_case():
    assert set(CASES) == set(EmailTemplate)


@pytest.fixture
def bound(sqs, stage, db_url, aws_endpoint):
    ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    email_handler.bind(sqs=sqs, directory=QueueDirectory(sqs, settings), database=database)
    boto3.client("ses", endpoint_url=aws_endpoint).verify_email_identity(EmailAddress=SENDER)
    yield
    database.close()


def sent_to(address: str) -> list:
    """What moto's SES recorded for ``address`` (its backend is in this process: the moto server runs in a thread)."""
    return [m for m in ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages if address in m.destinations.get("ToAddresses", [])]


def unique_address() -> str:
    return f"u{uuid.uuid4().hex[:12]}@example.com"


@pytest.mark.parametrize("template", list(EmailTemplate), ids=str)
def test_each_template_is_rendered_and_sent(bound, stage, template):
    variables, subject, text_fragment, html_fragment = CASES[template]
    to = unique_address()
    result = invoke(email_handler, {"to": to, "template": template.value, "variables": variables}, stage=stage)
    assert result.succeeded, result.reports

    [message] = sent_to(to)
    assert message.source == SENDER
    assert message.subject == subject
    # moto keeps the HTML part of a Simple message (its body); the text part is checked on the rendering below.
    assert html_fragment in message.body
    assert message.body.startswith("<!DOCTYPE html>")
    email = render(EmailSend(to=to, template=template, variables=variables))
    assert text_fragment in email.text
    assert email.html == message.body
    assert "<" not in email.text.replace("<Lovelace>", "").replace("<cancelled>", "")


def test_variables_are_escaped_in_html_and_plain_in_text():
    email = render(EmailSend(to="a@b.co", template=EmailTemplate.WELCOME, variables={"name": NAME}))
    assert "Welcome, Ada &lt;Lovelace&gt; &amp; &quot;Co&quot;!" in email.html
    assert "<Lovelace>" not in email.html
    assert email.text == f"Welcome, {NAME}! Your account is ready.\n"


def test_a_subject_in_the_payload_replaces_the_templates(bound, stage):
    to = unique_address()
    payload = {"to": to, "template": "welcome", "subject": "Hi there", "variables": {"name": "Ada"}}
    assert invoke(email_handler, payload, stage=stage).succeeded
    [message] = sent_to(to)
    assert message.subject == "Hi there"
    assert "<title>Hi there</title>" in message.body


def test_the_subject_stays_on_one_line():
    email = render(EmailSend(to="a@b.co", template=EmailTemplate.NOTIFICATION, variables={"name": "A", "title": "Line one\r\nBcc: x@y.z", "body": "b"}))
    assert email.subject == "Line one Bcc: x@y.z"


def test_a_subject_override_makes_the_subjects_variables_unneeded():
    # notification's subject is ${title}; with a subject of its own the payload needs only name and body.
    email = render(EmailSend(to="a@b.co", template=EmailTemplate.NOTIFICATION, subject="Heads up", variables={"name": "A", "body": "b"}))
    assert email.subject == "Heads up"


def test_missing_variables_are_a_permanent_failure_naming_them(bound, stage):
    to = unique_address()
    result = invoke(email_handler, {"to": to, "template": "order_status", "variables": {"name": "Ada"}}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "template 'order_status' needs variables ['order_id', 'status']" in result.reports[0].error
    assert sent_to(to) == []


def test_an_unverified_sender_is_permanent(bound, stage, monkeypatch):
    # SES (and moto) answer MessageRejected for a From address that is not a verified identity: no retry helps.
    monkeypatch.setattr("functions.email_send.handler.FROM_ADDRESS", f"nobody-{uuid.uuid4().hex[:8]}@unverified.example")
    to = unique_address()
    result = invoke(email_handler, {"to": to, "template": "welcome", "variables": {"name": "Ada"}}, stage=stage)
    assert result.outcomes == [Outcome.DEAD]
    assert "SES refused the email: MessageRejected" in result.reports[0].error
    assert sent_to(to) == []


def test_a_redelivered_succeeded_job_sends_nothing_more(bound, stage):
    to = unique_address()
    job_id = str(uuid.uuid4())
    payload = {"to": to, "template": "welcome", "variables": {"name": "Ada"}}
    assert invoke(email_handler, payload, stage=stage, job_id=job_id).succeeded
    # SQS delivers at least once: the same message again is acknowledged from the run ledger without sending.
    again = invoke(email_handler, payload, stage=stage, job_id=job_id, receive_count=2)
    assert again.response == {"batchItemFailures": []}
    assert len(sent_to(to)) == 1


@pytest.mark.parametrize(
    ("template", "queue"),
    [(EmailTemplate.PASSWORD_RESET, "email-high"), *((t, "email-default") for t in EmailTemplate if t is not EmailTemplate.PASSWORD_RESET)],
    ids=str,
)
def test_password_resets_are_routed_to_email_high(conn, template, queue):
    variables = CASES[template][0]
    job_id = enqueue(conn, EMAIL_SEND, {"to": "ada@example.com", "template": template.value, "variables": variables})
    assert conn.execute("SELECT queue FROM conveyor.outbox WHERE id = %s", (job_id,)).fetchone() == (queue,)
