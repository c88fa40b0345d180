"""Synthesize the Conveyor app once per session per database mode (the first synth costs seconds, later ones less).

No network: the dependency layer is replaced by an empty directory (building it needs PyPI; its own test is
marked slow) and the function code is the real staged tree.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The repository's cdk.json context (feature flags, placeholder integration URLs), as `cdk synth` reads it.
CDK_CONTEXT = json.loads((PROJECT_ROOT / "cdk.json").read_text())["context"]

EXISTING = {
    "mode": "existing",
    "secretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:conveyor-db-AbCdEf",
    "vpcId": "vpc-0123456789abcdef0",
    "subnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
    "securityGroupId": "sg-0123456789abcdef0",
    "proxyEndpoint": "conveyor.proxy-abc.us-east-1.rds.amazonaws.com",
    "secretKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0f6e2a9c-1d3b-4c5e-8f7a-9b0c1d2e3f4a",
}
SENDER = "billing@example.com"
# Real-looking endpoints for every integration the product requires (none for sms: SNS sends, and no function gets
# CONVEYOR_SMS_URL); the create fixture keeps cdk.json's example.com placeholders instead, plus an SMS gateway.
INTEGRATION_URLS = {
    "push": "https://push.acme-shop.io/v1",
    "receipts": "https://receipts.tax-service.mn/api",
    "pos": "https://pos.acme-shop.io",
    "bank": "https://openbanking.bank.mn/statements/v2",
}
OPS_EMAIL = "ops@acme-shop.io"
SMS_GATEWAY_URL = "https://sms.example.com/gateway"


@dataclass
class Synth:
    template: dict[str, Any]
    stack: Any
    code_dir: Path

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template["Resources"].items() if v["Type"] == kind}


def synthesize(tmp_dir: Path, context: dict[str, Any]) -> Synth:
    from aws_cdk import App

    from infra.app import build_app
    from infra.bundling import stage_code
    from infra.lambda_defaults import FunctionArtifacts

    layer = tmp_dir / "layer"
    (layer / "python").mkdir(parents=True, exist_ok=True)
    code = stage_code(project_root=PROJECT_ROOT, cache_dir=tmp_dir / "build")
    # The repository's cdk.json context first (feature flags included), as `cdk synth` would, then the test's keys.
    app = App(context={**CDK_CONTEXT, **context}, outdir=str(tmp_dir / "cdk.out"))
    stack = build_app(app, artifacts=FunctionArtifacts(code_dir=code, layer_dir=layer))
    assembly = app.synth()
    return Synth(assembly.get_stack_by_name(stack.stack_name).template, stack, code)


@pytest.fixture(scope="session")
def existing_synth(tmp_path_factory) -> Synth:
    return synthesize(
        tmp_path_factory.mktemp("existing"),
        {
            "conveyor:stage": "test",
            "conveyor:database": EXISTING,
            "conveyor:emailFrom": SENDER,
            "conveyor:integrations": {name: {"url": url} for name, url in INTEGRATION_URLS.items()},
            "conveyor:opsEmail": OPS_EMAIL,
        },
    )


@pytest.fixture(scope="session")
def create_synth(tmp_path_factory) -> Synth:
    return synthesize(
        tmp_path_factory.mktemp("create"),
        {
            "conveyor:stage": "prod",
            "conveyor:database": {"mode": "create"},
            "conveyor:alarms": {"email": "ops@example.com"},
            "conveyor:emailFrom": SENDER,
            "conveyor:integrations": {**CDK_CONTEXT["conveyor:integrations"], "sms": {"url": SMS_GATEWAY_URL}},
        },
    )
