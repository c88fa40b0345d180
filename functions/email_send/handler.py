"""email.send: render a transactional email (subject, plain text and HTML) from its template and send it through
SES v2.

Templates are files beside this module, three per :class:`EmailTemplate` (``templates/<name>.subject.tmpl``,
``.txt.tmpl``, ``.html.tmpl``; the HTML part goes into ``_layout.html.tmpl``), in :class:`string.Template` syntax
(``${name}``; a literal dollar is ``$$``). They are read and checked once, at import: a template that is missing a
part, or a part that does not parse, fails the function's cold start rather than a customer's email. Variables are
HTML-escaped in the HTML part (a line break becomes ``<br>``) and folded onto one line in the subject. The payload's
``subject``, when given, replaces the template's subject; the template's subject variables are then not needed.

A variable the template needs and the payload lacks is a :class:`PermanentJobError` naming them all: no retry adds a
variable. SES refusals of the message itself (unverified sender, rejected content) are permanent too; throttling,
quota and 5xx answers are retried with the job's backoff.

Delivery is at-least-once. SES has no idempotency key: if SES accepted the message and the run then failed to record
its success (a crash, a timeout before the ledger write), the retry sends a second copy. Every message carries the
job id as the SES tag ``conveyor_job_id`` (and the template as ``conveyor_template``), so an SES event destination
(delivery, bounce, complaint) ties each delivered copy back to its job and a duplicate is recognisable there.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

import boto3
from botocore.exceptions import ClientError

from shared.jobs import EMAIL_SEND
from shared.payloads import EmailSend, EmailTemplate
from shared.runtime import JobContext, PermanentJobError, job_handler

FROM_ADDRESS = os.environ.get("CONVEYOR_EMAIL_FROM", "no-reply@conveyor.example")
TEMPLATES = Path(__file__).with_name("templates")

# SES answers these for a message that will never be accepted; anything else (throttling, quota, 5xx) is worth a
# retry: the email itself is fine, and a redrive can replay it once the account is.
PERMANENT_SES_ERRORS = frozenset({"MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException", "NotFoundException"})

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class EmailParts:
    """One template's three parts, parsed."""

    name: str
    subject: Template
    text: Template
    html: Template

    def needed(self, *, with_subject: bool) -> set[str]:
        parts = (self.subject, self.text, self.html) if with_subject else (self.text, self.html)
        return {name for part in parts for name in part.get_identifiers()}


def _read(name: str) -> Template:
    path = TEMPLATES / name
    template = Template(path.read_text(encoding="utf-8"))
    if not template.is_valid():
        raise ValueError(f"email template {path} has an invalid placeholder (write a literal dollar as $$)")
    return template


def load_templates() -> dict[EmailTemplate, EmailParts]:
    """Every template's parts; raises if one is missing or invalid."""
    return {
        template: EmailParts(template.value, *(_read(f"{template.value}.{part}.tmpl") for part in ("subject", "txt", "html")))
        for template in EmailTemplate
    }


PARTS = load_templates()
LAYOUT = _read("_layout.html.tmpl")


def _html_value(value: str) -> str:
    return html.escape(value, quote=True).replace("\r\n", "\n").replace("\n", "<br>\n")


def _subject_value(value: str) -> str:
    # A subject is one header line: a variable's line breaks must not start another.
    return _LINE_BREAKS.sub(" ", value).strip()


def render(payload: EmailSend) -> RenderedEmail:
    """The email ``payload`` asks for. Raises :class:`PermanentJobError` naming the variables it lacks."""
    parts = PARTS[payload.template]
    variables = payload.variables
    missing = sorted(parts.needed(with_subject=payload.subject is None) - variables.keys())
    if missing:
        raise PermanentJobError(f"template {payload.template.value!r} needs variables {missing}")
    if payload.subject is not None:
        subject = _subject_value(payload.subject)
    else:
        subject = _subject_value(parts.subject.substitute({k: _subject_value(v) for k, v in variables.items()}))
    content = parts.html.substitute({k: _html_value(v) for k, v in variables.items()})
    return RenderedEmail(
        subject=subject,
        text=parts.text.substitute(variables),
        html=LAYOUT.substitute(subject=html.escape(subject), content=content),
    )


_ses = None


def send(payload: EmailSend, ctx: JobContext) -> None:
    global _ses
    if _ses is None:
        _ses = boto3.client("sesv2")
    email = render(payload)
    try:
        response = _ses.send_email(
            FromEmailAddress=FROM_ADDRESS,
            Destination={"ToAddresses": [payload.to]},
            Content={
                "Simple": {
                    "Subject": {"Data": email.subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": email.text, "Charset": "UTF-8"}, "Html": {"Data": email.html, "Charset": "UTF-8"}},
                }
            },
            # SES keeps these with the message (and passes them to event destinations): the job id ties a delivered
            # email back to its job, so a duplicate from an at-least-once retry can be recognised.
            EmailTags=[
                {"Name": "conveyor_job_id", "Value": ctx.job_id},
                {"Name": "conveyor_template", "Value": payload.template.value},
            ],
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in PERMANENT_SES_ERRORS:
            raise PermanentJobError(f"SES refused the email: {code}: {exc}") from exc
        raise
    ctx.logger.info("email sent", extra={"ses_message_id": response.get("MessageId"), "template": payload.template.value})


handler = job_handler(EMAIL_SEND, send)
