"""Build the CDK app from ``cdk.json`` context and the job registry; shared by ``app.py`` and the tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aws_cdk import App, Aspects, Environment, Validations
from cdk_nag import AwsSolutionsChecks, ServerlessChecks

from infra.bundling import build_layer, bytecode_compiler, runtime_requirements, stage_code, uncompiled_notice
from infra.checks import ScheduleChecks
from infra.config import load_config
from infra.lambda_defaults import PYTHON_VERSION, FunctionArtifacts
from infra.stack import ConveyorStack
from shared.names import APP
from shared.registry import load_registry

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = PROJECT_ROOT / ".build"


def build_artifacts(architecture: str) -> FunctionArtifacts:
    """Stage the function code and build the dependency layer (cached in ``.build/``; pip needs PyPI once).

    Both are compiled to bytecode when this machine has the runtime's Python; otherwise they ship as source, and
    the user is told what that costs each cold start (on stderr, which ``cdk synth`` shows).
    """
    bytecode = bytecode_compiler(PYTHON_VERSION)
    if bytecode is None:
        print(uncompiled_notice(PYTHON_VERSION), file=sys.stderr)
    return FunctionArtifacts(
        code_dir=stage_code(project_root=PROJECT_ROOT, cache_dir=BUILD_DIR, bytecode=bytecode),
        layer_dir=build_layer(
            requirements=runtime_requirements(PROJECT_ROOT / "pyproject.toml"),
            python_version=PYTHON_VERSION,
            architecture=architecture,
            cache_dir=BUILD_DIR,
            bytecode=bytecode,
        ),
    )


S3_LOGS_BY_POLICY = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"


def build_app(app: App, *, artifacts: FunctionArtifacts | None = None) -> ConveyorStack:
    """Add the Conveyor stack to ``app`` with cdk-nag (AwsSolutions, Serverless) and the schedule checks."""
    config = load_config(app.node.try_get_context)
    registry = load_registry(config.registry)
    # The documents bucket's access logs are delivered under a bucket policy, not an ACL (its log bucket enforces
    # bucket-owner ownership, so ACLs are off): set here as well as in cdk.json, so an app built without cdk.json's
    # context (a test, another CDK app embedding this one) synthesizes the same way.
    if app.node.try_get_context(S3_LOGS_BY_POLICY) is None:
        app.node.set_context(S3_LOGS_BY_POLICY, True)
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    stack = ConveyorStack(
        app,
        f"{APP.capitalize()}-{config.stage}",
        config=config,
        registry=registry,
        artifacts=artifacts or build_artifacts(config.architecture),
        env=Environment(account=account, region=region) if account and region else None,
        description=f"Conveyor background jobs ({config.stage}): {len(registry)} jobs on {len(registry.queues())} queues",
    )
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), ServerlessChecks(app))
    Aspects.of(app).add(ScheduleChecks())
    return stack
