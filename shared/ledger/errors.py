"""Errors of operations on jobs already enqueued, shared by the ledger's modules (and mapped by the API: not found
is a 404)."""

from __future__ import annotations

import uuid


class JobNotFoundError(LookupError):
    """No job has this id: not in the outbox, the ledger, or the rows the relay gave up on."""

    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = job_id
        super().__init__(f"no job has id {job_id}")
