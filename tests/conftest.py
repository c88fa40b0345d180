"""Shared fixtures: one real PostgreSQL server and one moto server per test session.

The database is migrated once into a template; each test gets its own copy (``CREATE DATABASE … TEMPLATE``), so
tests are isolated without paying for migrations each time. Each test also gets its own stage, so its SQS queues
are its own on the shared moto server. ``TEST_DATABASE_URL`` or ``DATABASE_URL`` (a superuser on any PostgreSQL
≥ 14) replaces the embedded server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from shared.jobs import registry as product_registry
from shared.local.aws import LOCAL_CREDENTIALS
from shared.migrate import migrate, sync_registry

os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
for _key, _value in LOCAL_CREDENTIALS.items():
    os.environ.setdefault(_key, _value)


def _with_db(url: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A superuser URL to a PostgreSQL server the tests may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from shared.local.postgres import EmbeddedPostgres

    with EmbeddedPostgres(ephemeral=True, log=lambda _m: None) as server:
        yield server.url


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    name = f"conveyor_template_{os.getpid()}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(_with_db(pg_server, name), autocommit=True) as conn:
        migrate(conn)
        sync_registry(conn, product_registry)
    yield name
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db_url(pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db)))
    yield _with_db(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """moto's server on 127.0.0.1 for the whole session; boto3 clients reach it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    if previous is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = previous
    server.stop()


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch) -> str:
    """A stage of this test's own, so its queues do not meet another test's on the shared moto server."""
    value = "t" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("CONVEYOR_STAGE", value)
    return value


@pytest.fixture
def sqs(aws_endpoint: str):
    import boto3

    return boto3.client("sqs", endpoint_url=aws_endpoint)
