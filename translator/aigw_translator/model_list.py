"""GET /v1/models and /v1/models/{id} (and the Anthropic ones), answered locally from the config."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import orjson

from aigw.translator.v1 import config_pb2


def _host_only(authority: str) -> str:
    host = authority.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def visible_models(models: Iterable[config_pb2.Model], authority: str) -> list[config_pb2.Model]:
    """Models without hosts are visible everywhere; others only on their hosts. Duplicate ids
    (one model on several routes) are listed once."""
    host = _host_only(authority)
    seen: set[str] = set()
    out = []
    for model in models:
        if model.hosts and host not in {h.lower() for h in model.hosts} and authority.lower() not in model.hosts:
            continue
        if model.id in seen:
            continue
        seen.add(model.id)
        out.append(model)
    return out


def _anthropic_model(m: config_pb2.Model) -> dict[str, str]:
    created = datetime.fromtimestamp(m.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": m.id, "display_name": m.id, "created_at": created}


def _openai_model(m: config_pb2.Model) -> dict[str, str | int]:
    return {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by or "aigw"}


def model_body(models: Iterable[config_pb2.Model], authority: str, model_id: str, anthropic: bool) -> bytes | None:
    """GET /v1/models/{id} (or /anthropic/v1/models/{id}): the model visible on this host, or None."""
    for m in visible_models(models, authority):
        if m.id == model_id:
            return orjson.dumps(_anthropic_model(m) if anthropic else _openai_model(m))
    return None


def anthropic_models_body(models: Iterable[config_pb2.Model], authority: str) -> bytes:
    """The Anthropic Models API list shape (GET /anthropic/v1/models)."""
    data = [_anthropic_model(m) for m in visible_models(models, authority)]
    return orjson.dumps(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


def models_body(models: Iterable[config_pb2.Model], authority: str) -> bytes:
    data = [_openai_model(m) for m in visible_models(models, authority)]
    return orjson.dumps({"object": "list", "data": data})
