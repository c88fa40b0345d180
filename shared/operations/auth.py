"""Who sent an HTTP API request, read from what API Gateway (or the local server) put in the event.

API Gateway has already checked the credentials before the function runs; this only reads the identity it passed:

* a JWT authorizer: ``requestContext.authorizer.jwt.claims`` (actor: ``sub``, else ``client_id``, else ``username``)
  and the scopes from the ``scope`` claim (space separated), the ``scp`` claim (a list, which API Gateway hands over
  as the text ``"[a b]"``) and ``requestContext.authorizer.jwt.scopes``;
* IAM authorization: ``requestContext.authorizer.iam.userArn`` is the actor, with every scope (the IAM policy that
  let the request through is what gates the route);
* the local server (``conveyor dev``): ``requestContext.authorizer.lambda`` = ``{"actor": ..., "scopes": "a b"}``,
  set after it checked the bearer token, the shape a Lambda authorizer's context has.

An identity provider that names scopes with a prefix (Amazon Cognito: ``<resource server>/jobs:read``) is configured
with ``conveyor:api.scopePrefix``; the stack gives the function that prefix (``CONVEYOR_SCOPE_PREFIX``) and the
routes the prefixed names, and a JWT scope counts only with the prefix.

No identity (no authorizer, or a JWT naming nobody) is ``None``: the API answers 401. Scopes this model does not
know (``openid``, ``profile``) are ignored, so a token with none of ours is authenticated but may only call ``/me``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from shared.operations.scopes import ALL_SCOPES, Caller, Scope, parse_scopes
from shared.settings import SCOPE_PREFIX

# The claims that name the caller, in order of preference: a user's subject, else a machine client's id.
ACTOR_CLAIMS = ("sub", "client_id", "username")


def caller_from_event(event: Any) -> Caller | None:
    """The caller of an API Gateway HTTP API (v2) event, a dict or Powertools' event object; None when anonymous."""
    raw = getattr(event, "raw_event", event)
    if not isinstance(raw, Mapping):
        return None
    authorizer = _mapping(_mapping(raw.get("requestContext")).get("authorizer"))
    jwt = _mapping(authorizer.get("jwt"))
    if jwt:
        return _jwt_caller(jwt)
    iam = _mapping(authorizer.get("iam"))
    if iam:
        arn = iam.get("userArn")
        return Caller(actor=arn, scopes=ALL_SCOPES) if isinstance(arn, str) and arn else None
    local = _mapping(authorizer.get("lambda"))
    if local:
        actor = local.get("actor")
        if not isinstance(actor, str) or not actor:
            return None
        return Caller(actor=actor, scopes=_scopes(local.get("scopes")))
    return None


def _jwt_caller(jwt: Mapping[str, Any]) -> Caller | None:
    claims = _mapping(jwt.get("claims"))
    actor = next((str(claims[c]) for c in ACTOR_CLAIMS if claims.get(c) not in (None, "")), None)
    if actor is None:
        return None
    prefix = os.environ.get(SCOPE_PREFIX, "")
    scopes = (
        _scopes(claims.get("scope"), prefix) | _scopes(claims.get("scp"), prefix) | _scopes(jwt.get("scopes"), prefix)
    )
    return Caller(actor=actor, scopes=scopes)


def _scopes(value: Any, prefix: str = "") -> frozenset[Scope]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):  # API Gateway flattens a list claim to "[a b]"
            text = text[1:-1]
        names = text.replace(",", " ").split()
    elif isinstance(value, (list, tuple)):
        names = [str(v) for v in value]
    else:
        return frozenset()
    if prefix:  # only the provider's own names count: "jobs:read" without the prefix is someone else's scope
        names = [n[len(prefix):] for n in names if n.startswith(prefix)]
    return parse_scopes(names)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
