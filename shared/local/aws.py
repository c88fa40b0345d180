"""moto's AWS server on 127.0.0.1, and the queues the registry asks for."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from shared.names import dlq_resource_name, queue_resource_name
from shared.registry import QueueSettings, Registry

DLQ_RETENTION_SECONDS = 14 * 24 * 60 * 60
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "conveyor-local",
    "AWS_SECRET_ACCESS_KEY": "conveyor-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalAws:
    """An in-process moto server. ``start`` points this process's boto3 clients at it (AWS_ENDPOINT_URL)."""

    def __init__(self, port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint: str | None = None

    def start(self) -> str:
        # werkzeug logs one line per request at INFO: thousands a minute from the pollers, drowning the run lines.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint
        for key, value in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(key, value)
        return self.endpoint

    def stop(self) -> None:
        self._server.stop()


def queue_attributes(settings: QueueSettings, dlq_arn: str) -> dict[str, str]:
    """The attributes a job queue gets locally; the CDK construct sets the same ones on AWS."""
    return {
        "VisibilityTimeout": str(settings.visibility_timeout),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.max_receive_count}),
        "SqsManagedSseEnabled": "true",
    }


def ensure_queues(sqs: Any, registry: Registry, *, stage: str) -> dict[str, tuple[str, str]]:
    """Create (or update) every queue and DLQ of the registry; returns ``{label: (queue_url, dlq_url)}``."""
    urls: dict[str, tuple[str, str]] = {}
    for label in registry.queues():
        settings = registry.queue_settings(label)
        dlq_url = sqs.create_queue(
            QueueName=dlq_resource_name(label, stage=stage),
            Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS), "SqsManagedSseEnabled": "true"},
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        name = queue_resource_name(label, stage=stage)
        attributes = queue_attributes(settings, dlq_arn)
        try:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except sqs.exceptions.QueueNameExists:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        urls[label] = (url, dlq_url)
    return urls


def prepare_local_services(*, stage: str) -> None:
    """What a fresh account needs before the example jobs work locally: SES only sends from verified senders, and
    the PDF jobs store into a documents bucket (``conveyor-<stage>-documents`` unless one is configured)."""
    import boto3

    from shared.settings import DOCUMENTS_BUCKET

    sender = os.environ.get("CONVEYOR_EMAIL_FROM", "no-reply@conveyor.example")
    boto3.client("ses").verify_email_identity(EmailAddress=sender)
    bucket = os.environ.setdefault(DOCUMENTS_BUCKET, f"conveyor-{stage}-documents")
    s3 = boto3.client("s3")
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
