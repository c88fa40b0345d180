"""Who is asking, and what they may do: the permission model every operation checks.

Three scopes, as the product's jobs page has them: ``jobs:read`` sees queues, runs and health; ``jobs:retry`` retries,
redrives, triggers and pauses or resumes (everything that makes work run, or stops it running); ``jobs:cancel``
cancels. The service checks the caller's scopes itself, so the HTTP API (behind API Gateway's JWT authorizer, or the
local server's static tokens) and the CLI (which holds the database credentials, so holds every scope) refuse the same
way and cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Scope(StrEnum):
    READ = "jobs:read"
    RETRY = "jobs:retry"
    CANCEL = "jobs:cancel"


class Action(StrEnum):
    """Every mutating operation, by the name the API, the CLI, the audit log and the page use."""

    RETRY = "retry"
    REDRIVE = "redrive"
    CANCEL = "cancel"
    TRIGGER = "trigger"
    PAUSE = "pause"
    RESUME = "resume"


# The scope each action needs: trigger, pause/resume and redrive make work run (or stop it), like retry.
ACTION_SCOPES: dict[Action, Scope] = {
    Action.RETRY: Scope.RETRY,
    Action.REDRIVE: Scope.RETRY,
    Action.TRIGGER: Scope.RETRY,
    Action.PAUSE: Scope.RETRY,
    Action.RESUME: Scope.RETRY,
    Action.CANCEL: Scope.CANCEL,
}

ALL_SCOPES = frozenset(Scope)


def parse_scopes(text: str | list[str] | tuple[str, ...] | None) -> frozenset[Scope]:
    """Scopes from a JWT's ``scope`` claim (space-separated), a list (``scp``, API Gateway's ``scopes``), or a
    comma-separated list; names this model does not know (``openid``, ``profile``) are ignored."""
    if text is None:
        return frozenset()
    parts = text.replace(",", " ").split() if isinstance(text, str) else [str(p) for p in text]
    known = {s.value: s for s in Scope}
    return frozenset(known[p] for p in parts if p in known)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: ``actor`` is what the audit log records (a JWT's ``sub``, ``cli:<user>``)."""

    actor: str
    scopes: frozenset[Scope] = field(default_factory=frozenset)

    def may(self, what: Scope | Action) -> bool:
        scope = ACTION_SCOPES[what] if isinstance(what, Action) else what
        return scope in self.scopes

    def actions(self) -> list[Action]:
        """The actions this caller may take anywhere (the page hides the buttons of the others)."""
        return [a for a in Action if self.may(a)]


def cli_caller(scopes: str | None = None) -> Caller:
    """The terminal's caller: whoever holds the database URL and AWS credentials can do everything anyway, so by
    default every scope. ``scopes`` (``CONVEYOR_SCOPES``, comma- or space-separated) narrows it, e.g. to
    ``jobs:read`` for an on-call shell that should only look: a guard against a slip, not a security boundary. A
    name that is not a scope is refused rather than ignored, so a typo cannot widen or empty the set unnoticed."""
    import getpass

    granted = ALL_SCOPES
    if scopes is not None:
        names = scopes.replace(",", " ").split()
        unknown = sorted(set(names) - {s.value for s in Scope})
        if unknown:
            raise ValueError(
                f"CONVEYOR_SCOPES names {', '.join(map(repr, unknown))}, which is not a scope; scopes: "
                + ", ".join(s.value for s in Scope)
            )
        granted = frozenset(Scope(n) for n in names)

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a bare container; the audit log still says it was the CLI
        user = "unknown"
    return Caller(actor=f"cli:{user}", scopes=granted)
