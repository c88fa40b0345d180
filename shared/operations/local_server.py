"""The operations API on this machine (``conveyor dev``): plain HTTP in, the ops Lambda's resolver behind it.

Each request becomes the event API Gateway's HTTP API (payload format 2.0) would send the ops function, and the
resolver's answer goes back as the HTTP response, so the local API and the deployed one run the same code from the
event on. What API Gateway's authorizer does, this does with static tokens:

* no tokens configured: every caller is actor ``local`` with every scope (the server only listens on loopback, so
  that is whoever already has this machine's shell);
* tokens configured (``CONVEYOR_API_TOKENS`` or ``conveyor dev --token``): ``Authorization: Bearer <token>`` must be
  one of them (compared in constant time); its scopes go in ``requestContext.authorizer.lambda``. A request without a
  known token goes on with no identity, so the API answers 401 on data routes while the page's files still load.

Only loopback addresses are accepted as the host: the tokens travel in clear HTTP.

Other web pages open in the developer's browser can reach 127.0.0.1 too, so two checks guard the (by default
all-scopes) API from them: the ``Host`` header must name this server by a loopback name (a DNS-rebinding page
sends its own host name), and a request that changes anything must not come from another origin (``Origin``, or
``Sec-Fetch-Site: cross-site``): a form or ``fetch`` from another site could otherwise pause a queue or trigger a
job. Terminals (curl, scripts) send neither header and are not affected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver

from shared.operations.scopes import ALL_SCOPES, Scope

DEFAULT_PORT = 8710
LOCAL_ACTOR = "local"
# Powertools keeps the current event on the resolver class (shared by every resolver in the process), so requests
# are resolved one at a time. Operations are short (a few queries, a few SQS calls); a redrive holds it longest.
_RESOLVE_LOCK = threading.Lock()
MAX_BODY_BYTES = 1 << 20  # bigger than any job payload (SQS caps a message at 256 KiB)

Tokens = Mapping[str, frozenset[Scope]]


class LocalApiError(ValueError):
    """The local API cannot start as configured; the message says why, in one line."""


class ApiPortInUse(LocalApiError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"the local API cannot listen on {host}:{port}: the port is in use")
        self.host = host
        self.port = port


def parse_tokens(text: str, *, source: str = "CONVEYOR_API_TOKENS") -> dict[str, frozenset[Scope]]:
    """``TOKEN=scope,scope;TOKEN2=jobs:read`` → {token: scopes}. ``source`` names where the text came from in errors,
    which name entries by position and never echo a token."""
    known = {s.value: s for s in Scope}
    tokens: dict[str, frozenset[Scope]] = {}
    entries = [e.strip() for e in text.split(";")]
    if not any(entries):
        raise LocalApiError(f"{source} is empty: use TOKEN=scope,scope;TOKEN2=scope (scopes: {', '.join(known)})")
    for position, entry in enumerate(entries, start=1):
        where = f"{source} entry {position}" if len(entries) > 1 else source
        if not entry:
            if position == len(entries):
                continue  # a trailing ";"
            raise LocalApiError(f"{where} is empty: separate entries with one ';'")
        token, sep, scope_text = entry.partition("=")
        token = token.strip()
        if not sep:
            raise LocalApiError(f"{where} has no '=': use TOKEN=scope,scope (scopes: {', '.join(known)})")
        if not token:
            raise LocalApiError(f"{where} has no token before '='")
        if any(c.isspace() for c in token) or any(ord(c) < 33 or ord(c) > 126 for c in token):
            raise LocalApiError(f"{where}: a token must be printable ASCII without spaces (it travels in a header)")
        names = [s.strip() for s in scope_text.split(",") if s.strip()]
        if not names:
            raise LocalApiError(f"{where} gives the token no scopes: add some after '=' (scopes: {', '.join(known)})")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise LocalApiError(f"{where}: unknown scope {unknown[0]!r}; scopes: {', '.join(known)}")
        if token in tokens:
            raise LocalApiError(f"{where} repeats a token given earlier")
        tokens[token] = frozenset(known[n] for n in names)
    return tokens


def token_actor(token: str) -> str:
    """What the audit log records for a token's caller: a fingerprint, never the token."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:10]


class LocalApiServer:
    """``app`` is the resolver (:func:`shared.operations.api.build_app`), or a function building it at ``start()``."""

    def __init__(
        self,
        app: ApiGatewayResolver | Callable[[], ApiGatewayResolver],
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        tokens: Tokens | None = None,
    ) -> None:
        _check_loopback(host)
        self._app_source = app
        self.app: ApiGatewayResolver | None = app if isinstance(app, ApiGatewayResolver) else None
        self.host = host
        self.port = port
        self.tokens = dict(tokens) if tokens else None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:8710/`` (the port actually bound, once started with port 0)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        if self._server is not None:
            return
        if self.app is None:
            self.app = self._app_source()  # type: ignore[operator]
        handler = _handler_class(self)
        server_class = _IPv6Server if ":" in self.host else _IPv4Server
        try:
            self._server = server_class((self.host, self.port), handler)
        except OSError as exc:
            if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise ApiPortInUse(self.host, self.port) from None
            raise LocalApiError(f"the local API cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="ops-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request ------------------------------------------------------------------------------------------------

    def authorizer(self, authorization: str | None) -> dict[str, Any] | None:
        """What the authorizer would pass for this ``Authorization`` header; None: no identity."""
        if self.tokens is None:
            return {"lambda": {"actor": LOCAL_ACTOR, "scopes": " ".join(sorted(ALL_SCOPES))}}
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        presented_bytes = presented.strip().encode()
        found: str | None = None
        for token in self.tokens:  # every token is compared, so the time taken says nothing about which matched
            if hmac.compare_digest(token.encode(), presented_bytes):
                found = token
        if found is None:
            return None
        scopes = " ".join(sorted(self.tokens[found]))
        return {"lambda": {"actor": token_actor(found), "scopes": scopes}}

    def resolve(self, event: dict[str, Any]) -> dict[str, Any]:
        assert self.app is not None
        with _RESOLVE_LOCK:
            return self.app.resolve(event, _LocalContext())


def build_event(
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    authorizer: dict[str, Any] | None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for one request, as API Gateway builds it."""
    raw_path, _, raw_query = target.partition("?")
    raw_path = raw_path or "/"
    merged: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            continue
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": merged,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": merged.get("host", "localhost"),
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": merged.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value  # duplicates, as API Gateway joins them
        event["queryStringParameters"] = params
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    return event


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise LocalApiError(f"the local API host must be a loopback IP address (127.0.0.1 or ::1), not {host!r}") from None
    if not address.is_loopback:
        raise LocalApiError(
            f"the local API listens only on this machine: {host} is not a loopback address (use 127.0.0.1 or ::1); "
            "its tokens travel in clear HTTP"
        )


class _IPv4Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # a port in use must be refused, not shared


class _IPv6Server(_IPv4Server):
    address_family = socket.AF_INET6


class _LocalContext:
    """What Lambda would pass as the context (the parts a resolver or logger reads)."""

    function_name = "conveyor-local-ops"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:conveyor-local-ops"
    memory_limit_in_mb = 512

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 30

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def cross_site_problem(method: str, headers: Mapping[str, str], port: int) -> str | None:
    """Why this request may come from another web page and is refused, or None. ``headers`` are lower-cased."""
    names = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    host = (headers.get("host") or "").strip().lower()
    if host not in names:
        return f"Host {host or '(none)'!r} is not this server's loopback address; use http://127.0.0.1:{port}/"
    if method.upper() in SAFE_METHODS:
        return None
    origin = (headers.get("origin") or "").strip().lower()
    if origin and origin not in {f"http://{name}" for name in names}:
        return f"a request from {origin} may not act on this system; actions are taken from the dashboard itself or a terminal"
    if (headers.get("sec-fetch-site") or "").strip().lower() == "cross-site":
        return "a request from another site may not act on this system"
    return None


def _handler_class(server: LocalApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "conveyor-local-api"

        def _serve(self) -> None:
            lowered = {name.lower(): value for name, value in self.headers.items()}
            problem = cross_site_problem(self.command, lowered, server.port)
            if problem is not None:
                self._refuse(403, "forbidden", problem)
                return
            raw_length = (self.headers.get("Content-Length") or "0").strip()
            if not raw_length.isdigit():
                self._refuse(400, "invalid_request", f"Content-Length {raw_length[:40]!r} is not a byte count")
                return
            length = int(raw_length)
            if length > MAX_BODY_BYTES:
                self._refuse(413, "invalid_request", f"the body is over {MAX_BODY_BYTES // 1024} KiB")
                return
            body = self.rfile.read(length) if length else b""
            event = build_event(
                method=self.command, target=self.path, headers=list(self.headers.items()), body=body,
                source_ip=self.client_address[0], authorizer=server.authorizer(self.headers.get("Authorization")),
            )  # fmt: skip
            response = server.resolve(event)
            payload = response.get("body") or ""
            data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode("utf-8")
            headers = dict(response.get("headers") or {})
            for name, values in (response.get("multiValueHeaders") or {}).items():
                headers[name] = ",".join(values)
            self._write(int(response.get("statusCode", 200)), headers, response.get("cookies") or [], data)

        def _refuse(self, status: int, code: str, message: str) -> None:
            # The body (if any) is not read, so the connection cannot be reused for another request.
            self.close_connection = True
            data = json.dumps({"code": code, "message": message}).encode()
            self._write(status, {"Content-Type": "application/json", "Connection": "close"}, [], data)

        def _write(self, status: int, headers: Mapping[str, str], cookies: list[str], data: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, str(value))
            for cookie in cookies:
                self.send_header("Set-Cookie", cookie)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
            pass  # `conveyor dev` prints runs, not every page poll

    return Handler
