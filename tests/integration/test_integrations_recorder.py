"""The local integration recorder: under `conveyor dev`, integrations without a URL are answered and logged, not
silently skipped."""

from __future__ import annotations

import os

import pytest

from shared.integrations import INTEGRATIONS
from shared.integrations.http import Integration
from shared.integrations.recorder import Recorder
from tests.support import make_work_handler


@pytest.fixture
def recorder(monkeypatch):
    for name in INTEGRATIONS:
        monkeypatch.delenv(f"CONVEYOR_{name.upper()}_URL", raising=False)
        monkeypatch.delenv(f"CONVEYOR_{name.upper()}_TOKEN", raising=False)
    monkeypatch.delenv("CONVEYOR_STAGE", raising=False)
    lines: list[str] = []
    recorder = Recorder(lines.append)
    recorder.lines = lines
    yield recorder
    recorder.stop()


def test_answers_each_integration_and_prints_what_would_have_been_sent(recorder, monkeypatch):
    monkeypatch.setenv("CONVEYOR_BANK_URL", "https://bank.example.com")

    assert recorder.point_unconfigured() == ["push", "receipts", "pos", "sms"]
    assert os.environ["CONVEYOR_BANK_URL"] == "https://bank.example.com"  # configured ones are left alone

    receipts = Integration.from_env("receipts")
    first = receipts.request("POST", "/receipts", json={"sale_id": 1})
    second = receipts.request("POST", "/receipts", json={"sale_id": 2})
    items = Integration.from_env("pos").request("GET", "/stores/s1/items", params={"since": "2024-01-01"})
    push = Integration.from_env("push").request("POST", "/send", json={"tokens": ["a"]})

    assert (first.status, first.json(), second.json()) == (200, {"receipt_id": "local-1"}, {"receipt_id": "local-2"})
    assert items.json() == {"items": []}
    assert push.json() == {"invalid_tokens": []}
    assert recorder.lines == [
        "integration receipts POST /receipts (recorded, not sent)",
        "integration receipts POST /receipts (recorded, not sent)",
        "integration pos GET /stores/s1/items?since=2024-01-01 (recorded, not sent)",
        "integration push POST /send (recorded, not sent)",
    ]


def test_stop_unsets_the_urls_it_set(recorder):
    recorder.point_unconfigured(["sms"])

    recorder.stop()

    assert "CONVEYOR_SMS_URL" not in os.environ


def test_nothing_starts_when_every_integration_is_configured(recorder, monkeypatch):
    for name in INTEGRATIONS:
        monkeypatch.setenv(f"CONVEYOR_{name.upper()}_URL", f"https://{name}.example.com")

    assert recorder.point_unconfigured() == []
    assert recorder.url is None


def test_local_runtime_points_unconfigured_integrations_at_the_recorder(runtime_factory, calls, monkeypatch):
    for name in INTEGRATIONS:
        monkeypatch.delenv(f"CONVEYOR_{name.upper()}_TOKEN", raising=False)
        monkeypatch.delenv(f"CONVEYOR_{name.upper()}_URL", raising=False)
    monkeypatch.setenv("CONVEYOR_POS_URL", "https://pos.example.com")

    runtime = runtime_factory(handlers={"test.work": make_work_handler(calls)})

    url = runtime.recorder.url
    assert (
        f"integration push, receipts, bank, sms: no CONVEYOR_<NAME>_URL, so the local recorder at {url} answers them "
        "(requests are logged, not sent)"
    ) in runtime.lines
    assert os.environ["CONVEYOR_POS_URL"] == "https://pos.example.com"
    response = Integration.from_env("bank").request("GET", "/statements", params={"cursor": "c1"})
    assert response.json() == {"lines": [], "cursor": None}
    assert "integration bank GET /statements?cursor=c1 (recorded, not sent)" in runtime.lines
