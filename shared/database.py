"""Database connections for handlers and the relay: one per warm container, reused across invocations.

Settings are safe behind RDS Proxy and PgBouncer: no server-side prepared statements (``prepare_threshold=None``)
and no session state. On AWS the credentials come from Secrets Manager (an RDS-format secret, cached by
Powertools Parameters); locally from ``CONVEYOR_DATABASE_URL`` / ``DATABASE_URL``.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING

from shared.settings import DATABASE_URL, DB_HOST, DB_SECRET_ARN, Settings

if TYPE_CHECKING:
    import psycopg


class DatabaseNotConfigured(RuntimeError):
    pass


def conninfo(settings: Settings) -> str:
    """The libpq connection string from the settings: a URL, or an RDS secret's fields."""
    if settings.database_url:
        return settings.database_url
    if settings.db_secret_arn:
        from aws_lambda_powertools.utilities.parameters import get_secret
        from psycopg.conninfo import make_conninfo

        secret = json.loads(get_secret(settings.db_secret_arn, max_age=300))
        host = settings.db_host or secret.get("host")
        missing = [k for k in ("username", "password") if not secret.get(k)] + ([] if host else ["host"])
        if missing:
            raise DatabaseNotConfigured(
                f"secret {settings.db_secret_arn} lacks {', '.join(missing)}"
                + (f"; set {DB_HOST} (cdk context database.host or proxyEndpoint)" if not host else "")
            )
        return make_conninfo(
            host=host,
            port=secret.get("port", 5432),
            dbname=settings.db_name or secret.get("dbname", "postgres"),
            user=secret["username"],
            password=secret["password"],
            sslmode=secret.get("sslmode", "require"),
        )
    raise DatabaseNotConfigured(f"no database configured: set {DATABASE_URL} (or DATABASE_URL) or {DB_SECRET_ARN}")


def connect(
    settings: Settings | None = None,
    *,
    autocommit: bool = True,
    connect_timeout: int = 10,
    statement_timeout_ms: int | None = None,
) -> psycopg.Connection:
    """A connection; ``statement_timeout_ms`` bounds every statement on it (waiting for a lock included)."""
    import psycopg

    options = {} if statement_timeout_ms is None else {"options": f"-c statement_timeout={int(statement_timeout_ms)}"}
    return psycopg.connect(
        conninfo(settings or Settings.from_env()),
        autocommit=autocommit, prepare_threshold=None, connect_timeout=connect_timeout, **options,
    )  # fmt: skip


class Database:
    """A lazily opened connection per thread, reopened if it broke (a proxy timeout between invocations, a failover).

    Per thread because a handler instance may run several batches at once outside Lambda (the local runtime polls
    each queue with more than one worker): sharing one connection would nest one job's transaction inside another's,
    so one job's failure could roll back the other's committed work. On Lambda there is one thread, so one connection
    per warm container.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._connections: dict[int, psycopg.Connection] = {}
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        key = threading.get_ident()
        conn = self._connections.get(key)
        if conn is None or conn.closed or conn.broken:
            conn = connect(self._settings)
            with self._lock:
                self._connections[key] = conn
        return conn

    def close(self) -> None:
        with self._lock:
            connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            conn.close()
