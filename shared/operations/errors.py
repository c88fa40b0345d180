"""Errors of the operations service, each with a stable ``code`` and the HTTP status the API answers with.

The API turns any :class:`OperationError` into ``{"code": ..., "message": ..., **details}`` with ``http_status``; the
CLI prints the message on one line and exits non-zero. Codes are a contract: scripts match on them, so never rename
one.
"""

from __future__ import annotations

from typing import Any


class OperationError(Exception):
    code = "error"
    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class Unauthenticated(OperationError):
    """No credentials, or credentials nobody issued (an unknown local token)."""

    code = "unauthenticated"
    http_status = 401


class Forbidden(OperationError):
    """The caller lacks the scope; ``required_scope`` says which."""

    code = "forbidden"
    http_status = 403


class NotFound(OperationError):
    """No such job id, job name or queue; ``kind`` says which (``job``, ``job_name``, ``queue``)."""

    code = "not_found"
    http_status = 404


class WrongState(OperationError):
    """The action does not apply to the job as it is now; ``status`` is its status."""

    code = "wrong_state"
    http_status = 409


class InvalidRequest(OperationError):
    """Bad input: a payload its model refuses, a malformed id or cursor, a limit out of range."""

    code = "invalid_request"
    http_status = 422


class UnsupportedMediaType(OperationError):
    """A request body that is not JSON (a form post, text/plain): bodies are JSON objects, sent as
    ``Content-Type: application/json``."""

    code = "unsupported_media_type"
    http_status = 415


class Unavailable(OperationError):
    """A dependency (the database, SQS, Lambda, Scheduler) failed; nothing was changed unless ``details`` say so."""

    code = "unavailable"
    http_status = 503
