"""What `aigw-xds run` shows on the console: the table of models a Gateway routes, Envoy's access
log as short lines, and Envoy's own warnings and errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO

from aigw_contract import MODEL_HEADER
from aigw_contract.backend_name import BackendName

from .compile.ir import GatewayIR


def models_table(gateway: GatewayIR) -> str:
    rows = [("MODEL", "BACKENDS (priority:weight)")]
    for rule in gateway.rules:
        models = [h.value for match in rule.matches for h in match if h.name == MODEL_HEADER] or ["(any)"]
        backends = ", ".join(f"{_service_backend(b.name)} ({b.priority}:{b.weight})" for b in rule.backends) or "-"
        rows.extend((model, backends) for model in models)
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {m.ljust(width)}  {b}" for m, b in rows)


def _service_backend(backend_name: str) -> str:
    """The AIServiceBackend of a backend name (the contract's BackendName), or "-"."""
    parsed = BackendName.parse(backend_name)
    return parsed.service_backend if parsed else "-"


def access_line(line: str) -> str:
    """One access-log JSON record as a short line for the console."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    parts = [
        record.get("method") or "-",
        record.get("path") or "-",
        str(record.get("response_code") or "-"),
        f"model={record.get('gen_ai.request.model') or '-'}",
        f"backend={_service_backend(record.get('gen_ai.provider.name') or '')}",
        f"{record.get('duration_ms', '-')}ms",
    ]
    known = {
        "start_time",
        "method",
        "path",
        "response_code",
        "response_flags",
        "duration_ms",
        "upstream_host",
        "upstream_cluster",
        "request_id",
        "gen_ai.request.model",
        "gen_ai.provider.name",
    }
    parts += [f"{k}={v}" for k, v in record.items() if k not in known and v not in (None, "", "-", False)]
    return "access: " + " ".join(parts)


def show_access_lines(out: TextIO) -> Callable[[str], None]:
    """Envoy's stdout (its access log) as short lines on our output; nothing is kept."""

    def show(line: str) -> None:
        if line.strip():
            print(access_line(line), file=out, flush=True)

    return show


def show_envoy_problems(line: str) -> None:
    """Envoy's warnings and errors on our stderr; the rest of its log is dropped."""
    if "][warning][" in line or "][error][" in line or "][critical][" in line:
        print(f"envoy: {line}", file=sys.stderr, flush=True)
