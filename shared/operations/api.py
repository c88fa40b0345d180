"""The operations service over HTTP: an API Gateway HTTP API (payload v2) resolver, and the dashboard page beside it.

The same resolver runs in the ops Lambda (``functions/ops/handler.py``, behind API Gateway's JWT or IAM authorizer)
and under ``conveyor dev`` (``shared.operations.local_server``, which turns each HTTP request into the same event).
Each data route reads the caller from the event (:mod:`shared.operations.auth`), calls the one
:class:`~shared.operations.service.Operations` method, and returns its pydantic answer as JSON; the service checks
the caller's scopes itself, so the API and the CLI refuse alike.

Errors are JSON ``{"code", "message", ...details}``: an :class:`OperationError` with its own status (401, 403, 404,
409, 422, 503); a request the routes' types refuse (a bad UUID, a limit out of range, a body that is not an object)
422 ``invalid_request``; an unknown route 404 ``not_found``; anything else 500 ``internal`` (logged with its
traceback, never shown to the caller).

``GET /`` and ``GET /static/<file>`` serve the page's files from ``shared/operations/page/`` without
authentication: they hold no data (the page fetches that from the API with the caller's credentials), so a browser
can load them before it holds a token. ``GET /openapi.json`` needs ``jobs:read`` like every other GET.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, Field

from shared.ledger.cancel import MAX_REASON_CHARS
from shared.ledger.read import MAX_PAGE
from shared.operations.auth import caller_from_event
from shared.operations.errors import Forbidden, InvalidRequest, OperationError, Unauthenticated, UnsupportedMediaType
from shared.operations.models import (
    ActionResult,
    Health,
    Me,
    QueueSwitch,
    QueuesView,
    RedriveResult,
    RunDetail,
    RunsPage,
    Throughput,
)
from shared.operations.scopes import Caller, Scope
from shared.operations.service import Operations
from shared.timeparse import TimeParseError, parse_when

_logger = logging.getLogger(__name__)

TITLE = "Conveyor operations"
API_VERSION = "1"
PAGE_DIR = FilePath(__file__).resolve().parent / "page"
# The only files /static serves: what the page is made of. Anything else (a .py beside them, a dotfile) is 404.
STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".LICENSE": "text/plain; charset=utf-8",
}
# The page's files change with each deploy and carry no version in their names: a short cache, then revalidate.
STATIC_CACHE = "public, max-age=300"
INDEX_CACHE = "no-cache"
MAX_LIMIT = MAX_PAGE  # the runs list's page size cap
INTERNAL_MESSAGE = "internal error; see the function's logs"
MEDIA_TYPE_MESSAGE = (
    "the request body is {content_type}; send a JSON object with Content-Type: application/json "
    "(curl: -H 'Content-Type: application/json' -d '{{...}}')"
)
NO_CREDENTIALS = "no valid credentials: send Authorization: Bearer <token>, with a token this API accepts"

OperationsSource = Operations | Callable[[], Operations]


class CancelRequest(BaseModel):
    """The optional body of ``POST /runs/{id}/cancel``."""

    reason: str | None = Field(default=None, max_length=MAX_REASON_CHARS, description="recorded in the ledger and the audit log")


def build_app(operations: OperationsSource, *, logger: Any = None) -> APIGatewayHttpResolver:
    """The resolver for every route. ``operations`` is the service, or a factory called once, on the first request
    that needs it (so a Lambda's cold start, and the page's files, do not wait for the database or AWS clients).
    ``logger`` (the function's Powertools logger, say) records unexpected errors; default: this module's."""
    log = logger or _logger
    # An answer that does not match its model is our bug: 500 (logged by the catch-all below), not the caller's 422.
    app = APIGatewayHttpResolver(enable_validation=True, response_validation_error_http_code=HTTPStatus.INTERNAL_SERVER_ERROR)
    service = _Lazy(operations)

    def caller() -> Caller:
        found = caller_from_event(app.current_event)
        if found is None:
            raise Unauthenticated(NO_CREDENTIALS)
        return found

    # -- reading ---------------------------------------------------------------------------------------------------

    def json_body() -> None:
        """A body must be JSON: Powertools would read a form post as a form, making a payload of its field names
        (``curl -d`` sends forms unless told otherwise)."""
        event = app.current_event
        content_type = (event.headers.get("content-type") or "").strip().lower()
        if event.body and content_type and not content_type.startswith("application/json"):
            raise UnsupportedMediaType(MEDIA_TYPE_MESSAGE.format(content_type=content_type))

    @app.get("/me", summary="who the caller is, their scopes and the actions they may take")
    def me() -> Me:
        return service().me(caller())

    @app.get("/queues", summary="every queue: SQS counts, DLQ depth, paused, and each job's counts")
    def queues() -> QueuesView:
        return service().queues(caller())

    @app.get("/runs", summary="runs from the ledger, newest first, a page at a time")
    def runs(
        job: Annotated[str | None, Query(description="only this job, e.g. email.send")] = None,
        status: Annotated[str | None, Query(description="only this status (succeeded, dead, running, ...)")] = None,
        since: Annotated[str | None, Query(description="created at or after: a duration ago (90m, 2d) or ISO 8601 with an offset")] = None,
        until: Annotated[str | None, Query(description="created before: a duration ago or ISO 8601 with an offset")] = None,
        q: Annotated[str | None, Query(description="search: a job id, or text in the dedup key, last error or reason")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="runs per page")] = 50,
    ) -> RunsPage:
        who = caller()
        return service().runs(
            who, job=job, status=status, since=_when("since", since), until=_when("until", until), q=q,
            cursor=cursor, limit=limit,
        )  # fmt: skip

    @app.get("/runs/<job_id>", summary="one run: payload (sensitive fields masked), attempts, children, audit")
    def run(job_id: Annotated[UUID, Path(description="the job id")]) -> RunDetail:
        return service().run(caller(), str(job_id))

    @app.get("/health", summary="200 when healthy, else 503; the body says which check failed")
    def health() -> Response[Health]:
        answer = service().health(caller())
        return Response(status_code=200 if answer.healthy else 503, content_type=content_types.APPLICATION_JSON, body=answer)

    @app.get("/stats/throughput", summary="succeeded and failed runs per bucket over the last hour or day")
    def throughput(window: Annotated[Literal["1h", "24h"], Query(description="1h (minute buckets) or 24h")] = "1h") -> Throughput:
        return service().throughput(caller(), window)

    # -- acting ----------------------------------------------------------------------------------------------------

    @app.post("/runs/<job_id>/retry", summary="run a failed or dead job again (same id, fresh attempts)")
    def retry(job_id: Annotated[UUID, Path(description="the job id")]) -> ActionResult:
        return service().retry(caller(), str(job_id))

    @app.post("/runs/<job_id>/cancel", summary="cancel a job that has not finished")
    def cancel(
        job_id: Annotated[UUID, Path(description="the job id")],
        body: Annotated[CancelRequest | None, Body(description='optional: {"reason": "..."}')] = None,
    ) -> ActionResult:
        who = caller()
        json_body()
        return service().cancel(who, str(job_id), body.reason if body else None)

    @app.post("/jobs/<name>/trigger", summary="enqueue a job now, with this payload (default: {})")
    def trigger(
        name: Annotated[str, Path(description="the job name, e.g. email.send")],
        payload: Annotated[dict[str, Any] | None, Body(description="the job's payload, as its model takes it")] = None,
    ) -> ActionResult:
        who = caller()
        json_body()
        return service().trigger(who, name, payload)

    @app.post("/queues/<name>/redrive", summary="move the queue's dead-letter messages back to it")
    def redrive(
        name: Annotated[str, Path(description="the queue label, e.g. email-high")],
        job: Annotated[str | None, Query(description="only this job's messages (copied one by one)")] = None,
    ) -> RedriveResult:
        return service().redrive(caller(), name, job)

    @app.post("/queues/<name>/pause", summary="stop the queue's consumers and its jobs' schedules")
    def pause(name: Annotated[str, Path(description="the queue label")]) -> QueueSwitch:
        return service().pause(caller(), name)

    @app.post("/queues/<name>/resume", summary="start the queue's consumers and its jobs' schedules again")
    def resume(name: Annotated[str, Path(description="the queue label")]) -> QueueSwitch:
        return service().resume(caller(), name)

    # -- documents and the page --------------------------------------------------------------------------------------

    @app.get("/openapi.json", summary="this document", include_in_schema=False)
    def openapi():
        # Read access, like every GET of the API (API Gateway's route asks the same): it is the API's map.
        who = caller()
        if not who.may(Scope.READ):
            raise Forbidden(f"{who.actor} needs the {Scope.READ.value} scope to read the API's description", required_scope=Scope.READ.value)
        document = app.get_openapi_json_schema(title=TITLE, version=API_VERSION)
        return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=document)

    @app.get("/", include_in_schema=False)
    def index():
        return _file_response(PAGE_DIR / "index.html", INDEX_CACHE)

    @app.get("/static/<name>", include_in_schema=False)
    def static(name: str):
        return _static(name)

    @app.get("/static/<folder>/<name>", include_in_schema=False)
    def static_in_folder(folder: str, name: str):
        return _static(folder, name)

    # -- errors ------------------------------------------------------------------------------------------------------

    @app.exception_handler(OperationError)
    def operation_error(exc: OperationError) -> Response:
        return _json_response(exc.http_status, exc.to_json())

    @app.exception_handler(RequestValidationError)
    def invalid_request(exc: RequestValidationError) -> Response:
        # Validation runs before the route, so before the route would have asked who is calling: an anonymous
        # request hears "who are you?" first, as it would from API Gateway's authorizer.
        if caller_from_event(app.current_event) is None and not _public(app.current_event.path):
            return operation_error(Unauthenticated(NO_CREDENTIALS))
        errors = [_error_entry(e) for e in exc.errors()]
        message = "; ".join(f"{e['where']}: {e['message']}" if e["where"] else e["message"] for e in errors)
        return _json_response(422, {"code": "invalid_request", "message": message or "invalid request", "errors": errors})

    @app.exception_handler(RequestUnsupportedContentType)
    def unsupported_content(exc: RequestUnsupportedContentType) -> Response:
        if caller_from_event(app.current_event) is None:
            return operation_error(Unauthenticated(NO_CREDENTIALS))
        content_type = (app.current_event.headers.get("content-type") or "").strip()
        return operation_error(UnsupportedMediaType(MEDIA_TYPE_MESSAGE.format(content_type=content_type)))

    @app.exception_handler(UnicodeDecodeError)
    def not_text(exc: UnicodeDecodeError) -> Response:
        # Only the request body is decoded before a route runs: JSON must be UTF-8.
        return _json_response(422, {"code": "invalid_request", "message": "the request body is not UTF-8 text", "errors": []})

    @app.not_found
    def not_found(exc: NotFoundError) -> Response:
        event = app.current_event
        return _json_response(404, {"code": "not_found", "message": f"no route {event.http_method} {event.path}"})

    @app.exception_handler(Exception)
    def internal(exc: Exception) -> Response:
        log.exception("ops API: %s %s failed", app.current_event.http_method, app.current_event.path)
        return _json_response(500, {"code": "internal", "message": INTERNAL_MESSAGE})

    return app


def openapi_document(app: APIGatewayHttpResolver) -> dict[str, Any]:
    """The API's OpenAPI document as a dict (what ``GET /openapi.json`` serves)."""
    return json.loads(app.get_openapi_json_schema(title=TITLE, version=API_VERSION))


class _Lazy:
    """The service, built on first use and then kept (one per Lambda container, or per local server)."""

    def __init__(self, source: OperationsSource) -> None:
        ready = isinstance(source, Operations) or not callable(source)
        self._value: Operations | None = source if ready else None  # type: ignore[assignment]
        self._factory = None if ready else source
        self._lock = threading.Lock()

    def __call__(self) -> Operations:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    assert self._factory is not None
                    self._value = self._factory()
        return self._value


def _when(name: str, text: str | None):
    if text is None or text == "":
        return None
    try:
        return parse_when(text)
    except TimeParseError as exc:
        raise InvalidRequest(f"{name}: {exc}") from None


def _public(path: str) -> bool:
    return path == "/" or path.startswith("/static/")


def _error_entry(error: dict[str, Any]) -> dict[str, Any]:
    """One validation error as the caller may see it: where, what, and the pydantic error type (no input echoed,
    no Python or file names)."""
    loc = [str(part) for part in error.get("loc", ())]
    # Powertools names the location first (query, path, body) then the field: "query limit", "path job_id".
    where = " ".join(loc)
    message = str(error.get("msg") or error.get("type") or "invalid")
    return {"where": where, "type": str(error.get("type", "")), "message": message}


def _json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body, default=str))


def _static(*parts: str) -> Response:
    # Each part is one path segment (the route cannot match a "/"); refuse "..", dotfiles and anything outside the
    # page's folder, whatever the resolved path says.
    if any(not part or part.startswith(".") or "\\" in part for part in parts):
        return _not_found_file(parts)
    path = PAGE_DIR.joinpath(*parts).resolve()
    if not path.is_relative_to(PAGE_DIR) or not path.is_file() or _content_type(path) is None:
        return _not_found_file(parts)
    return _file_response(path, STATIC_CACHE)


def _content_type(path: FilePath) -> str | None:
    return STATIC_TYPES.get(path.suffix)


def _not_found_file(parts: tuple[str, ...]) -> Response:
    return _json_response(404, {"code": "not_found", "message": f"no file {'/'.join(parts)!r} in the page"})


def _file_response(path: FilePath, cache: str) -> Response:
    content_type = _content_type(path) or "application/octet-stream"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _json_response(404, {"code": "not_found", "message": f"the page's {path.name} is not installed"})
    # Text goes out as text; images as bytes, which the resolver base64-encodes for API Gateway.
    body: str | bytes = data.decode("utf-8") if "charset" in content_type or path.suffix == ".svg" else data
    return Response(status_code=200, content_type=content_type, body=body, headers={"Cache-Control": cache})
