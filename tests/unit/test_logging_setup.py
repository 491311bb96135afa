"""Both output formats of the control plane's log: JSON keeps every field of an event; the console
shows a diagnostic as its whole line, in place of the fields that line spells out."""

from __future__ import annotations

import json

import pytest
import structlog

from aigw_xds.diagnostics import Origin, error
from aigw_xds.keys import ResourceKey
from aigw_xds.logging_setup import configure

DIAGNOSTIC = error("Field required", Origin("conf.yaml", 2), ResourceKey("AIServiceBackend", "ns", "x"), "spec.schema")
LINE = "error: conf.yaml#2: AIServiceBackend ns/x spec.schema: Field required"


@pytest.fixture(autouse=True)
def _restore_structlog():
    before = structlog.get_config()
    yield
    structlog.configure(**before)


def test_json_keeps_the_event_name_and_every_field(capsys):
    configure("info", "json")
    structlog.get_logger("t").error("diagnostic", **DIAGNOSTIC.log_fields())
    record = json.loads(capsys.readouterr().err)
    assert record["event"] == "diagnostic" and record["level"] == "error" and record["text"] == LINE
    fields = {k: record[k] for k in ("file", "document", "resource", "field", "message")}
    assert fields == {
        "file": "conf.yaml",
        "document": 2,
        "resource": "AIServiceBackend ns/x",
        "field": "spec.schema",
        "message": "Field required",
    }


def test_the_console_shows_a_diagnostic_as_its_line(capsys):
    configure("info", "console")
    structlog.get_logger("t").error("diagnostic", **DIAGNOSTIC.log_fields())
    structlog.get_logger("t").info("configuration_applied", published=["default/gw"])
    diagnostic, applied = capsys.readouterr().err.splitlines()
    assert diagnostic.endswith(f"diagnostic {LINE}") and "message=" not in diagnostic
    assert "configuration_applied" in applied and "published=['default/gw']" in applied
