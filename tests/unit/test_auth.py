"""Who sent an HTTP API request: each form of identity API Gateway (or the local server) puts in the event."""

from __future__ import annotations

import pytest

from shared.operations.auth import caller_from_event
from shared.operations.scopes import ALL_SCOPES, Caller, Scope


def event(authorizer=None) -> dict:
    context = {"http": {"method": "GET", "path": "/me"}, "stage": "$default"}
    if authorizer is not None:
        context["authorizer"] = authorizer
    return {"version": "2.0", "rawPath": "/me", "requestContext": context}


def jwt(claims: dict, scopes=None) -> dict:
    return event({"jwt": {"claims": claims, "scopes": scopes}})


@pytest.mark.parametrize(
    "given, expected",
    [
        # A user's token: the subject, and the space-separated scope claim (unknown scopes ignored).
        (jwt({"sub": "u-1", "scope": "openid jobs:read jobs:cancel"}), Caller("u-1", frozenset({Scope.READ, Scope.CANCEL}))),
        # A machine client (client credentials): no sub, the client id; scopes in API Gateway's own list.
        (jwt({"client_id": "ci-bot"}, ["jobs:retry"]), Caller("ci-bot", frozenset({Scope.RETRY}))),
        # Only a username; scp as API Gateway hands a list claim over: the text "[a b]".
        (jwt({"username": "ada", "scp": "[jobs:read jobs:retry]"}), Caller("ada", frozenset({Scope.READ, Scope.RETRY}))),
        # scp as a real list, and scopes from every source combined.
        (jwt({"sub": "u-2", "scp": ["jobs:read"], "scope": "jobs:cancel"}, ["jobs:retry"]), Caller("u-2", ALL_SCOPES)),
        # Authenticated, none of our scopes: may call /me only.
        (jwt({"sub": "u-3", "scope": "openid profile"}), Caller("u-3", frozenset())),
        # sub wins over client_id.
        (jwt({"sub": "u-4", "client_id": "c"}), Caller("u-4", frozenset())),
        # IAM authorization: the policy gated the route, so every scope.
        (event({"iam": {"userArn": "arn:aws:iam::123456789012:user/ops"}}), Caller("arn:aws:iam::123456789012:user/ops", ALL_SCOPES)),
        # The local server, after checking a static token.
        (event({"lambda": {"actor": "local:token-1", "scopes": "jobs:read jobs:retry"}}), Caller("local:token-1", frozenset({Scope.READ, Scope.RETRY}))),
        (event({"lambda": {"actor": "local", "scopes": ""}}), Caller("local", frozenset())),
    ],
    ids=["jwt-sub-scope", "jwt-client-id-scopes", "jwt-username-scp-text", "jwt-combined", "jwt-no-scopes",
         "jwt-sub-first", "iam", "local", "local-no-scopes"],
)  # fmt: skip
def test_identity_forms(given, expected):
    assert caller_from_event(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        event(),                                           # no authorizer: an anonymous request
        event({}),
        jwt({"scope": "jobs:read"}),                       # a JWT naming nobody
        jwt({"sub": ""}),
        event({"iam": {"accessKey": "AKIA..."}}),          # IAM without a user ARN
        event({"lambda": {"scopes": "jobs:read"}}),        # the local form without an actor
        {"requestContext": "not an object"},
        "not an event",
    ],
    ids=["none", "empty", "jwt-no-actor", "jwt-empty-sub", "iam-no-arn", "local-no-actor", "bad-context", "not-a-dict"],
)  # fmt: skip
def test_no_identity_is_none(given):
    assert caller_from_event(given) is None


def test_reads_powertools_event_objects_too():
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

    wrapped = APIGatewayProxyEventV2(jwt({"sub": "u-1", "scope": "jobs:read"}))
    assert caller_from_event(wrapped) == Caller("u-1", frozenset({Scope.READ}))


def test_with_a_scope_prefix_only_the_providers_own_names_count(monkeypatch):
    """Cognito's resource-server scopes ("conveyor/jobs:read"): with the prefix configured, a bare "jobs:retry"
    (another resource server's, or a client's own invention) grants nothing."""
    monkeypatch.setenv("CONVEYOR_SCOPE_PREFIX", "conveyor/")
    given = jwt({"sub": "u", "scope": "conveyor/jobs:read jobs:retry other/jobs:cancel"}, ["conveyor/jobs:cancel"])
    assert caller_from_event(given) == Caller("u", frozenset({Scope.READ, Scope.CANCEL}))
    monkeypatch.delenv("CONVEYOR_SCOPE_PREFIX")
    assert caller_from_event(given) == Caller("u", frozenset({Scope.RETRY}))
