"""One HTTP client for the product's integrations, and the one place their failures become retry decisions.

    from shared.integrations.http import Integration, HttpError

    client = Integration.from_env("receipts")
    response = client.request("POST", "/receipts", json=body, headers={"Idempotency-Key": ctx.job_id})
    response.status, response.json(), response.text, response.headers

Configuration (``Integration.from_env(name)``; variable names from ``shared.integrations``):

- ``CONVEYOR_<NAME>_URL``: the base URL; ``request``'s path is appended to it. Unset → ``IntegrationNotConfigured``
  naming the variable. Under ``conveyor dev`` the local runtime points every unset one at the built-in recorder.
- the bearer token: ``CONVEYOR_<NAME>_TOKEN`` when set (local runs, tests); otherwise, when ``CONVEYOR_STAGE`` is set
  (on AWS), the Secrets Manager secret ``conveyor/<stage>/<name>``, either JSON ``{"token": "..."}`` or the plain
  token. It is read on the first request and kept for the container's life. A 401 for a kept token drops it and is
  retried (``IntegrationUnavailable``): the secret may have been rotated, and the next attempt reads it again. A 401
  for a token read in this very request, or from the variable, is permanent (``IntegrationRejected``): another
  attempt would send the same token. No variable and no secret → requests go without ``Authorization``.
- ``CONVEYOR_<NAME>_TIMEOUT``: seconds, ``read`` or ``connect,read``; default 3 s to connect, 10 s to read.

What ``request`` returns and raises (every error below is an ``HttpError``, with ``integration``, ``method``,
``path``, ``status`` and ``body``):

- 1xx-3xx → a ``Response`` (redirects are not followed: an API that redirects is misconfigured, and re-sending a POST
  elsewhere is not ours to decide).
- connection errors, timeouts, 5xx, the transient 4xx (408 Request Timeout, 409 Conflict, 425 Too Early) and a 401
  for a cached secret token → ``IntegrationUnavailable``: a plain exception, so the job retries with its own backoff. urllib3 never retries by itself: one attempt of the job is one request, and the job's retry policy
  and run ledger account for every try.
- 429 → ``IntegrationRateLimited``, a ``shared.runtime.RetryAfter`` for the Retry-After header (delta-seconds or an
  HTTP-date; 60 s when absent or unreadable; at most an hour).
- other 4xx → ``IntegrationRejected``, a ``shared.runtime.PermanentJobError`` whose reason holds the status and the
  body's first 1000 characters, so the dead-letter reason says what the service objected to.

Sending is safe to retry only if the service deduplicates: pass an ``Idempotency-Key`` (the job id) where it takes
one. Call out with no database transaction open (see the README, "ctx.transaction").
"""

from __future__ import annotations

import json as jsonlib
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import urllib3

from shared import settings as env
from shared.integrations import secret_name, timeout_variable, token_variable, url_variable
from shared.runtime.errors import PermanentJobError, RetryAfter

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 10.0
# A 429 without a readable Retry-After waits this long.
DEFAULT_RETRY_AFTER = 60
# A longer Retry-After is more likely a wrong header (or a skewed clock behind an HTTP-date) than a real limit; the
# job's attempts bound the waiting anyway.
MAX_RETRY_AFTER = 3600
# 4xx answers that say "not now" rather than "never": the same request can succeed on a later attempt.
TRANSIENT_4XX = frozenset({408, 409, 425})
# How much of a refusing service's body goes into the job's dead-letter reason.
REASON_BODY_CHARS = 1000


class HttpError(Exception):
    """Base of every error ``Integration.request`` raises; says which call failed and, when there was an answer,
    its status and body."""

    def __init__(
        self, message: str, *, integration: str, method: str, path: str, status: int | None = None, body: str = ""
    ) -> None:
        # Not super(): the subclasses also derive from RetryAfter / PermanentJobError, whose constructors differ.
        Exception.__init__(self, message)
        self.integration = integration
        self.method = method
        self.path = path
        self.status = status
        self.body = body


class IntegrationUnavailable(HttpError):
    """The service could not be reached, did not answer in time, answered 5xx or a transient 4xx (or 401 to a cached
    token that may have been rotated): the job retries with its backoff."""


class IntegrationRejected(HttpError, PermanentJobError):
    """A 4xx other than 429 and the transient ones: the same request will be refused again, so the job goes to its
    DLQ with the body."""

    def __init__(self, message: str, **details: Any) -> None:
        HttpError.__init__(self, message, **details)
        self.reason = message


class IntegrationRateLimited(HttpError, RetryAfter):
    """A 429: the job comes back after the service's Retry-After, not after its own backoff."""

    def __init__(self, message: str, *, seconds: float, **details: Any) -> None:
        RetryAfter.__init__(self, seconds, message)
        HttpError.__init__(self, message, **details)


class IntegrationNotConfigured(Exception):
    """The integration's base URL (or another setting) is missing or malformed. A plain exception: the job retries,
    giving a deployment time to fix the setting, and dead-letters with this message if it is not fixed."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # case-insensitive (urllib3's HTTPHeaderDict)
    text: str
    integration: str = ""
    method: str = ""
    path: str = ""

    def json(self) -> Any:
        """The body parsed as JSON (None for an empty body). A body that is not JSON is the service misbehaving:
        ``IntegrationUnavailable``, so the job retries."""
        if not self.text.strip():
            return None
        try:
            return jsonlib.loads(self.text)
        except ValueError as exc:
            raise IntegrationUnavailable(
                f"{self.integration} answered {self.status} to {self.method} {self.path} with a body that is not "
                f"JSON: {self.text[:200]}",
                integration=self.integration, method=self.method, path=self.path, status=self.status, body=self.text,
            ) from exc  # fmt: skip


# One connection pool per container, shared by every integration and thread (urllib3's PoolManager is thread-safe):
# a warm Lambda reuses its TLS connections across invocations.
_pool: urllib3.PoolManager | None = None
_pool_lock = threading.Lock()

# Secret id → token (None: no such secret), read once per container.
_secrets: dict[str, str | None] = {}
_secrets_lock = threading.Lock()


def _pool_manager() -> urllib3.PoolManager:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = urllib3.PoolManager(retries=False, maxsize=10)
        return _pool


class Integration:
    """A configured HTTP integration. Cheap to build: nothing is read from the network until the first request."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        token: str | None = None,
        secret_id: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise IntegrationNotConfigured(f"{name}: base URL {base_url!r} must start with http:// or https://")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.secret_id = None if token else secret_id
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> Integration:
        environ = os.environ if environ is None else environ
        url_name = url_variable(name)
        base_url = (environ.get(url_name) or "").strip()
        if not base_url:
            raise IntegrationNotConfigured(
                f"integration {name!r} has no base URL: set {url_name} (e.g. https://api.example.com/v1)"
            )
        if not base_url.startswith(("http://", "https://")):
            raise IntegrationNotConfigured(f"{url_name}={base_url!r} must start with http:// or https://")
        token = environ.get(token_variable(name)) or None
        stage = environ.get(env.STAGE)
        connect, read = _timeouts(name, environ.get(timeout_variable(name)))
        return cls(
            name,
            base_url,
            token=token,
            secret_id=secret_name(stage, name) if stage and not token else None,
            connect_timeout=connect,
            read_timeout=read,
        )

    def __repr__(self) -> str:
        return f"Integration({self.name!r}, {self.base_url!r})"

    # -- requests ------------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request (no retries here: see the module docstring for what is raised)."""
        method = method.upper()
        details = {"integration": self.name, "method": method, "path": path}
        url = f"{self.base_url}/{path.lstrip('/')}"
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        sent_headers = {"Accept": "application/json", "User-Agent": "conveyor"}
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(json, default=_json_default, separators=(",", ":")).encode()
            sent_headers["Content-Type"] = "application/json"
        token, token_cached = self._resolve_token(details)
        if token:
            sent_headers["Authorization"] = f"Bearer {token}"
        sent_headers.update(headers or {})

        try:
            raw = _pool_manager().request(
                method, url, body=body, headers=sent_headers, timeout=self.timeout, retries=False, redirect=False
            )
        except urllib3.exceptions.NewConnectionError as exc:  # before TimeoutError: urllib3 2 derives it from that
            raise IntegrationUnavailable(f"{self.name} unreachable for {method} {path}: {exc}", **details) from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise IntegrationUnavailable(
                f"{self.name} did not answer {method} {path} in time "
                f"(connect {self.timeout.connect_timeout}s, read {self.timeout.read_timeout}s): {exc}",
                **details,
            ) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise IntegrationUnavailable(f"{self.name} unreachable for {method} {path}: {exc}", **details) from exc

        text = raw.data.decode(_charset(raw.headers), errors="replace")
        status = raw.status
        answered = {**details, "status": status, "body": text}
        if status >= 500:
            raise IntegrationUnavailable(f"{self.name} answered {status} to {method} {path}: {text[:200]}", **answered)
        if status == 429:
            seconds = retry_after_seconds(raw.headers.get("Retry-After"))
            raise IntegrationRateLimited(
                f"{self.name} answered 429 to {method} {path}: retry after {seconds}s", seconds=seconds, **answered
            )
        if status in TRANSIENT_4XX:
            raise IntegrationUnavailable(f"{self.name} answered {status} to {method} {path}: {text[:200]}", **answered)
        if status == 401 and token_cached:
            # The cached token may have been rotated: drop it, and let the retry read the secret again (a 401 then
            # is for a fresh token, and permanent).
            self._forget_token()
            raise IntegrationUnavailable(
                f"{self.name} answered 401 to {method} {path} with a cached token (dropped; the retry reads the "
                f"secret again): {text[:200]}",
                **answered,
            )
        if status >= 400:
            raise IntegrationRejected(
                f"{self.name} answered {status} to {method} {path}: {text[:REASON_BODY_CHARS]}", **answered
            )
        return Response(status=status, headers=raw.headers, text=text, integration=self.name, method=method, path=path)

    # -- credentials ---------------------------------------------------------------------------------------------

    def _resolve_token(self, details: dict[str, Any]) -> tuple[str | None, bool]:
        """The token to send, and whether it came from the container's cache (read by an earlier request, so
        possibly rotated since) rather than from the variable or a read made now."""
        if self._token or not self.secret_id:
            return self._token, False
        with _secrets_lock:
            if self.secret_id in _secrets:
                return _secrets[self.secret_id], True
        token = _read_secret(self.secret_id, details)  # outside the lock: one slow read must not block the others
        with _secrets_lock:
            _secrets[self.secret_id] = token
        return token, False

    def _forget_token(self) -> None:
        if self.secret_id:
            with _secrets_lock:
                _secrets.pop(self.secret_id, None)


def _read_secret(secret_id: str, details: dict[str, Any]) -> str | None:
    """The token in ``secret_id``; None when there is no such secret (the integration takes no credentials)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise IntegrationUnavailable(f"could not read secret {secret_id}: {exc}", **details) from exc
    except BotoCoreError as exc:
        raise IntegrationUnavailable(f"could not read secret {secret_id}: {exc}", **details) from exc
    raw = value.get("SecretString")
    if raw is None:
        raise IntegrationNotConfigured(f"secret {secret_id} holds binary data; store the token as a string")
    try:
        parsed = jsonlib.loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        token = parsed.get("token")
        if not isinstance(token, str) or not token:
            raise IntegrationNotConfigured(f'secret {secret_id} is a JSON object without a "token" string')
        return token
    return raw.strip() or None


def _json_default(value: Any) -> Any:
    """What ``json.dumps`` cannot write by itself: pydantic models as their JSON form, dates and times in ISO 8601,
    decimals and UUIDs as strings (exact amounts stay exact); anything else is a TypeError naming its type."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (datetime, date, dt_time)):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def _timeouts(name: str, raw: str | None) -> tuple[float, float]:
    if not raw or not raw.strip():
        return DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT
    try:
        values = [float(part) for part in raw.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(0 < value <= 900 for value in values):
        raise IntegrationNotConfigured(
            f"{timeout_variable(name)}={raw!r}: give seconds to read (e.g. 10) or to connect and read (e.g. 3,10), "
            "each above 0 and at most 900"
        )
    if len(values) == 1:
        return min(DEFAULT_CONNECT_TIMEOUT, values[0]), values[0]
    return values[0], values[1]


def _charset(headers: Mapping[str, str]) -> str:
    content_type = headers.get("Content-Type", "")
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            try:
                "".encode(value.strip('"'))
            except LookupError:
                break
            return value.strip('"')
    return "utf-8"


def retry_after_seconds(value: str | None, *, now: float | None = None) -> int:
    """Seconds to wait for a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3); ``DEFAULT_RETRY_AFTER``
    when absent or unreadable; never below 0 nor above ``MAX_RETRY_AFTER``."""
    if value is None or not value.strip():
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    if value.isdigit():
        seconds: float = int(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return DEFAULT_RETRY_AFTER
        if when is None or when.tzinfo is None:  # HTTP-dates are GMT; a zone-less one is not an HTTP-date
            return DEFAULT_RETRY_AFTER
        seconds = when.timestamp() - (time.time() if now is None else now)
    return math.ceil(min(max(seconds, 0), MAX_RETRY_AFTER))


__all__ = [
    "HttpError",
    "Integration",
    "IntegrationNotConfigured",
    "IntegrationRateLimited",
    "IntegrationRejected",
    "IntegrationUnavailable",
    "Response",
    "retry_after_seconds",
]
