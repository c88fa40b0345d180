"""A real HTTP server on 127.0.0.1 standing in for one of the product's integrations in tests.

It records every request and answers from a script, so a test drives the real client (urllib3, sockets, timeouts)
rather than a mock of it. Use the ``fake_service`` fixture (tests/integration/conftest.py):

    def test_sends_receipt(fake_service):
        fake_service.use("receipts")                                 # CONVEYOR_RECEIPTS_URL/_TOKEN point here
        fake_service.reply(201, {"receipt_id": "r-1"})               # next request, any path
        fake_service.reply(500, "down", path="/receipts")            # next request to /receipts
        fake_service.route("/items", 200, {"items": []})             # every request to /items
        fake_service.reply(429, "", headers={"Retry-After": "7"})
        fake_service.hang()                                          # next request: no answer (a read timeout)
        fake_service.reply(200, {...}, before=fn)                    # fn(request) runs first: the job is mid-call
        ...run the job...
        [request] = fake_service.requests                            # .method .path .query .headers .json .body
        assert request.headers["Authorization"] == "Bearer test-token"

Answer order: a one-shot reply queued for the request's path, then one queued for any path, then the path's
standing route, then ``default`` (200 with ``{}``). ``use(..., timeout="0.5")`` shortens the client's read timeout so
a hung request fails fast.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from shared.integrations import timeout_variable, token_variable, url_variable

HANG = object()  # a scripted answer: hold the request open without answering
# A hung request is released after this long at most (or when the server stops), far beyond any test read timeout.
HANG_SECONDS = 30.0


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = field(default_factory=dict)  # dict/list → JSON; str/bytes → as is
    headers: dict[str, str] = field(default_factory=dict)
    # Called with the RecordedRequest (in the server's thread) before the answer is sent: what happens elsewhere while
    # the job waits for this answer, e.g. another run committing.
    before: Callable[[RecordedRequest], None] | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]  # names as sent; look up case-insensitively with header()
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


class FakeService:
    def __init__(self, monkeypatch: Any = None) -> None:
        self._monkeypatch = monkeypatch  # pytest's, so use() is undone after the test
        self.requests: list[RecordedRequest] = []
        self.default = Answer()
        self._queued: dict[str | None, deque[Answer | object]] = {}
        self._routes: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-service", daemon=True
        )
        self._stopped = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- scripting -----------------------------------------------------------------------------------------------

    def reply(
        self,
        status: int = 200,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        path: str | None = None,
        before: Callable[[RecordedRequest], None] | None = None,
    ) -> None:
        """Queue one answer: for the next request to ``path``, or to any path when ``path`` is None. ``before`` runs
        with the request just before the answer is sent."""
        answer = Answer(status, {} if body is None else body, dict(headers or {}), before)
        with self._lock:
            self._queued.setdefault(path, deque()).append(answer)

    def route(self, path: str, status: int = 200, body: Any = None, *, headers: dict[str, str] | None = None) -> None:
        """Answer every request to ``path`` this way (after any one-shot replies)."""
        with self._lock:
            self._routes[path] = Answer(status, {} if body is None else body, dict(headers or {}))

    def hang(self, *, path: str | None = None) -> None:
        """The next request (to ``path``, or any) gets no answer: the client's read timeout has to end it."""
        with self._lock:
            self._queued.setdefault(path, deque()).append(HANG)

    def use(self, name: str, *, token: str | None = "test-token", timeout: str | None = None) -> str:
        """Point integration ``name`` here: ``CONVEYOR_<NAME>_URL`` (and ``_TOKEN``, unset when ``token`` is None, so
        the client looks for a Secrets Manager secret when CONVEYOR_STAGE is set; and ``_TIMEOUT`` when given)."""
        monkeypatch = self._monkeypatch
        monkeypatch.setenv(url_variable(name), self.url)
        if token is None:
            monkeypatch.delenv(token_variable(name), raising=False)
        else:
            monkeypatch.setenv(token_variable(name), token)
        if timeout is not None:
            monkeypatch.setenv(timeout_variable(name), timeout)
        return self.url

    # -- serving -------------------------------------------------------------------------------------------------

    def _next_answer(self, path: str) -> Answer | object:
        with self._lock:
            for key in (path, None):
                queue = self._queued.get(key)
                if queue:
                    return queue.popleft()
            return self._routes.get(path, self.default)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = RecordedRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers=dict(self.headers.items()),
                    body=body,
                )
                with service._lock:
                    service.requests.append(request)
                answer = service._next_answer(parts.path)
                if answer is HANG:
                    service._release.wait(HANG_SECONDS)
                    self.close_connection = True
                    return
                assert isinstance(answer, Answer)
                if answer.before is not None:
                    answer.before(request)
                if isinstance(answer.body, (dict, list)):
                    payload, content_type = json.dumps(answer.body).encode(), "application/json"
                elif isinstance(answer.body, bytes):
                    payload, content_type = answer.body, "application/octet-stream"
                else:
                    payload, content_type = str(answer.body).encode(), "text/plain; charset=utf-8"
                self.send_response(answer.status)
                headers = {"Content-Type": content_type, **answer.headers, "Content-Length": str(len(payload))}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        return Handler

    def start(self) -> FakeService:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
