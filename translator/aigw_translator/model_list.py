"""GET /v1/models and /v1/models/{id} (and the Anthropic ones), answered locally from the config."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import orjson

from aigw.translator.v1 import config_pb2


def _host_only(authority: str) -> str:
    host = authority.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def visible_models(models: Iterable[config_pb2.Model], authority: str) -> list[config_pb2.Model]:
    """Models without hosts are visible everywhere; others only on their hosts (a `*.example.com`
    one on its subdomains, as Gateway API matches hostnames). Duplicate ids (one model on several
    routes) are listed once."""
    host = _host_only(authority)
    seen: set[str] = set()
    out = []
    for model in models:
        if model.hosts and not any(_covers(h.lower(), host) or h.lower() == authority.lower() for h in model.hosts):
            continue
        if model.id in seen:
            continue
        seen.add(model.id)
        out.append(model)
    return out


def _covers(pattern: str, host: str) -> bool:
    """Whether a route hostname covers `host`: equal, or a wildcard over one of its subdomains."""
    return pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:]))


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


# Anthropic's Models API pages: `limit` models (20 unless asked, 1 to 1000), after `after_id` or
# before `before_id`.
ANTHROPIC_PAGE, ANTHROPIC_PAGE_MAX = 20, 1000


class PageError(ValueError):
    """A list query the Models API refuses (its 400)."""


def anthropic_models_body(models: Iterable[config_pb2.Model], authority: str, query: str = "") -> bytes:
    """The Anthropic Models API list shape (GET /anthropic/v1/models), one page of it: `has_more`
    says whether models lie beyond the page in the direction asked. Raises PageError for a query
    Anthropic refuses."""
    params = dict(parse_qsl(query.lstrip("?")))
    try:
        limit = int(params.get("limit", ANTHROPIC_PAGE))
    except ValueError:
        raise PageError(f"limit: Input should be a valid integer, got {params['limit']!r}") from None
    if not 1 <= limit <= ANTHROPIC_PAGE_MAX:
        raise PageError(f"limit: Input should be between 1 and {ANTHROPIC_PAGE_MAX}, got {limit}")
    after, before = params.get("after_id"), params.get("before_id")
    if after is not None and before is not None:
        raise PageError("after_id and before_id cannot both be given")
    data = [_anthropic_model(m) for m in visible_models(models, authority)]
    ids = [m["id"] for m in data]
    if before is not None:  # an unknown cursor: an empty page, either way
        end = ids.index(before) if before in ids else 0
        page, more = data[max(0, end - limit) : end], end - limit > 0
    else:
        start = ids.index(after) + 1 if after in ids else 0 if after is None else len(ids)
        page, more = data[start : start + limit], start + limit < len(data)
    return orjson.dumps(
        {
            "data": page,
            "has_more": more,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )


def models_body(models: Iterable[config_pb2.Model], authority: str) -> bytes:
    data = [_openai_model(m) for m in visible_models(models, authority)]
    return orjson.dumps({"object": "list", "data": data})
