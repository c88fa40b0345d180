"""email.send: render a transactional email and send it through SES."""

from __future__ import annotations

import os
from string import Formatter

import boto3
from botocore.exceptions import ClientError

from shared.jobs import EMAIL_SEND
from shared.payloads import EmailSend, EmailTemplate
from shared.runtime import JobContext, PermanentJobError, job_handler

FROM_ADDRESS = os.environ.get("CONVEYOR_EMAIL_FROM", "no-reply@conveyor.example")

BODIES = {
    EmailTemplate.PASSWORD_RESET: "Someone asked to reset your password. Use this link within an hour: {link}",
    EmailTemplate.WELCOME: "Welcome, {name}! Your account is ready.",
    EmailTemplate.RECEIPT: "Thank you for your order {order_id}. Total: {total}.",
    EmailTemplate.NOTIFICATION: "{message}",
}
# SES answers these for a message that will never be accepted; anything else (throttling, 5xx) is worth a retry.
PERMANENT_SES_ERRORS = {"MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException", "NotFoundException"}

_ses = None


def render(payload: EmailSend) -> str:
    template = BODIES[payload.template]
    needed = {field for _, field, _, _ in Formatter().parse(template) if field}
    missing = sorted(needed - payload.variables.keys())
    if missing:
        raise PermanentJobError(f"template {payload.template.value!r} needs variables {missing}")
    return template.format_map(payload.variables)


def send(payload: EmailSend, ctx: JobContext) -> None:
    global _ses
    if _ses is None:
        _ses = boto3.client("sesv2")
    body = render(payload)
    try:
        response = _ses.send_email(
            FromEmailAddress=FROM_ADDRESS,
            Destination={"ToAddresses": [payload.to]},
            Content={"Simple": {"Subject": {"Data": payload.subject}, "Body": {"Text": {"Data": body}}}},
            # SES keeps this with the message: the job id ties a delivered email back to its job.
            EmailTags=[{"Name": "conveyor_job_id", "Value": ctx.job_id.replace("-", "_")}],
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in PERMANENT_SES_ERRORS:
            raise PermanentJobError(f"SES refused the email: {code}: {exc}") from exc
        raise
    ctx.logger.info("email sent", extra={"ses_message_id": response.get("MessageId"), "template": payload.template.value})


handler = job_handler(EMAIL_SEND, send)
