"""The operations API, end to end: over HTTP against ``conveyor dev``'s local server (static tokens), and through
the ops Lambda's handler with the events API Gateway's JWT authorizer sends. Real PostgreSQL, moto's SQS, the real
service: every route refuses the anonymous (401) and the caller without its scope (403), and does its work for the
caller with it.
"""

from __future__ import annotations

import http.client
import importlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from shared.operations.scopes import ALL_SCOPES, Scope
from shared.outbox import enqueue
from tests.support import FakeLambdaContext, insert_run, make_work_handler
from tests.support import registry as test_registry

READ, RETRY, CANCEL = Scope.READ.value, Scope.RETRY.value, Scope.CANCEL.value
TOKENS = {
    "read-token": frozenset({Scope.READ}),
    "retry-token": frozenset({Scope.RETRY}),
    "cancel-token": frozenset({Scope.CANCEL}),
    "admin-token": ALL_SCOPES,
}
# The token (and JWT scope) that holds exactly the one scope; a token lacking it for the 403 case.
HOLDER = {READ: "read-token", RETRY: "retry-token", CANCEL: "cancel-token"}
LACKING = {READ: "retry-token", RETRY: "read-token", CANCEL: "read-token"}
NO_JOB = "00000000-0000-7000-8000-0000000000ff"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Fixtures:
    """Jobs in the states the routes need: one per route that acts on a job, so no route's success spoils another's."""

    dead: str        # retryable
    pending: str     # cancellable (delayed in the outbox)
    succeeded: str   # retry refused (409)

    @classmethod
    def make(cls, conn) -> Fixtures:
        dead = insert_run(conn, "test.work", "dead", queue="work", payload='{"n": 1, "fail_times": 0}', attempt=3)
        succeeded = insert_run(conn, "test.work", "succeeded", queue="work", payload='{"n": 2}', attempt=1)
        pending = enqueue(conn, "test.work", {"n": 3}, delay=3600, registry=test_registry)
        return cls(dead=str(dead), pending=str(pending), succeeded=str(succeeded))


# (method, path template, the scope it needs (None: only authentication), JSON body)
ROUTES: list[tuple[str, str, str | None, Any]] = [
    ("GET", "/me", None, None),
    ("GET", "/queues", READ, None),
    ("GET", "/runs", READ, None),
    ("GET", "/runs/{dead}", READ, None),
    ("GET", "/health", READ, None),
    ("GET", "/stats/throughput?window=24h", READ, None),
    ("POST", "/runs/{dead}/retry", RETRY, None),
    ("POST", "/runs/{pending}/cancel", CANCEL, {"reason": "not needed"}),
    ("POST", "/jobs/test.work/trigger", RETRY, {"n": 7}),
    ("POST", "/queues/work/redrive", RETRY, None),
    ("POST", "/queues/work/pause", RETRY, None),
    ("POST", "/queues/work/resume", RETRY, None),
    ("GET", "/openapi.json", READ, None),
]
ROUTE_IDS = [f"{m} {p.split('?')[0]}" for m, p, _, _ in ROUTES]


# -- over HTTP, against conveyor dev's server ----------------------------------------------------------------------


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, token: str | None = None, body: Any = None, raw: bytes | None = None) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode())
        finally:
            connection.close()


@pytest.fixture
def local_api(runtime_factory, calls):
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, api_port=0, api_tokens=TOKENS)
    assert runtime.api is not None
    return runtime, Client(runtime.api.port)


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_every_route_over_http_refuses_without_a_token_or_its_scope_and_works_with_it(local_api, conn, route):
    runtime, client = local_api
    method, template, scope, body = route
    path = template.format(**vars(Fixtures.make(conn)))

    for token in (None, "not-a-token"):
        anonymous = client.request(method, path, token, body)
        assert anonymous.status == 401, anonymous
        assert anonymous.json()["code"] == "unauthenticated"
    if scope is not None:
        refused = client.request(method, path, LACKING[scope], body)
        assert refused.status == 403, refused
        assert refused.json()["code"] == "forbidden" and refused.json()["required_scope"] == scope
    token = HOLDER[scope] if scope else "read-token"
    allowed = client.request(method, path, token, body)
    assert 200 <= allowed.status < 300, allowed
    assert allowed.headers["content-type"].startswith("application/json")
    allowed.json()


def test_runtime_announces_the_api_and_records_it_in_the_state_file(runtime_factory, calls, tmp_path):
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, api_port=0, state_file=tmp_path / "dev.json")
    url = f"http://127.0.0.1:{runtime.api.port}/"
    assert f"api        {url}  (dashboard; API under the same address)" in runtime.lines
    assert json.loads((tmp_path / "dev.json").read_text())["api_url"] == url
    # No tokens configured: every local caller is "local" with every scope.
    me = Client(runtime.api.port).request("GET", "/me")
    assert me.status == 200 and me.json()["actor"] == "local" and set(me.json()["scopes"]) == {READ, RETRY, CANCEL}
    port = runtime.api.port
    runtime.stop()
    with pytest.raises(OSError):
        Client(port).request("GET", "/me")


def test_a_read_only_caller_is_offered_no_actions(local_api, conn):
    _, client = local_api
    jobs = Fixtures.make(conn)
    me = client.request("GET", "/me", "read-token").json()
    assert me["actions"] == [] and me["scopes"] == [READ]

    runs = client.request("GET", "/runs", "read-token").json()["runs"]
    assert {r["id"] for r in runs} >= {jobs.dead, jobs.succeeded, jobs.pending}
    assert all(r["actions"] == [] for r in runs)
    for job_id in (jobs.dead, jobs.pending):
        assert client.request("GET", f"/runs/{job_id}", "read-token").json()["actions"] == []

    # The same runs, to a caller who may act: the buttons the read-only caller must not see.
    admin = {r["id"]: r["actions"] for r in client.request("GET", "/runs", "admin-token").json()["runs"]}
    assert admin[jobs.dead] == ["retry"] and admin[jobs.pending] == ["cancel"] and admin[jobs.succeeded] == []
    assert client.request("GET", f"/runs/{jobs.dead}", "admin-token").json()["actions"] == ["retry"]


# (method, path, body, status, code, details) of the errors test_errors_carry_their_status_and_code observes
ERROR_CASES: list[tuple[str, str, Any, int, str, dict[str, Any]]] = [
    ("GET", f"/runs/{NO_JOB}", None, 404, "not_found", {"kind": "job"}),
    ("POST", f"/runs/{NO_JOB}/retry", None, 404, "not_found", {"kind": "job"}),
    ("POST", "/jobs/no.such.job/trigger", {}, 404, "not_found", {}),
    ("POST", "/queues/no-such-queue/pause", None, 404, "not_found", {"kind": "queue"}),
    ("POST", "/queues/no-such-queue/redrive", None, 404, "not_found", {"kind": "queue"}),
    ("GET", "/no/such/route", None, 404, "not_found", {}),
    ("POST", "/runs/{succeeded}/retry", None, 409, "wrong_state", {"status": "succeeded"}),
    ("POST", "/runs/{succeeded}/cancel", None, 409, "wrong_state", {"status": "succeeded"}),
    ("GET", "/runs/not-a-uuid", None, 422, "invalid_request", {}),
    ("POST", "/runs/not-a-uuid/retry", None, 422, "invalid_request", {}),
    ("GET", "/runs?status=done", None, 422, "invalid_request", {}),
    ("GET", "/runs?limit=0", None, 422, "invalid_request", {}),
    ("GET", "/runs?limit=5000", None, 422, "invalid_request", {}),
    ("GET", "/runs?limit=many", None, 422, "invalid_request", {}),
    ("GET", "/runs?since=yesterday", None, 422, "invalid_request", {}),
    ("GET", "/runs?until=2026-01-01T09:00", None, 422, "invalid_request", {}),
    ("GET", "/stats/throughput?window=7d", None, 422, "invalid_request", {}),
    ("POST", "/jobs/test.work/trigger", {"n": "seven"}, 422, "invalid_request", {}),
    ("POST", "/jobs/test.work/trigger", [1, 2], 422, "invalid_request", {}),
]  # fmt: skip
# Error statuses other tests observe (test_a_body_that_is_not_json_is_refused_as_such, and
# test_health_is_503_while_a_dead_letter_queue_holds_a_message: a Health body, no error code): method, path, status, code.
OTHER_ERRORS = [
    ("POST", "/jobs/test.work/trigger", 415, "unsupported_media_type"),
    ("GET", "/health", 503, None),
]


@pytest.mark.parametrize("method, path, body, status, code, details", ERROR_CASES)
def test_errors_carry_their_status_and_code(local_api, conn, method, path, body, status, code, details):
    _, client = local_api
    answer = client.request(method, path.format(**vars(Fixtures.make(conn))), "admin-token", body)
    assert answer.status == status, answer
    error = answer.json()
    assert error["code"] == code and error["message"], error
    assert {k: error.get(k) for k in details} == details, error


def test_validation_messages_say_what_was_wrong(local_api):
    _, client = local_api
    limit = client.request("GET", "/runs?limit=0", "read-token").json()
    assert "limit" in limit["message"] and limit["errors"][0]["where"] == "query limit"
    since = client.request("GET", "/runs?since=yesterday", "read-token").json()
    assert since["message"].startswith("since: invalid time 'yesterday'")
    not_json = client.request("POST", "/jobs/test.work/trigger", "retry-token", raw=b"{not json")
    assert not_json.status == 422 and not_json.json()["code"] == "invalid_request"


def test_since_and_until_take_durations_ago_and_times(local_api, conn):
    _, client = local_api
    recent = insert_run(conn, "test.work", "succeeded", queue="work", created_days=0.01)
    old = insert_run(conn, "test.work", "succeeded", queue="work", created_days=3)
    ids = lambda q: {r["id"] for r in client.request("GET", f"/runs?{q}", "read-token").json()["runs"]}  # noqa: E731
    assert str(recent) in ids("since=1d") and str(old) not in ids("since=1d")
    assert str(old) in ids("until=2d") and str(recent) not in ids("until=2d")
    assert str(recent) in ids("since=2000-01-01T00:00:00%2B00:00")


def test_actions_take_effect(local_api, conn):
    _, client = local_api
    jobs = Fixtures.make(conn)
    retried = client.request("POST", f"/runs/{jobs.dead}/retry", "retry-token")
    assert retried.status == 200 and retried.json()["job_id"] == jobs.dead
    cancelled = client.request("POST", f"/runs/{jobs.pending}/cancel", "cancel-token", {"reason": "not needed"})
    assert cancelled.status == 200 and cancelled.json()["status"] == "cancelled"
    assert conn.execute("SELECT status FROM conveyor.runs WHERE id = %s", (jobs.pending,)).fetchone() == ("cancelled",)
    actors = {row[0] for row in conn.execute("SELECT actor FROM conveyor.audit_log")}
    assert actors and all(a.startswith("token:") for a in actors), actors
    assert not any("token" in a.removeprefix("token:") for a in actors), "the audit log holds a fingerprint, not the token"


def test_health_is_503_while_a_dead_letter_queue_holds_a_message(local_api):
    runtime, client = local_api
    assert client.request("GET", "/health", "read-token").status == 200
    runtime.sqs.send_message(QueueUrl=runtime.urls["work"][1], MessageBody="{}")
    unhealthy = client.request("GET", "/health", "read-token")
    assert unhealthy.status == 503, unhealthy
    body = unhealthy.json()
    assert body["healthy"] is False and body["reasons"]
    assert [c["name"] for c in body["checks"] if not c["ok"]] == ["dead_letter_queues"]


def test_openapi_document_lists_every_route(local_api):
    _, client = local_api
    answer = client.request("GET", "/openapi.json", "read-token")
    assert answer.status == 200
    document = answer.json()
    assert document["info"]["title"] == "Conveyor operations"
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    expected = {
        ("GET", "/me"), ("GET", "/queues"), ("GET", "/runs"), ("GET", "/runs/{job_id}"), ("GET", "/health"),
        ("GET", "/stats/throughput"), ("POST", "/runs/{job_id}/retry"), ("POST", "/runs/{job_id}/cancel"),
        ("POST", "/jobs/{name}/trigger"), ("POST", "/queues/{name}/redrive"), ("POST", "/queues/{name}/pause"),
        ("POST", "/queues/{name}/resume"),
    }  # fmt: skip
    assert listed == expected


def test_openapi_document_declares_each_routes_errors_scope_and_security(local_api):
    """What the document promises matches what the tests above observe: every status a route was seen to answer is
    declared, errors in the API's own shape, the scope in the description and the security requirement."""
    _, client = local_api
    document = client.request("GET", "/openapi.json", "read-token").json()
    schemas = document["components"]["schemas"]
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"], bearer["bearerFormat"]) == ("http", "bearer", "JWT")
    assert "security" not in document, "no global security: the page's routes need none"
    assert not {path for path in document["paths"] if path == "/" or path.startswith("/static")}
    assert "HTTPValidationError" not in json.dumps(document) and "ResponseValidationError" not in json.dumps(document)
    error_schema = schemas["ErrorAnswer"]
    assert {"code", "message"} <= set(error_schema["required"])
    assert {"required_scope", "kind", "status", "errors"} <= set(error_schema["properties"])

    operations = {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    observed: dict[tuple[str, str], dict[int, str | None]] = {key: {} for key in operations}
    for method, template, scope, _ in ROUTES:
        key = _documented_route(operations, method, template)
        if key is None:
            assert template == "/openapi.json"  # the document does not list itself
            continue
        observed[key][401] = "unauthenticated"
        if scope is not None:
            observed[key][403] = "forbidden"
        operation = operations[key]
        assert operation["description"].startswith(f"Needs {scope}." if scope else "Needs only valid credentials")
        assert operation["security"] == [{"bearer": [scope] if scope else []}], key
    for method, path, _, status, code, _ in ERROR_CASES:
        key = _documented_route(operations, method, path)
        if key is not None:  # an unknown route is in no document
            observed[key][status] = code
    for method, path, status, code in OTHER_ERRORS:
        observed[_documented_route(operations, method, path)][status] = code
    assert all(observed.values()), f"routes the tests never call: {[k for k, v in observed.items() if not v]}"

    for key, operation in operations.items():
        responses = {int(status): answer for status, answer in operation["responses"].items()}
        assert set(observed[key]) | {200, 500} <= set(responses), (key, sorted(responses), observed[key])
        for status, answer in responses.items():
            if status == 200 or (key == ("GET", "/health") and status == 503):
                continue
            content = answer["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorAnswer"}, (key, status)
            [example] = content["examples"].values()
            assert {"code", "message"} <= set(example["value"]), (key, status)
            if observed[key].get(status):
                assert example["value"]["code"] == observed[key][status], (key, status)
        if 422 in responses:  # the API's own 422, not Powertools' HTTPValidationError
            assert [*responses[422]["content"]["application/json"]["examples"]] == ["invalid_request"], key
    health = operations["GET", "/health"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert health == {"$ref": "#/components/schemas/Health"}

    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document)


def _documented_route(operations: dict[tuple[str, str], Any], method: str, path: str) -> tuple[str, str] | None:
    """The document's (method, path template) that a request's path matches, if any."""
    path = path.split("?")[0]
    for key in operations:
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", key[1])  # the document's paths hold no other regex characters
        if key[0] == method and re.fullmatch(pattern, path):
            return key
    return None


def test_page_routes_need_no_token_and_serve_only_the_pages_files(local_api):
    _, client = local_api
    index = client.request("GET", "/")
    assert index.status == 200 and index.headers["content-type"].startswith("text/html")
    assert "<html" in index.text.lower() and "cache-control" in index.headers
    for path in ("/static/../x", "/static/../api.py", "/static/..%2fapi.py", "/static/%2e%2e/api.py", "/static/.hidden",
                 "/static/vendor/../../api.py", "/static/nothing-here.js"):  # fmt: skip
        refused = client.request("GET", path)
        assert refused.status == 404, (path, refused)
        assert "def build_app" not in refused.text


# -- through the ops Lambda, with JWT authorizer events ---------------------------------------------------------------


def jwt_event(method: str, target: str, scopes: list[str] | None, body: Any = None) -> dict[str, Any]:
    """What API Gateway's HTTP API sends the function after its JWT authorizer accepted a token (or, with
    ``scopes=None``, for a route without an authorizer: no identity)."""
    path, _, query = target.partition("?")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"content-type": "application/json"} if body is not None else {},
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10"},
            "requestId": f"req-{uuid.uuid4().hex[:8]}",
            "routeKey": "$default",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(part.split("=", 1) for part in query.split("&"))
    if body is not None:
        event["body"] = json.dumps(body)
    if scopes is not None:
        event["requestContext"]["authorizer"] = {
            "jwt": {"claims": {"sub": "user-7", "scope": " ".join(["openid", *scopes])}, "scopes": None}
        }
    return event


@pytest.fixture
def ops_function(db_url, sqs, stage, monkeypatch):
    """The ops Lambda in a fresh container, configured as the stack configures it, on this test's database."""
    from shared.local.aws import ensure_queues

    urls = ensure_queues(sqs, test_registry, stage=stage)
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    monkeypatch.setenv("CONVEYOR_REGISTRY", "tests.support:registry")
    import functions.ops.handler as module

    module = importlib.reload(module)  # a cold start: the service is built from this environment
    return module, urls


def call(module, event) -> Answer:
    response = module.handler(event, FakeLambdaContext())
    return Answer(response["statusCode"], {k.lower(): v for k, v in (response.get("headers") or {}).items()}, response["body"])


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_every_route_through_the_lambda_checks_the_jwt_scopes(ops_function, conn, route):
    module, _ = ops_function
    method, template, scope, body = route
    path = template.format(**vars(Fixtures.make(conn)))
    if path.endswith("/redrive"):
        # On AWS a whole-queue redrive is an SQS message move task, which moto lacks; one job's is copied.
        path += "?job=test.work"

    anonymous = call(module, jwt_event(method, path, None, body))
    assert anonymous.status == 401 and anonymous.json()["code"] == "unauthenticated", anonymous
    if scope is not None:
        lacking = [s for s in (READ, RETRY, CANCEL) if s != scope]
        refused = call(module, jwt_event(method, path, lacking, body))
        assert refused.status == 403, refused
        assert refused.json()["code"] == "forbidden" and refused.json()["required_scope"] == scope
    allowed = call(module, jwt_event(method, path, [scope] if scope else [], body))
    assert 200 <= allowed.status < 300, allowed


def test_the_lambda_reads_the_caller_from_the_jwt(ops_function, conn):
    module, _ = ops_function
    me = call(module, jwt_event("GET", "/me", [READ])).json()
    assert me == {"actor": "user-7", "scopes": [READ], "actions": []}
    jobs = Fixtures.make(conn)
    call(module, jwt_event("POST", f"/runs/{jobs.dead}/retry", [RETRY]))
    assert conn.execute("SELECT actor, action FROM conveyor.audit_log").fetchall() == [("user-7", "retry")]


def test_the_lambdas_sample_event_is_answered(ops_function):
    from pathlib import Path

    module, _ = ops_function
    event = json.loads((Path(__file__).resolve().parents[2] / "events" / "ops.json").read_text())
    answer = call(module, event)
    assert answer.status == 200, answer
    assert [q["name"] for q in answer.json()["queues"]] == ["work"]


def test_the_lambda_answers_500_without_details_when_the_service_cannot_be_built(ops_function, monkeypatch):
    module, _ = ops_function
    monkeypatch.setenv("CONVEYOR_REGISTRY", "tests.support:no_such_registry")
    module = importlib.reload(module)
    answer = call(module, jwt_event("GET", "/queues", [READ]))
    assert answer.status == 500 and answer.json() == {"code": "internal", "message": "internal error; see the function's logs"}
    # The page's files need no service at all.
    assert call(module, jwt_event("GET", "/", None)).status == 200


# -- the local server's guards against other web pages -------------------------------------------------------------


def raw_request(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """One HTTP request written by hand (headers http.client would fix for us), and the status and JSON answer."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"null")


@pytest.mark.parametrize(
    "extra",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://127.0.0.1:1"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
    ids=["foreign origin", "another local port", "cross-site fetch"],
)
def test_another_web_page_cannot_act_through_the_local_api(runtime_factory, calls, conn, extra):
    """Without tokens every local caller has every scope, so a page the developer has open elsewhere must not be able
    to pause a queue with a form post or a fetch."""
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, api_port=0)
    port = runtime.api.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/queues/work/pause", body=b"", headers={"Content-Type": "text/plain", **extra})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert (response.status, answer["code"]) == (403, "forbidden"), answer
    assert conn.execute("SELECT count(*) FROM conveyor.paused_queues").fetchone() == (0,)
    # The page itself (same origin) and a terminal (no Origin) still act.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/queues/work/pause", headers={"Origin": f"http://127.0.0.1:{port}"})
    assert connection.getresponse().status == 200
    connection.close()


def test_a_host_name_that_is_not_loopback_is_refused_even_for_reading(runtime_factory, calls):
    """A DNS-rebinding page reaches 127.0.0.1 under its own host name; the Host header gives it away."""
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, api_port=0)
    port = runtime.api.port
    status, answer = raw_request(port, f"GET /runs HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n".encode())
    assert (status, answer["code"]) == (403, "forbidden")
    assert "evil.example" in answer["message"]
    status, _ = raw_request(port, f"GET /runs HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n".encode())
    assert status == 200


@pytest.mark.parametrize("length", ["-1", "ten", "1e3"])
def test_a_content_length_that_is_not_a_byte_count_is_refused_at_once(runtime_factory, calls, length):
    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)}, api_port=0)
    port = runtime.api.port
    request = f"POST /queues/work/pause HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {length}\r\n\r\n{{}}"
    status, answer = raw_request(port, request.encode())
    assert (status, answer["code"]) == (400, "invalid_request")


@pytest.mark.parametrize(
    "content_type, body",
    [("text/plain", b'{"n": 1}'), ("application/x-www-form-urlencoded", b'{"n": 1}')],
    ids=["text", "form (curl -d)"],
)
def test_a_body_that_is_not_json_is_refused_as_such(local_api, conn, content_type, body):
    """`curl -d '{...}'` sends a form unless told otherwise; read as a form, the payload would be its field names."""
    _, client = local_api
    connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=30)
    connection.request(
        "POST", "/jobs/test.work/trigger", body=body,
        headers={"Content-Type": content_type, "Authorization": "Bearer admin-token"},
    )  # fmt: skip
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert (response.status, answer["code"]) == (415, "unsupported_media_type"), answer
    assert "application/json" in answer["message"]
    assert conn.execute("SELECT count(*) FROM conveyor.outbox").fetchone() == (0,)


def test_a_number_of_seconds_too_large_for_a_duration_is_a_422(local_api):
    _, client = local_api
    answer = client.request("GET", "/runs?since=99999999999999999999", token="admin-token")
    assert (answer.status, answer.json()["code"]) == (422, "invalid_request"), answer
    assert "too long" in answer.json()["message"]
