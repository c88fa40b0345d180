"""sms.send: one SMS, through Amazon SNS, or through the HTTP SMS gateway when ``CONVEYOR_SMS_URL`` is set.

SNS: the number is checked against the account's opt-out list first (``CheckIfPhoneNumberIsOptedOut``): SNS accepts
a publish to an opted-out number and then silently drops it, so without the check the job would "succeed" with
nothing sent. An opted-out number, and SNS's ``InvalidParameter``-type answers (a number or message SNS will never
take), are a :class:`PermanentJobError`; throttling, 5xx and connection errors are retried with the job's backoff
(5 attempts). The message is ``Transactional`` (SNS's higher-priority route, the one for one-time notices).

Gateway: ``POST /messages {"to", "text"}`` through the shared HTTP client (``Integration.from_env("sms")``), with
the job id as ``Idempotency-Key``: a gateway that honours it sends once however often the job retries. The client
maps its answers: 5xx/timeouts (and 408, 409, 425) retry, 429 waits for Retry-After, other 4xx are permanent with
the body as reason.

Errors never carry the full number: they end up in the DLQ reason and the run ledger, which anyone with jobs:read
can read. The recipient appears masked (+976****1234), in our messages and in whatever SNS or the gateway echoed.

Delivery through SNS is at-least-once: SNS has no idempotency key, so a retry after an accepted publish whose run
could not record success sends a second SMS. The SNS message id is logged with the job id to trace one.
"""

from __future__ import annotations

import os

from botocore.exceptions import ClientError

from shared.integrations import url_variable
from shared.jobs import SMS_SEND
from shared.payloads import SmsSend
from shared.runtime import JobContext, PermanentJobError, job_handler

# SNS answers these for a publish that will never succeed (a number or message it rejects); anything else
# (Throttling, InternalError, KMS throttling) is worth a retry.
PERMANENT_SNS_ERRORS = frozenset({"InvalidParameter", "ParameterValueInvalid", "ValidationException", "OptedOut"})

# One job attempt is one request: the job's own backoff (and the run ledger) accounts for every retry, as the HTTP
# client does for the gateway. (A botocore Config, made with the client: botocore.config alone imports ~90 ms.)
_RETRIES = {"mode": "standard", "total_max_attempts": 1}
_sns = None


def masked(number: str) -> str:
    """The number as errors may show it: country code and last four digits (+976****1234)."""
    return f"{number[:4]}****{number[-4:]}" if len(number) > 8 else "****"


def _mask_in_error(exc: BaseException, number: str) -> None:
    """Replace the number (with or without its +) by its masked form in ``exc`` and the exceptions it was raised
    from: their messages (``args``), a PermanentJobError's or RetryAfter's ``reason`` and an HTTP error's ``body``."""
    hidden = masked(number)
    forms = [number, number.lstrip("+")] if number.lstrip("+") else [number]

    def clean(value):
        if isinstance(value, str):
            for form in forms:
                value = value.replace(form, hidden)
        return value

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(clean(arg) for arg in current.args)
        for attribute in ("reason", "body"):
            if isinstance(getattr(current, attribute, None), str):
                setattr(current, attribute, clean(getattr(current, attribute)))
        current = current.__cause__ or current.__context__


def sns_client():
    global _sns
    if _sns is None:
        # boto3 (about 130 ms of imports) only on the SNS path: a function that sends through a gateway never loads
        # it, and its cold start is that much shorter.
        import boto3
        from botocore.config import Config

        _sns = boto3.client("sns", config=Config(retries=_RETRIES))
    return _sns


def _permanent_or_raise(exc: ClientError, what: str) -> None:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in PERMANENT_SNS_ERRORS:
        raise PermanentJobError(f"SNS refused {what}: {code}: {exc.response.get('Error', {}).get('Message', exc)}") from exc


def send_with_sns(payload: SmsSend, ctx: JobContext) -> str | None:
    sns = sns_client()
    try:
        opted_out = sns.check_if_phone_number_is_opted_out(phoneNumber=payload.to)["isOptedOut"]
    except ClientError as exc:
        _permanent_or_raise(exc, "the number")
        raise
    if opted_out:
        raise PermanentJobError(f"the recipient {masked(payload.to)} opted out of SMS from this account; nothing was sent")
    try:
        response = sns.publish(
            PhoneNumber=payload.to,
            Message=payload.text,
            MessageAttributes={"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}},
        )
    except ClientError as exc:
        _permanent_or_raise(exc, "the SMS")
        raise
    return response.get("MessageId")


def send_with_gateway(payload: SmsSend, ctx: JobContext) -> str | None:
    from shared.integrations.http import Integration

    response = Integration.from_env("sms").request(
        "POST", "/messages", json={"to": payload.to, "text": payload.text}, headers={"Idempotency-Key": ctx.job_id}
    )
    try:
        answer = response.json()
    except ValueError:
        return None
    return str(answer.get("id")) if isinstance(answer, dict) and answer.get("id") is not None else None


def send(payload: SmsSend, ctx: JobContext) -> None:
    gateway = bool(os.environ.get(url_variable("sms")))
    try:
        message_id = (send_with_gateway if gateway else send_with_sns)(payload, ctx)
    except Exception as exc:
        _mask_in_error(exc, payload.to)
        raise
    ctx.logger.info("sms sent", extra={"via": "gateway" if gateway else "sns", "message_id": message_id})


handler = job_handler(SMS_SEND, send)
