"""Secret values from the environment or from files, so that YAML never holds a real key.

A Secret annotated `substitution.aigw.run/env/<key>: VAR` takes `<key>` from the environment
variable VAR; `substitution.aigw.run/file/<key>: PATH` from the file PATH (relative to the YAML
file). Envoy AI Gateway's `aigw run` reads the same annotations. A value that cannot be resolved is
reported where it is used: a Gateway whose backend needs it fails with a message naming the variable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

PREFIX = "substitution.aigw.run/"


def substitute_secret(
    doc: dict[str, Any], env: Mapping[str, str], read_file: Callable[[str], str] | None
) -> dict[str, Any]:
    """The Secret document with its substituted keys filled in stringData; keys that could not be
    resolved are listed under `unresolved` (key -> reason) instead."""
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    wanted = {k[len(PREFIX) :]: v for k, v in annotations.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if not wanted:
        return doc
    string_data = dict(doc.get("stringData") or {})
    unresolved: dict[str, str] = {}
    for spec, source in wanted.items():
        kind, _, key = spec.partition("/")
        if kind == "env":
            value = env.get(source, "")
            if value.strip():
                string_data[key] = value
            else:  # `OPENAI_API_KEY= aigw-xds run`: a key of nothing is a key not given
                unresolved[key] = f"environment variable {source} is {'empty' if source in env else 'not set'}"
        elif kind == "file":
            if read_file is None:
                unresolved[key] = f"file substitution ({source}) is not available here"
                continue
            try:
                text = read_file(str(source)).strip()
            except OSError as exc:
                unresolved[key] = f"cannot read {source}: {exc.strerror or exc}"
                continue
            if text:
                string_data[key] = text
            else:
                unresolved[key] = f"file {source} is empty"
        else:
            unresolved[key] = f"unknown substitution {PREFIX}{spec}"
    for key in unresolved:
        string_data.pop(key, None)
    return {**doc, "stringData": string_data, "unresolved": unresolved}
