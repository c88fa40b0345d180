#!/usr/bin/env python3
"""The CDK app: ``npx cdk synth`` / ``npx cdk deploy`` (or ``make synth``). Configuration: cdk.json context."""

import os

# aws-cdk-lib's runtime warns on every run that Node 20 is past end-of-life; the warning is not actionable here.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App  # noqa: E402

from infra.app import build_app  # noqa: E402

app = App()
build_app(app)
app.synth()
