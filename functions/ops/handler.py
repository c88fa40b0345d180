"""PLACEHOLDER for the operations API's Lambda entry point, so the CDK app has a module to point at.

The real handler (Powertools' HTTP API resolver over ``shared.operations``) is written on another branch; at merge
its version replaces this file. Until then every request fails loudly rather than pretending to work.
"""

from __future__ import annotations

from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise NotImplementedError("functions/ops/handler.py is a placeholder: the operations API handler is not merged yet")
