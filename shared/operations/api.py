"""The operations service over HTTP: an API Gateway HTTP API (payload v2) resolver, and the dashboard page beside it.

The same resolver runs in the ops Lambda (``functions/ops/handler.py``, behind API Gateway's JWT or IAM authorizer)
and under ``conveyor dev`` (``shared.operations.local_server``, which turns each HTTP request into the same event).
Each data route reads the caller from the event (:mod:`shared.operations.auth`), calls the one
:class:`~shared.operations.service.Operations` method, and returns its pydantic answer as JSON; the service checks
the caller's scopes itself, so the API and the CLI refuse alike.

Errors are JSON ``{"code", "message", ...details}``: an :class:`OperationError` with its own status (401, 403, 404,
409, 415, 422, 503); a request the routes' types refuse (a bad UUID, a limit out of range, a body that is not an object)
422 ``invalid_request``; an unknown route 404 ``not_found``; anything else 500 ``internal`` (logged with its
traceback, never shown to the caller). The OpenAPI document says so: each data route declares exactly the error
statuses it can answer, each as :class:`~shared.operations.models.ErrorAnswer`, its description names the scope it
needs, and its security the bearer token (:func:`_documented`).

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
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from pydantic import BaseModel, Field

from shared.ledger.cancel import MAX_REASON_CHARS
from shared.ledger.read import MAX_PAGE
from shared.operations.auth import caller_from_event
from shared.operations.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    OperationError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
    WrongState,
)
from shared.operations.models import (
    ActionResult,
    ErrorAnswer,
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
INTERNAL_MESSAGE = "internal error; see the function's logs"
MEDIA_TYPE_MESSAGE = (
    "the request body is {content_type}; send a JSON object with Content-Type: application/json "
    "(curl: -H 'Content-Type: application/json' -d '{{...}}')"
)
NO_CREDENTIALS = "no valid credentials: send Authorization: Bearer <token>, with a token this API accepts"

# -- the OpenAPI document's account of authentication and errors ----------------------------------------------------

BEARER = "bearer"
SECURITY_SCHEMES = {
    BEARER: HTTPBearer(
        bearerFormat="JWT",
        description="On AWS, a JWT that API Gateway's authorizer accepts, its scopes (jobs:read, jobs:retry, "
        "jobs:cancel) in the scope claim; under conveyor dev, one of its static tokens.",
    )
}
# What each error status means on this API, and the code its body carries (the errors' own, so they cannot drift).
INTERNAL = "internal"
ERROR_DESCRIPTIONS: dict[int, tuple[str, str]] = {
    Unauthenticated.http_status: (Unauthenticated.code, "no valid credentials"),
    Forbidden.http_status: (Forbidden.code, "the caller lacks the {scope} scope (required_scope names it)"),
    NotFound.http_status: (NotFound.code, "no such {what} (kind says which)"),
    WrongState.http_status: (WrongState.code, "the action does not apply now (status says why)"),
    UnsupportedMediaType.http_status: (UnsupportedMediaType.code, "the body is not sent as application/json"),
    InvalidRequest.http_status: (InvalidRequest.code, "the parameters or body were refused (errors lists each)"),
    500: (INTERNAL, "an unexpected error, logged by the function; no details are given"),
    Unavailable.http_status: (Unavailable.code, "the database or an AWS service failed"),
}

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

    @app.get("/me", summary="who the caller is, their scopes and the actions they may take", **_documented(None))
    def me() -> Me:
        return service().me(caller())

    @app.get(
        "/queues", summary="every queue: SQS counts, DLQ depth, paused, and each job's counts",
        **_documented(Scope.READ, 503),
    )
    def queues() -> QueuesView:
        return service().queues(caller())

    @app.get(
        "/runs", summary="runs from the ledger, newest first, a page at a time", **_documented(Scope.READ, 422, 503)
    )
    def runs(
        job: Annotated[str | None, Query(description="only this job, e.g. email.send")] = None,
        status: Annotated[str | None, Query(description="only this status (succeeded, dead, running, ...)")] = None,
        since: Annotated[str | None, Query(description="created at or after: a duration ago (90m, 2d) or ISO 8601 with an offset")] = None,
        until: Annotated[str | None, Query(description="created before: a duration ago or ISO 8601 with an offset")] = None,
        q: Annotated[str | None, Query(description="search: a job id, or text in the dedup key, last error or reason")] = None,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="runs per page")] = 50,
    ) -> RunsPage:
        who = caller()
        return service().runs(
            who, job=job, status=status, since=_when("since", since), until=_when("until", until), q=q,
            cursor=cursor, limit=limit,
        )  # fmt: skip

    @app.get(
        "/runs/<job_id>", summary="one run: payload (sensitive fields masked), attempts, children, audit",
        **_documented(Scope.READ, 404, 422, 503, what="job"),
    )
    def run(job_id: Annotated[UUID, Path(description="the job id")]) -> RunDetail:
        return service().run(caller(), str(job_id))

    @app.get(
        "/health", summary="200 when healthy, else 503; the body says which check failed",
        **_documented(Scope.READ, unhealthy=Health),
    )
    def health() -> Response[Health]:
        answer = service().health(caller())
        return Response(status_code=200 if answer.healthy else 503, content_type=content_types.APPLICATION_JSON, body=answer)

    @app.get(
        "/stats/throughput", summary="succeeded and failed runs per bucket over the last hour or day",
        **_documented(Scope.READ, 422, 503),
    )
    def throughput(window: Annotated[Literal["1h", "24h"], Query(description="1h (minute buckets) or 24h")] = "1h") -> Throughput:
        return service().throughput(caller(), window)

    # -- acting ----------------------------------------------------------------------------------------------------

    @app.post(
        "/runs/<job_id>/retry", summary="run a failed or dead job again (same id, fresh attempts)",
        **_documented(Scope.RETRY, 404, 409, 422, 503, what="job"),
    )
    def retry(job_id: Annotated[UUID, Path(description="the job id")]) -> ActionResult:
        return service().retry(caller(), str(job_id))

    @app.post(
        "/runs/<job_id>/cancel", summary="cancel a job that has not finished",
        **_documented(Scope.CANCEL, 404, 409, 415, 422, 503, what="job"),
    )
    def cancel(
        job_id: Annotated[UUID, Path(description="the job id")],
        body: Annotated[CancelRequest | None, Body(description='optional: {"reason": "..."}')] = None,
    ) -> ActionResult:
        who = caller()
        json_body()
        return service().cancel(who, str(job_id), body.reason if body else None)

    @app.post(
        "/jobs/<name>/trigger", summary="enqueue a job now, with this payload (default: {})",
        **_documented(Scope.RETRY, 404, 415, 422, 503, what="job name"),
    )
    def trigger(
        name: Annotated[str, Path(description="the job name, e.g. email.send")],
        payload: Annotated[dict[str, Any] | None, Body(description="the job's payload, as its model takes it")] = None,
    ) -> ActionResult:
        who = caller()
        json_body()
        return service().trigger(who, name, payload)

    @app.post(
        "/queues/<name>/redrive", summary="move the queue's dead-letter messages back to it",
        # 409: a message move task is already running on the dead-letter queue.
        **_documented(Scope.RETRY, 404, 409, 422, 503, what="queue, or job name"),
    )
    def redrive(
        name: Annotated[str, Path(description="the queue label, e.g. email-high")],
        job: Annotated[str | None, Query(description="only this job's messages (copied one by one)")] = None,
    ) -> RedriveResult:
        return service().redrive(caller(), name, job)

    @app.post(
        "/queues/<name>/pause", summary="stop the queue's consumers and its jobs' schedules",
        # No 422: the name is any text, and the route reads no body.
        **_documented(Scope.RETRY, 404, 503, what="queue"),
    )
    def pause(name: Annotated[str, Path(description="the queue label")]) -> QueueSwitch:
        return service().pause(caller(), name)

    @app.post(
        "/queues/<name>/resume", summary="start the queue's consumers and its jobs' schedules again",
        **_documented(Scope.RETRY, 404, 503, what="queue"),
    )
    def resume(name: Annotated[str, Path(description="the queue label")]) -> QueueSwitch:
        return service().resume(caller(), name)

    # -- documents and the page --------------------------------------------------------------------------------------

    @app.get("/openapi.json", summary="this document", include_in_schema=False)
    def openapi():
        # Read access, like every GET of the API (API Gateway's route asks the same): it is the API's map.
        who = caller()
        if not who.may(Scope.READ):
            raise Forbidden(f"{who.actor} needs the {Scope.READ.value} scope to read the API's description", required_scope=Scope.READ.value)
        return _json_response(200, openapi_document(app))

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
    """The API's OpenAPI document as a dict (what ``GET /openapi.json`` serves): each route's answers as the route
    declares them (:func:`_documented`), without the answers Powertools adds to every route in shapes this API never
    sends."""
    text = app.get_openapi_json_schema(title=TITLE, version=API_VERSION, security_schemes=SECURITY_SCHEMES)
    document = json.loads(text)
    return _without_powertools_errors(document)


def _documented(
    scope: Scope | None, *statuses: int, what: str = "", unhealthy: type[BaseModel] | None = None
) -> dict[str, Any]:
    """A data route decorator's documentation: a description naming the scope it needs, bearer security, and its
    answers: 200, 401, 403 (when it needs a scope), 500, and the error ``statuses`` it can answer besides (404 names
    ``what`` was not found). ``unhealthy``: the model of a 503 that is an answer, not an error (``/health``)."""
    needs = f"Needs {scope.value}." if scope else "Needs only valid credentials (any scope)."
    errors = [401, *([403] if scope else []), *statuses, 500]
    responses: dict[int, Any] = {200: {"description": "OK"}}
    for status in sorted(errors):
        code, meaning = ERROR_DESCRIPTIONS[status]
        meaning = meaning.format(scope=scope.value if scope else "", what=what or "resource")
        example: dict[str, Any] = {"code": code, "message": meaning}
        if status == Forbidden.http_status and scope:
            example["required_scope"] = scope.value
        responses[status] = {
            "description": f"{code}: {meaning}",
            "content": {content_types.APPLICATION_JSON: {"model": ErrorAnswer, "examples": {code: {"value": example}}}},
        }
    if unhealthy is not None:
        responses[503] = {
            "description": "unhealthy: the body says which check failed",
            "content": {content_types.APPLICATION_JSON: {"model": unhealthy}},
        }
    return {
        "description": needs,
        "security": [{BEARER: [scope.value] if scope else []}],
        "responses": responses,
        # A route's own response-validation status keeps its documented 500 ours (the catch-all handler answers it);
        # the resolver's would replace it with Powertools' error shape.
        "custom_response_validation_http_code": HTTPStatus.INTERNAL_SERVER_ERROR,
    }


# The error shapes Powertools documents by default; this API answers errors as ErrorAnswer instead.
POWERTOOLS_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError", "ResponseValidationError")


def _without_powertools_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Drop Powertools' default 422 (``HTTPValidationError``, added to every route; a route that can answer 422
    declares ours, which replaces it) and its error schemas, which nothing refers to then (every 500 is ours too)."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]
    schemas = document.get("components", {}).get("schemas", {})
    for name in POWERTOOLS_ERROR_SCHEMAS:
        schemas.pop(name, None)
    return document


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
