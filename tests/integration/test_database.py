"""Database settings on AWS: an RDS-format secret from Secrets Manager (moto), with host/dbname overrides."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from shared.database import DatabaseNotConfigured, conninfo
from shared.settings import Settings


@pytest.fixture
def secret(aws_endpoint):
    client = boto3.client("secretsmanager", endpoint_url=aws_endpoint)

    def create(value: dict) -> str:
        return client.create_secret(Name=f"db-{uuid.uuid4().hex[:8]}", SecretString=json.dumps(value))["ARN"]

    return create


def test_rds_secret_fields_become_the_connection(secret):
    arn = secret({"host": "db.internal", "port": 5433, "dbname": "app", "username": "u", "password": "p w"})
    info = conninfo(Settings(db_secret_arn=arn))
    assert "host=db.internal" in info and "port=5433" in info and "dbname=app" in info and "sslmode=require" in info


def test_proxy_host_and_dbname_override_the_secret(secret):
    # An RDS-managed master secret holds only the username and password.
    arn = secret({"username": "u", "password": "p"})
    info = conninfo(Settings(db_secret_arn=arn, db_host="proxy.internal", db_name="jobs"))
    assert "host=proxy.internal" in info and "dbname=jobs" in info


def test_a_secret_without_a_host_says_what_to_set(secret):
    arn = secret({"username": "u", "password": "p"})
    with pytest.raises(DatabaseNotConfigured, match="lacks host; set CONVEYOR_DB_HOST"):
        conninfo(Settings(db_secret_arn=arn))
