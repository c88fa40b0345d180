"""`conveyor cost` end to end: the product registry's table and JSON, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import conveyor


def test_cost_prints_the_table_and_json():
    table = conveyor("cost")
    assert table.returncode == 0, table.stderr
    assert "email.send" in table.stdout and "Per million jobs of the mix: $" in table.stdout
    assert "relay at rest (resident)" in table.stdout and "idle polling by the event sources" in table.stdout
    data = json.loads(conveyor("cost", "--json", "--mix", "email.send=1", "--duration-ms", "10").stdout)
    email = next(j for j in data["jobs"] if j["job"] == "email.send")
    assert data["mix"] == {"email.send": 1.0}
    assert data["dollars_per_million"] == pytest.approx(email["dollars_per_million"])
    assert data["assumptions"]["duration_ms"] == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--duration-ms", "-3"], "conveyor: error: duration must be at least 0 ms"),
        (["--failure-rate", "2"], "conveyor: error: failure rate must be at least 0 and less than 1"),
        (["--mix", "nope=1"], "conveyor: error: mix names unknown job(s) nope"),
        (["--log-bytes", "lots"], "argument --log-bytes: invalid int value: 'lots'"),
    ],
)
def test_cost_refuses_bad_input_in_one_line(args, message):
    result = conveyor("cost", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
