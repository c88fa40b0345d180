"""The product's HTTP integrations (push service, receipt service, POS API, bank API, SMS gateway): their names and
the environment variables that configure each, named once here so the code that reads them (``http``), the local
runtime that fills them in (``recorder``) and the stack that sets them cannot drift apart.

The client itself is ``shared.integrations.http.Integration``; this module imports nothing heavier than the
standard library, so the local runtime and the CDK side can name the variables without loading urllib3.
"""

from __future__ import annotations

# Every integration the product's jobs call. ``conveyor dev`` points each one without a configured URL at the
# built-in recorder (shared.integrations.recorder).
INTEGRATIONS: tuple[str, ...] = ("push", "receipts", "pos", "bank", "sms")


def _variable(name: str, suffix: str) -> str:
    return f"CONVEYOR_{name.upper().replace('.', '_').replace('-', '_')}_{suffix}"


def url_variable(name: str) -> str:
    """``CONVEYOR_<NAME>_URL``: the integration's base URL (``receipts`` -> ``CONVEYOR_RECEIPTS_URL``)."""
    return _variable(name, "URL")


def token_variable(name: str) -> str:
    """``CONVEYOR_<NAME>_TOKEN``: the bearer token, set directly (locally, in tests); on AWS the token comes from
    Secrets Manager instead (see ``secret_name``)."""
    return _variable(name, "TOKEN")


def timeout_variable(name: str) -> str:
    """``CONVEYOR_<NAME>_TIMEOUT``: seconds; ``10`` sets the read timeout, ``3,10`` the connect and read ones."""
    return _variable(name, "TIMEOUT")


def secret_name(stage: str, name: str) -> str:
    """The Secrets Manager secret holding an integration's token on AWS: ``conveyor/<stage>/<name>``."""
    return f"conveyor/{stage}/{name}"


__all__ = ["INTEGRATIONS", "secret_name", "timeout_variable", "token_variable", "url_variable"]
