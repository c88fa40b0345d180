"""Lambda's SQS event source, reproduced: messages in, SQS-shaped events out, batchItemFailures honoured."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any


def sqs_record(message: dict[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One ReceiveMessage result as a Lambda event record (the same shape AWS delivers)."""
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attribute = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
        if "BinaryValue" in value:  # Lambda passes binary values base64-encoded
            attribute["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode("ascii")
        else:
            attribute["stringValue"] = value.get("StringValue")
        attributes[name] = attribute
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes") or {}),
        "messageAttributes": attributes,
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


@dataclass
class LocalLambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str
    timeout_s: int
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = ""
    aws_request_id: str = ""

    def __post_init__(self) -> None:
        import time

        self._deadline = time.monotonic() + self.timeout_s
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = (
            self.invoked_function_arn or f"arn:aws:lambda:us-east-1:000000000000:function:{self.function_name}"
        )
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(0, int((self._deadline - time.monotonic()) * 1000))

    @property
    def timed_out(self) -> bool:
        """Past the deadline: Lambda would have ended this invocation."""
        import time

        return time.monotonic() >= self._deadline
