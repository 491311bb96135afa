"""What `aigw-xds run` tells its user: the starting and ready lines, the table of models a Gateway
routes, Envoy's access log, Envoy's own warnings and errors, and run's errors.

Pure functions give the console's text forms (models_table, changes_text, ready_line,
access_line); a Console, made from the log format, decides how each message is written: that text
for people (the default), or one JSON object a line (`--log-format json`) with the same fields as
the control plane's structlog events (event, level, timestamp), so that every line run writes is
JSON."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypedDict

from structlog.processors import JSONRenderer, TimeStamper

from aigw_contract import MODEL_HEADER
from aigw_contract.backend_name import BackendName

if TYPE_CHECKING:  # the command line imports this module for its errors: it stays quick to import
    from aigw.translator.v1 import config_pb2

    from .compile.ir import ExtAuth, GatewayIR, Rule

FORMATS = ("console", "json")


class RowBackend(TypedDict):
    backend: str | None  # the AIServiceBackend; None when the backend name is not the contract's
    priority: int
    weight: int


class ModelRow(TypedDict):
    model: str | None  # None: the rule matches any model
    backends: list[RowBackend]


def model_rows(gateway: GatewayIR) -> list[ModelRow]:
    """One row per model a rule of the Gateway matches, with the rule's backends."""
    return [row for rule in gateway.rules for row in rule_rows(rule)]


def rule_rows(rule: Rule) -> list[ModelRow]:
    """A rule's rows of the model table: one per model it matches by name, else one for any model."""
    models: list[str | None] = [h.value for match in rule.matches for h in match if h.name == MODEL_HEADER]
    backends = [
        RowBackend(backend=_service_backend(b.name), priority=b.priority, weight=b.weight) for b in rule.backends
    ]
    return [ModelRow(model=model, backends=backends) for model in models or [None]]


# The console shows this many rows of a table at most: a Gateway of 10,000 models would scroll its
# ready line away, and print 10,000 lines again on every save.
TABLE_ROWS = 30


def models_table(gateway: GatewayIR, limit: int = TABLE_ROWS) -> str:
    """The model table, then a line per MCPRoute (its path and MCP servers)."""
    mcp = mcp_lines(gateway)
    if not gateway.rules:  # a header over nothing read as a table that failed to print
        return "\n".join(mcp) or (
            "  (nothing is served: no AIGatewayRoute or MCPRoute attached to this Gateway is served; the warnings "
            "above say why)"
        )
    rows = model_rows(gateway)
    lines = _aligned([("MODEL", "BACKENDS (priority:weight)"), *map(_cells, rows[:limit])])
    if len(rows) > limit:
        lines.append(f"  ({len(rows) - limit:,} more not shown)")
    return "\n".join([*lines, *mcp])


def mcp_lines(gateway: GatewayIR) -> list[str]:
    """A line per MCPRoute served: the path its clients use, and its MCP servers (the prefixes of
    their tools' names), each with its tool selector when it has one."""
    envoys = {
        mcp.name: mcp for listener in gateway.listeners for vhost in listener.virtual_hosts for mcp in vhost.mcp_routes
    }
    return [
        f"  MCP {envoys[route.name].path if route.name in envoys else '?'} ({route.name}): "
        + ", ".join(map(_mcp_server, route.backends))
        + _mcp_clients(route, envoys[route.name].ext_auth if route.name in envoys else None)
        for route in gateway.translator_core.mcp_routes
    ]


def _mcp_clients(route: config_pb2.MCPRoute, ext_auth: ExtAuth | None) -> str:
    """Who may use an MCPRoute, as its line ends: the checks its securityPolicy asks for."""
    checks = []
    if route.HasField("oauth"):
        checks.append("OAuth token")
    if ext_auth is not None:
        protocol = "gRPC" if ext_auth.grpc else "HTTP"
        checks.append(f"external authorization ({protocol}{', fail open' if ext_auth.fail_open else ''})")
    if route.HasField("client_keys"):
        checks.append(f"API key ({len(route.client_keys.keys)} clients)")
    if route.HasField("authorization"):
        rules = len(route.authorization.rules)
        default = "allow" if route.authorization.default_allow else "deny"
        checks.append(f"{rules} authorization rule{'s' if rules != 1 else ''}, else {default}")
    return f"; clients: {', '.join(checks)}" if checks else ""


def _mcp_server(backend: config_pb2.MCPBackend) -> str:
    """A backend as the MCP line shows it: its name, and which of its tools are shown."""
    if not backend.HasField("tool_selector"):
        return backend.name
    selector = backend.tool_selector
    shown = [
        f"{what} {' '.join(values)}"
        for what, values in (
            ("include", selector.include),
            ("includeRegex", selector.include_regex),
            ("exclude", selector.exclude),
            ("excludeRegex", selector.exclude_regex),
        )
        if values
    ]
    return f"{backend.name} [{'; '.join(shown)}]"


def mcp_changes_text(before: GatewayIR, after: GatewayIR) -> str:
    """The MCP lines a reload removed ('-') and added ('+'); "" when they are the same."""
    was, now = mcp_lines(before), mcp_lines(after)
    if was == now:
        return ""
    changed = [f"- {line.strip()}" for line in was if line not in now] + [
        f"+ {line.strip()}" for line in now if line not in was
    ]
    return "\n".join(["aigw-xds: the MCP routes changed:", *(f"  {line}" for line in changed)])


def row_changes(before: GatewayIR, after: GatewayIR) -> tuple[list[ModelRow], list[ModelRow]]:
    """The rows of `before`'s model table that `after`'s lacks, and those of `after`'s that
    `before`'s lacks: what a reload changed in it. Only the rules that are not the same objects in
    both are looked at (a compile keeps the rules of the routes it did not compile again), so a
    one-route edit of 10,000 routes costs what the route's rows do."""
    rules_before, rules_after = before.rules, after.rules
    kept = {id(rule) for rule in rules_before}.intersection(id(rule) for rule in rules_after)
    gone = [row for rule in rules_before if id(rule) not in kept for row in rule_rows(rule)]
    new = [row for rule in rules_after if id(rule) not in kept for row in rule_rows(rule)]
    return _unmatched(gone, Counter(map(_row_key, new))), _unmatched(new, Counter(map(_row_key, gone)))


def changes_text(removed: Sequence[ModelRow], added: Sequence[ModelRow], limit: int = TABLE_ROWS) -> str:
    """The changed rows of a model table, '-' removed and '+' added, `limit` lines at most."""
    cells = [_cells(row, "- ") for row in removed] + [_cells(row, "+ ") for row in added]
    lines = ["aigw-xds: the model table changed:", *_aligned(cells[:limit])]
    if len(cells) > limit:
        lines.append(f"  ({len(cells) - limit:,} more not shown)")
    return "\n".join(lines)


def _cells(row: ModelRow, mark: str = "") -> tuple[str, str]:
    """A row's model (after `mark`) and its backends, as the console shows them."""
    backends = ", ".join(f"{b['backend'] or '-'} ({b['priority']}:{b['weight']})" for b in row["backends"])
    return mark + (row["model"] or "(any)"), backends or "-"


def _aligned(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max((len(first) for first, _ in rows), default=0)
    return [f"  {first.ljust(width)}  {second}" for first, second in rows]


def _row_key(row: ModelRow) -> tuple[object, ...]:
    return row["model"], tuple((b["backend"], b["priority"], b["weight"]) for b in row["backends"])


def _unmatched(rows: list[ModelRow], others: Counter[tuple[object, ...]]) -> list[ModelRow]:
    """`rows` without one equal row for each in `others` (a multiset difference, in order)."""
    left = []
    for row in rows:
        key = _row_key(row)
        if others[key] > 0:
            others[key] -= 1
        else:
            left.append(row)
    return left


def _service_backend(backend_name: str) -> str | None:
    """The AIServiceBackend of a backend name (the contract's BackendName), or None."""
    parsed = BackendName.parse(backend_name)
    return parsed.service_backend if parsed else None


def ready_line(listeners: Sequence[str], fleet: str, admin: str, xds: str, config: str) -> str:
    return (
        f"aigw-xds ready: {', '.join(listeners)}  (gateway {fleet}; Envoy admin {admin}; xDS {xds}; watching {config})"
    )


def access_record(line: str) -> dict[str, Any] | None:
    """One line of Envoy's access log (a JSON object), or None when it is not one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


_SENT_MODEL = "gen_ai.request.model_override"  # the model the backend was asked for
_SHOWN_FIRST = {
    "start_time",
    "method",
    "path",
    "response_code",
    "response_flags",
    "response_code_details",
    "duration_ms",
    "upstream_host",
    "upstream_cluster",
    "request_id",
    "gen_ai.request.model",
    "gen_ai.provider.name",
}


def access_line(line: str) -> str:
    """One access-log JSON record as a short line for the console."""
    record = access_record(line)
    if record is None:
        return line
    if record.get("method") in (None, "", "-") and not record.get("response_code"):
        # A connection that ended before a request was read (a TLS client that closed after the
        # handshake, a probe): a line of dashes told a new user nothing.
        why = [
            str(record[k]) for k in ("response_flags", "response_code_details") if record.get(k) not in (None, "", "-")
        ]
        return f"access: a connection ended before a request was read ({', '.join(why) or 'nothing sent'})"
    parts = [
        record.get("method") or "-",
        record.get("path") or "-",
        str(record.get("response_code") or "-"),
        f"model={record.get('gen_ai.request.model') or '-'}",
        f"backend={_service_backend(record.get('gen_ai.provider.name') or '') or '-'}",
        f"{record.get('duration_ms', '-')}ms",
    ]
    details = record.get("response_code_details")
    if _is_error(record.get("response_code")) and details not in (None, "", "-", "via_upstream"):
        parts.append(f"details={details}")  # an error Envoy (or the translator) answered itself: why
        if details == "no_healthy_upstream" and record.get("upstream_cluster") not in (None, "", "-"):
            # No address to send to: none resolved, or every one ejected (a new user's trial: a
            # hostname that does not resolve named nothing).
            cluster = record["upstream_cluster"]
            parts.append(f"(rule {cluster} has no healthy address: a hostname that does not resolve?)")
    requested = record.get("gen_ai.request.model")
    parts += [
        f"{k}={v}"
        for k, v in record.items()
        if k not in _SHOWN_FIRST
        and v not in (None, "", "-", False)
        and not (k == _SENT_MODEL and v == requested)  # no override: the model shown already
    ]
    return "access: " + " ".join(parts)


def _is_error(code: object) -> bool:
    return isinstance(code, int) and code >= 400


# Envoy's log levels, rising.
ENVOY_LEVELS = ("trace", "debug", "info", "warning", "error", "critical")


def envoy_line_level(line: str) -> str | None:
    """The level of a line of Envoy's log ("[time][thread][level][logger] ..."); None for a line
    that is not one (a continuation)."""
    return next((level for level in ENVOY_LEVELS if f"][{level}][" in line), None)


_stamp = TimeStamper(fmt="iso", utc=True)
_render = JSONRenderer()
_write_lock = threading.Lock()  # lines come from Envoy's reader threads too: never half a line


class Console:
    """Where and how run's messages are written: stdout for run's own messages and the access log,
    stderr for Envoy's problems and errors (sys.stdout and sys.stderr of the time unless given),
    as text for people ("console") or one JSON object a line ("json")."""

    def __init__(self, fmt: str = "console", out: TextIO | None = None, err: TextIO | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
        self.json = fmt == "json"
        self._out = out
        self._err = err
        self._stopping = False

    def say(self, event: str, text: str, **fields: Any) -> None:
        """One of run's messages: `text` on the console, else the event with its fields."""
        self._write(self._out or sys.stdout, text if not self.json else _json(event, "info", fields))

    def ready(self, listeners: Sequence[str], fleet: str, admin: str, xds: str, config: str) -> None:
        self.say(
            "ready",
            ready_line(listeners, fleet, admin, xds, config),
            listeners=list(listeners),
            fleet=fleet,
            admin=admin,
            xds=xds,
            config=config,
        )

    def models(self, gateway: GatewayIR) -> None:
        """The Gateway's model table: its first TABLE_ROWS rows on the console, every row in JSON."""
        self.say("models", models_table(gateway), fleet=gateway.fleet, rows=model_rows(gateway))

    def models_changed(self, fleet: str, removed: list[ModelRow], added: list[ModelRow]) -> None:
        """The rows of the Gateway's model table a reload removed and added (every one in JSON)."""
        self.say("models_changed", changes_text(removed, added), fleet=fleet, removed=removed, added=added)

    def mcp_changed(self, fleet: str, text: str) -> None:
        """The MCP lines a reload changed (mcp_changes_text)."""
        self.say("mcp_changed", text, fleet=fleet)

    def access(self, line: str) -> None:
        """A line of Envoy's stdout (its access log): shortened on the console; in JSON, the
        record's fields unchanged under "record" (its keys are the access-log format's and the
        configured costs' metadata keys, which may be any name: they never clash with ours)."""
        if not line.strip():
            return
        if not self.json:
            self._write(self._out or sys.stdout, access_line(line))
            return
        record = access_record(line)
        if record is None:
            self._write(self._out or sys.stdout, _json("envoy_output", "info", {"line": line}))
        else:
            self._write(self._out or sys.stdout, _json("access", "info", {"record": record}))

    def stopping(self) -> None:
        """run stops Envoy: its warnings from now on are what stopping says (the signal caught, the
        xDS stream closed), not problems: dropped on the console, info-level events in JSON (the
        line kept for whatever reads it, no alert raised by a clean shutdown); errors still show."""
        self._stopping = True

    def envoy(self, line: str, shown_from: str = "warning") -> None:
        """A line of Envoy's stderr, shown from level `shown_from` up (run's --envoy-log-level, at
        which Envoy logs); the rest is dropped. While Envoy is stopped, its warnings (the signal it
        caught) are info events, and not shown on the console."""
        level = envoy_line_level(line)
        if level is None or ENVOY_LEVELS.index(level) < ENVOY_LEVELS.index(shown_from):
            return
        expected = self._stopping and level == "warning"
        if expected and not self.json:
            return
        event_level = "info" if expected else {"trace": "debug"}.get(level, level)
        text = f"envoy: {line}" if not self.json else _json("envoy", event_level, {"line": line})
        self._write(self._err or sys.stderr, text)

    def error(self, message: str) -> None:
        """A problem the user can fix, in one line ("aigw-xds: error: ..." on the console)."""
        text = f"aigw-xds: error: {message}" if not self.json else _json("error", "error", {"message": message})
        self._write(self._err or sys.stderr, text)

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        with _write_lock:
            stream.write(text + "\n")  # one write: a line is never split by another writer's
            stream.flush()


def _json(event: str, level: str, fields: dict[str, Any]) -> str:
    """The JSON line of an event, as the control plane's structlog JSON renders one."""
    rendered = _render(None, level, _stamp(None, level, {**fields, "event": event, "level": level}))
    assert isinstance(rendered, str)
    return rendered
