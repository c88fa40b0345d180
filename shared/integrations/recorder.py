"""The local stand-in for the integrations ``conveyor dev`` has no URL for: an HTTP server on 127.0.0.1 that answers
every request with a plausible 200 and logs it as ``integration receipts POST /receipts (recorded, not sent)``.

Without it a job calling an unconfigured integration would either fail on every attempt (no URL) or, worse, be
faked inside the job; with it the job runs its real client code, and the console says what would have been sent.
Each integration gets its own base URL, ``<recorder>/<name>``, so the recorder knows which one a request is for.
Set ``CONVEYOR_<NAME>_URL`` to reach a real (or sandbox) service instead.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterable, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from shared.integrations import INTEGRATIONS, url_variable

Printer = Callable[[str], None]

# A 200 body per integration, shaped like the real service's answer to the calls the product's jobs make, so a job
# gets through its happy path locally. ``{n}`` is a per-integration counter.
_ANSWERS: dict[str, Callable[[int], Any]] = {
    "receipts": lambda n: {"receipt_id": f"local-{n}"},
    "pos": lambda n: {"items": []},
    "bank": lambda n: {"lines": [], "cursor": None},
    "push": lambda n: {"invalid_tokens": []},
    "sms": lambda n: {"message_id": f"local-{n}"},
}


def answer_for(name: str, n: int) -> Any:
    """The recorder's body for the ``n``-th request to integration ``name`` (``{}`` for one it has no shape for)."""
    make = _ANSWERS.get(name)
    return make(n) if make else {}


class Recorder:
    """Start with ``point_unconfigured()``; ``stop()`` shuts the server and unsets the variables it set."""

    def __init__(self, out: Printer = print, *, environ: MutableMapping[str, str] | None = None) -> None:
        self.out = out
        self.environ = os.environ if environ is None else environ
        self.url: str | None = None
        self._names: set[str] = set()
        self._pointed: list[str] = []
        self._counters: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def point_unconfigured(self, names: Iterable[str] = INTEGRATIONS) -> list[str]:
        """Start the server (on any free port) and set ``CONVEYOR_<NAME>_URL`` for each name that has none; the
        names it took over. Nothing starts when every integration is configured."""
        missing = [name for name in names if not self.environ.get(url_variable(name))]
        if not missing:
            return []
        self._names.update(missing)
        self.start()
        for name in missing:
            self.environ[url_variable(name)] = f"{self.url}/{name}"
            self._pointed.append(name)
        return missing

    def start(self) -> str:
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
            self._server.daemon_threads = True
            self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="integration-recorder",
                daemon=True,
            )  # fmt: skip
            self._thread.start()
        assert self.url is not None
        return self.url

    def stop(self) -> None:
        for name in self._pointed:
            if self.environ.get(url_variable(name), "").startswith(f"{self.url}/"):
                self.environ.pop(url_variable(name), None)
        self._pointed.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _record(self, method: str, target: str) -> tuple[int, Any]:
        parts = urlsplit(target)
        name, _, rest = parts.path.lstrip("/").partition("/")
        shown = "/" + rest + (f"?{parts.query}" if parts.query else "")
        if name not in self._names:
            self.out(f"integration {name or '?'} {method} {parts.path} (refused: the recorder does not stand in for it)")
            return 404, {"error": f"the local integration recorder has no integration {name!r}"}
        with self._lock:
            n = next(self._counters.setdefault(name, itertools.count(1)))
        self.out(f"integration {name} {method} {shown} (recorded, not sent)")
        return 200, answer_for(name, n)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)  # read, so the connection stays usable; the body is not kept
                status, body = recorder._record(self.command, self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass  # the recorder's own line says it

        return Handler
