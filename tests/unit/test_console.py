"""What `aigw-xds run` writes besides its log, in both formats: the console's lines (which the
README shows and the e2e tests read) and, with `--log-format json`, one JSON object a line carrying
the same facts as fields."""

from __future__ import annotations

import io
import json

import pytest

from aigw_xds.compile import compile_resources
from aigw_xds.compile.incremental import CompileMemo
from aigw_xds.compile.ir import GatewayIR
from aigw_xds.console import (
    Console,
    access_line,
    changes_text,
    model_rows,
    models_table,
    ready_line,
    row_changes,
)
from aigw_xds.sources.files import FileSource
from tests.resource_text import backend, gateway, resources, route

ANY_MODEL_ROUTE = """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: rest, namespace: default}
spec:
  parentRefs:
    - {name: gw, kind: Gateway, group: gateway.networking.k8s.io}
  rules:
    - backendRefs:
        - {name: b}
"""

RECORD = (
    '{"method":"POST","path":"/v1/chat/completions","response_code":429,"duration_ms":8,'
    '"gen_ai.request.model":"m1","gen_ai.provider.name":"default/a/route/r/rule/0/ref/0","llm_total_token":19,'
    '"gen_ai.response.model":null,"level":"a cost named level"}'
)
ENVOY_WARNING = "[2026-12-02 12:16:49.832][12967][warning][main] [source/server/server.cc:1028] caught ENVOY_SIGTERM"
ENVOY_INFO = "[2026-12-02 12:16:49.832][12967][info][main] [source/server/server.cc:1000] starting main dispatch loop"


@pytest.fixture(scope="module")
def gw():
    text = gateway() + route("r", {"m1": "a", "m2": [("a", 0, 3), ("b", 1, 1)]}) + ANY_MODEL_ROUTE
    result = compile_resources(resources(text + backend("a", 9001) + backend("b", 9002)))
    assert result.errors == []
    return result.gateways["default/gw"]


def _streams(fmt: str) -> tuple[Console, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Console(fmt, out=out, err=err), out, err


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_console_forms_are_the_documented_lines(gw):
    assert models_table(gw) == (
        "  MODEL  BACKENDS (priority:weight)\n  m1     a (0:1)\n  m2     a (0:3), b (1:1)\n  (any)  b (0:1)"
    )
    alone = compile_resources(resources(gateway())).gateways["default/gw"]  # no route attached
    assert models_table(alone) == (
        "  (nothing is served: no AIGatewayRoute or MCPRoute attached to this Gateway is served; the warnings "
        "above say why)"
    )
    assert ready_line(["http://localhost:1975"], "default/gw", "http://127.0.0.1:9901", "127.0.0.1:4242", "c.yaml") == (
        "aigw-xds ready: http://localhost:1975  (gateway default/gw; Envoy admin http://127.0.0.1:9901; "
        "xDS 127.0.0.1:4242; watching c.yaml)"
    )
    assert access_line(RECORD) == (
        "access: POST /v1/chat/completions 429 model=m1 backend=a 8ms llm_total_token=19 level=a cost named level"
    )
    assert access_line("not json") == "not json"


def test_an_access_line_of_a_connection_without_a_request_says_so():
    """Envoy logs a connection that ended before a request was read (a TLS client that hung up after
    its handshake) with no method and code 0: a line of dashes told a new user nothing."""
    record = {"start_time": "2026-12-07T00:00:00Z", "method": None, "path": None, "response_code": 0}
    flagged = {**record, "response_flags": "DC", "response_code_details": "-"}
    assert access_line(json.dumps(flagged)) == "access: a connection ended before a request was read (DC)"
    assert access_line(json.dumps(record)) == "access: a connection ended before a request was read (nothing sent)"
    # Why Envoy answered an error itself, and nothing where the backend answered (nor for a 200 the
    # gateway answered, such as the model list).
    ok = RECORD.replace('"response_code":429', '"response_code":200').replace(
        '"duration_ms"', '"response_code_details":"aigw_models","duration_ms"'
    )
    assert "details" not in access_line(ok)
    for details, shown in (
        ("via_upstream", ""),
        ("ext_proc_error_gRPC_error_14{x}", " details=ext_proc_error_gRPC_error_14{x}"),
    ):
        record = RECORD.replace('"duration_ms"', f'"response_code_details":"{details}","duration_ms"')
        assert access_line(record) == (
            f"access: POST /v1/chat/completions 429 model=m1 backend=a 8ms{shown} llm_total_token=19 "
            "level=a cost named level"
        )
    # No address to send to (a new user's trial: a hostname that does not resolve named nothing).
    unresolved = RECORD.replace(
        '"duration_ms"', '"response_code_details":"no_healthy_upstream","upstream_cluster":"ns/r/rule/0","duration_ms"'
    )
    assert (
        " details=no_healthy_upstream (rule ns/r/rule/0 has no healthy address: a hostname that does not resolve?)"
        in (access_line(unresolved))
    )
    # The model sent upstream is shown where an override changed it, not where it is the client's.
    for sent, shown in (("m1", ""), ("other", " gen_ai.request.model_override=other")):
        record = RECORD.replace('"llm_total_token"', f'"gen_ai.request.model_override":"{sent}","llm_total_token"')
        assert access_line(record) == (
            f"access: POST /v1/chat/completions 429 model=m1 backend=a 8ms{shown} llm_total_token=19 "
            "level=a cost named level"
        )


def test_console_writes_the_text_forms_to_stdout_and_envoy_problems_to_stderr(gw):
    console, out, err = _streams("console")
    console.say("starting", "aigw-xds: starting ...", config="c.yaml")
    console.ready(["http://localhost:1975"], "default/gw", "http://127.0.0.1:9901", "127.0.0.1:4242", "c.yaml")
    console.models(gw)
    console.access(RECORD)
    console.access("  \n")  # blank lines of Envoy's stdout are dropped
    console.envoy(ENVOY_WARNING)
    console.envoy(ENVOY_INFO)  # below warning: dropped
    console.error("port 1975 is in use")
    lines = out.getvalue().splitlines()
    assert lines[0] == "aigw-xds: starting ..." and lines[1].startswith("aigw-xds ready: http://localhost:1975  (")
    assert "\n".join(lines[2:6]) == models_table(gw)
    assert lines[6:] == [access_line(RECORD)]
    assert err.getvalue().splitlines() == [f"envoy: {ENVOY_WARNING}", "aigw-xds: error: port 1975 is in use"]
    # Once run stops Envoy, its warnings are what stopping says (the signal, the xDS stream closed);
    # its errors still show.
    console.stopping()
    console.envoy(ENVOY_WARNING)
    console.envoy(ENVOY_WARNING.replace("[warning]", "[error]"))
    assert err.getvalue().splitlines()[2:] == [f"envoy: {ENVOY_WARNING.replace('[warning]', '[error]')}"]


def test_envoy_lines_are_shown_from_the_level_envoy_logs_at():
    """From a new-user trial: `run --envoy-log-level debug` showed nothing of Envoy's debug log (every
    line below warning was dropped): the lines at run's --envoy-log-level and above are shown."""
    console, _, err = _streams("console")
    debug = ENVOY_INFO.replace("[info]", "[debug]")
    for line in (debug, ENVOY_INFO, ENVOY_WARNING):
        console.envoy(line, shown_from="debug")
    console.envoy(debug, shown_from="info")
    assert err.getvalue().splitlines() == [f"envoy: {debug}", f"envoy: {ENVOY_INFO}", f"envoy: {ENVOY_WARNING}"]
    console, _, err = _streams("json")
    console.envoy(debug, shown_from="debug")
    event = json.loads(err.getvalue())
    assert (event["event"], event["level"], event["line"]) == ("envoy", "debug", debug)


def test_json_writes_every_message_as_one_event_a_line(gw):
    console, out, err = _streams("json")
    console.say("starting", "aigw-xds: starting ...\nsecond line", config="c.yaml")
    console.ready(["http://localhost:1975"], "default/gw", "http://127.0.0.1:9901", "127.0.0.1:4242", "c.yaml")
    console.models(gw)
    console.access(RECORD)
    console.access("  ")
    console.access("not json")
    console.envoy(ENVOY_WARNING)
    console.envoy(ENVOY_INFO)
    console.envoy("[2026-12-02 12:16:49.832][1][critical][main] [x.cc:1] no memory")
    console.error("no Gateway compiled:\n  error: c.yaml: no such file")
    starting, ready, models, access, output = _events(out)
    assert (starting["event"], starting["level"], starting["config"]) == ("starting", "info", "c.yaml")
    assert starting["timestamp"].endswith("Z") and "aigw-xds" not in json.dumps(starting)  # fields, not the text
    assert {k: ready[k] for k in ("event", "listeners", "fleet", "admin", "xds", "config")} == {
        "event": "ready",
        "listeners": ["http://localhost:1975"],
        "fleet": "default/gw",
        "admin": "http://127.0.0.1:9901",
        "xds": "127.0.0.1:4242",
        "config": "c.yaml",
    }
    assert models["event"] == "models" and models["fleet"] == "default/gw"
    assert models["rows"] == [
        {"model": "m1", "backends": [{"backend": "a", "priority": 0, "weight": 1}]},
        {
            "model": "m2",
            "backends": [{"backend": "a", "priority": 0, "weight": 3}, {"backend": "b", "priority": 1, "weight": 1}],
        },
        {"model": None, "backends": [{"backend": "b", "priority": 0, "weight": 1}]},
    ]
    assert models["rows"] == model_rows(gw)
    # Envoy's record unchanged, its own "level" included; no console text
    assert access["event"] == "access" and access["level"] == "info"
    assert access["record"] == json.loads(RECORD) and "access:" not in json.dumps(access)
    assert {k: output[k] for k in ("event", "line")} == {"event": "envoy_output", "line": "not json"}
    warning, critical, error = _events(err)
    assert (warning["event"], warning["level"], warning["line"]) == ("envoy", "warning", ENVOY_WARNING)
    assert (critical["event"], critical["level"]) == ("envoy", "critical")
    assert {k: error[k] for k in ("event", "level", "message")} == {
        "event": "error",
        "level": "error",
        "message": "no Gateway compiled:\n  error: c.yaml: no such file",
    }
    # Once run stops Envoy, its warnings are info events (a clean shutdown raises no alert), its
    # errors keep their level.
    console.stopping()
    console.envoy(ENVOY_WARNING)
    console.envoy(ENVOY_WARNING.replace("[warning]", "[error]"))
    stopped, failed = _events(err)[3:]
    assert (stopped["event"], stopped["level"], stopped["line"]) == ("envoy", "info", ENVOY_WARNING)
    assert (failed["event"], failed["level"]) == ("envoy", "error")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="'auto' is not one of console, json"):
        Console("auto")


def test_a_large_table_shows_its_first_rows_and_counts_the_rest(gw):
    assert models_table(gw, limit=2) == (
        "  MODEL  BACKENDS (priority:weight)\n  m1     a (0:1)\n  m2     a (0:3), b (1:1)\n  (1 more not shown)"
    )
    assert models_table(gw, limit=3) == models_table(gw)


def test_a_reload_shows_the_rows_it_changed(tmp_path):
    """A reload prints what it changed in the model table, found among the rules the compile made
    anew: the file source and the compile memo keep every other rule (the same objects), as the
    control plane has them under `run`."""
    (tmp_path / "gw.yaml").write_text(gateway() + backend("a", 9001) + backend("b", 9002))
    (tmp_path / "r1.yaml").write_text(route("r1", {"m1": "a", "m2": [("a", 0, 3), ("b", 1, 1)]}))
    (tmp_path / "r2.yaml").write_text(route("r2", {"m3": "b"}))
    source, memo = FileSource(tmp_path), CompileMemo()

    def compiled() -> GatewayIR:
        result = compile_resources(source.load(), memo=memo)
        assert result.errors == []
        return result.gateways["default/gw"]

    before = compiled()
    assert row_changes(before, compiled()) == ([], [])  # nothing edited
    (tmp_path / "r1.yaml").write_text(route("r1", {"m1": "a", "m2": [("a", 0, 3), ("b", 1, 2)], "m4": "b"}))
    after = compiled()
    assert next(r for r in after.rules if r.route == "default/r2") in before.rules  # kept: not looked at
    removed, added = row_changes(before, after)
    row = {"model": "m2", "backends": [{"backend": "a", "priority": 0, "weight": 3}]}
    assert removed == [{**row, "backends": [*row["backends"], {"backend": "b", "priority": 1, "weight": 1}]}]
    assert added == [
        {**row, "backends": [*row["backends"], {"backend": "b", "priority": 1, "weight": 2}]},
        {"model": "m4", "backends": [{"backend": "b", "priority": 0, "weight": 1}]},
    ]
    assert changes_text(removed, added) == (
        "aigw-xds: the model table changed:\n  - m2  a (0:3), b (1:1)\n  + m2  a (0:3), b (1:2)\n  + m4  b (0:1)"
    )
    assert changes_text(removed, added, limit=1) == (
        "aigw-xds: the model table changed:\n  - m2  a (0:3), b (1:1)\n  (2 more not shown)"
    )
    # Rules made anew with the same rows (a compile without the memo) change nothing in the table.
    fresh = compile_resources(source.load()).gateways["default/gw"]
    assert not set(map(id, fresh.rules)) & set(map(id, after.rules))
    assert row_changes(after, fresh) == ([], [])
    console, out, _ = _streams("json")
    console.models_changed("default/gw", removed, added)
    (event,) = _events(out)
    assert (event["event"], event["fleet"], event["removed"], event["added"]) == (
        "models_changed",
        "default/gw",
        removed,
        added,
    )


def test_the_table_lists_rules_in_the_order_routes_try_them():
    """A route of 12 rules: rows by rule index (rule 10 after rule 9, not after rule 1), so the
    rows a cut table shows are the first ones."""
    models = {f"m{i:02d}": "a" for i in range(12)}
    result = compile_resources(resources(gateway() + route("r", models) + backend("a", 9001)))
    gw = result.gateways["default/gw"]
    assert [row["model"] for row in model_rows(gw)] == list(models)
    assert models_table(gw, limit=3).splitlines()[1:] == [
        "  m00    a (0:1)",
        "  m01    a (0:1)",
        "  m02    a (0:1)",
        "  (9 more not shown)",
    ]
