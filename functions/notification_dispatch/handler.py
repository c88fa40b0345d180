"""notification.dispatch: push a notification to every device of its user, delete the tokens the push service calls
invalid, and email critical notifications (through ``email.send``, template ``notification``).

Three steps, none holding a lock while the push service is called: read the notification, its user and the user's
tokens (one statement); ``POST /send`` to the push integration, 500 tokens per request, with the job id as
``Idempotency-Key``; then one ``ctx.transaction()`` that deletes the invalid tokens, enqueues the email of a critical
notification and marks the run succeeded, together. A retry after a failed push or a crash before that commit sends
the push again (at-least-once; the idempotency key lets the push service drop the copy) but can never enqueue a
second email: the enqueue only exists if the run's success committed, and a redelivered succeeded run is not run.
The email's dedup key ``notification-email:<id>`` (live jobs included) also keeps two dispatch jobs of the same
notification running close together from emailing twice.

The email is built and checked before anything is pushed: a user address that ``email.send`` refuses skips the email
with a warning (as ``orders.digest`` does) and the push and the token clean-up still happen, once. Refused only at
the enqueue, after the push, the run would retry (pushing again each time) and die without deleting a token.

A notification that no longer exists (deleted by ``notifications.cleanup`` or with its user) succeeds with a log
line and does nothing: there is no one left to tell, and a dead letter would ask an operator to act on nothing.
Push failures follow the HTTP client: 5xx and timeouts retry, 429 waits, other 4xx are permanent.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from shared.jobs import EMAIL_SEND, NOTIFICATION_DISPATCH
from shared.outbox import enqueue
from shared.payloads import EmailSend, EmailTemplate, NotificationDispatch, NotificationType
from shared.runtime import JobContext, job_handler
from shared.sqlfile import load_queries

QUERIES = load_queries("functions.notification_dispatch")

CRITICAL = frozenset({NotificationType.ORDER_UPDATE, NotificationType.PAYMENT_ISSUE, NotificationType.SUBSCRIPTION_EXPIRING})
# Push services take a bounded number of tokens per request (FCM's multicast: 500).
TOKENS_PER_REQUEST = 500


def email_dedup_key(notification_id: int) -> str:
    return f"notification-email:{notification_id}"


def push(tokens: list[str], *, title: str, body: str, data: dict[str, str], idempotency_key: str) -> set[str]:
    """Send to every token; the tokens the push service reports invalid."""
    from shared.integrations.http import Integration

    client = Integration.from_env("push")
    invalid: set[str] = set()
    for start in range(0, len(tokens), TOKENS_PER_REQUEST):
        chunk = tokens[start : start + TOKENS_PER_REQUEST]
        response = client.request(
            "POST", "/send", json={"tokens": chunk, "title": title, "body": body, "data": data},
            headers={"Idempotency-Key": f"{idempotency_key}:{start // TOKENS_PER_REQUEST}"},
        )  # fmt: skip
        answer = response.json() if response.text else {}
        # Only tokens we sent: a confused answer must not delete anything else.
        invalid.update(set(answer.get("invalid_tokens") or ()) & set(chunk))
    return invalid


def dispatch(payload: NotificationDispatch, ctx: JobContext) -> dict[str, Any]:
    row = ctx.connection().execute(QUERIES["notification_load"], {"notification_id": payload.notification_id}).fetchone()
    if row is None:
        ctx.logger.info("notification no longer exists; nothing to dispatch", extra={"notification_id": payload.notification_id})
        return {"gone": True}
    _, kind, title, body, email, name, tokens = row
    critical = kind in CRITICAL
    message = None
    if critical:
        try:
            message = EmailSend(
                to=email, template=EmailTemplate.NOTIFICATION, variables={"name": name, "title": title, "body": body}
            )
        except ValidationError as exc:
            ctx.logger.warning(
                "the user's address is not one email.send accepts; the critical notification is pushed but not emailed",
                extra={"notification_id": payload.notification_id, "error": str(exc)},
            )
    invalid = push(
        list(tokens), title=title, body=body, idempotency_key=ctx.job_id,
        data={"notification_id": str(payload.notification_id), "type": kind},
    ) if tokens else set()  # fmt: skip
    with ctx.transaction() as conn:
        if invalid:
            conn.execute(QUERIES["device_tokens_delete"], {"notification_id": payload.notification_id, "tokens": sorted(invalid)})
        if message is not None:
            enqueue(conn, EMAIL_SEND, message, dedup_key=email_dedup_key(payload.notification_id), dedup_active=True)
        result = {"pushed": len(tokens) - len(invalid), "invalid_tokens": len(invalid), "emailed": message is not None}
        if critical and message is None:
            result["email_refused"] = True
        ctx.set_result(result)
    ctx.logger.info("notification dispatched", extra={"notification_id": payload.notification_id, **result})
    return result


handler = job_handler(NOTIFICATION_DISPATCH, dispatch)
