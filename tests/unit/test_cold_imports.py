"""What a handler module's import (a Lambda's cold start) must not load, checked in a fresh interpreter.

Timings are reported by ``bench/cold_start.py``; this guards the import graph behind them, so a module-level import
added later cannot quietly bring the cost back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("heavy", ["boto3", "botocore.config", "botocore.endpoint", "urllib3"])
def test_sms_send_loads_boto3_only_on_the_sns_path(heavy):
    # A deployment that sends through an HTTP gateway never calls SNS; boto3 and the botocore client machinery
    # (~130 ms) are imported when the SNS client is first made.
    assert heavy not in modules_after_import("functions.sms_send.handler")
