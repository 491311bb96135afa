"""What a backend accepts, where it depends on the backend's schema and version, and the opaque
end-user id forwarded to providers.

Azure OpenAI's dated api-versions: `stream_options` (and `max_completion_tokens`, which came with
the o1 models) are accepted from 2024-09-01-preview on, i.e. every preview dated 2024-09-01 or later
and GA 2024-10-21 or later; 2024-06-01 (GA), 2024-05-01-preview and older reject them as an
unrecognized request argument. Non-dated values ("preview", "latest", the v1 API) are current.
What is decided is always what is sent: the backend's schema.version, else the client's
api-version, else contract.AZURE_DEFAULT_API_VERSION.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qsl

from aigw.translator.v1 import config_pb2
from aigw_contract import AZURE_DEFAULT_API_VERSION

AZURE_OPENAI = "AzureOpenAI"

# First Azure api-version date that accepts stream_options and max_completion_tokens.
AZURE_MODERN_SINCE = "2024-09-01"

_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:-preview)?$")

# Length of the opaque user id (hex digits of an HMAC-SHA256) sent as `user` / `metadata.user_id`.
USER_ID_HEX = 32


# First Azure api-version date that serves the Responses API (/openai/responses).
AZURE_RESPONSES_SINCE = "2025-03-01"


def azure_version_is_modern(version: str) -> bool:
    """True when an Azure api-version accepts stream_options and max_completion_tokens."""
    return azure_version_since(version, AZURE_MODERN_SINCE)


def azure_version_since(version: str, date: str) -> bool:
    """True when an Azure api-version is dated `date` or later, or is not dated (current)."""
    match = _DATED.match(version.strip())
    return match is None or match.group(1) >= date


def azure_api_version(backend: config_pb2.Backend, query: str) -> str:
    """The api-version a classic Azure request is sent with: the backend's schema.version, else the
    client's (the first non-empty api-version in its query), else the documented default."""
    if backend.schema.version:
        return backend.schema.version
    for key, value in parse_qsl(query.lstrip("?"), keep_blank_values=True):
        if key == "api-version" and value.strip():
            return value.strip()
    return AZURE_DEFAULT_API_VERSION


def is_modern(backend: config_pb2.Backend, query: str = "") -> bool:
    """Whether the backend takes OpenAI's current chat parameters (stream_options,
    max_completion_tokens). Only classic Azure api-versions before 2024-09-01 do not; the version
    judged is the one the request is sent with (azure_api_version), `query` being the client's."""
    if backend.schema.name != AZURE_OPENAI:
        return True
    return azure_version_is_modern(azure_api_version(backend, query))


# The most output tokens OpenAI's chat models take (max_completion_tokens; above it OpenAI answers
# 400 "max_tokens is too large"), by model name (dated versions included), first match wins. An
# Anthropic client must send max_tokens and sends its own model's (Claude Code: 32000); capped to
# these, a turn runs where it failed. A name not matched (an Azure deployment named otherwise, an
# OpenAI-compatible server's model) is sent the client's figure.
OPENAI_OUTPUT_TOKEN_LIMITS: tuple[tuple[re.Pattern[str], int], ...] = tuple(
    (re.compile(pattern), limit)
    for pattern, limit in (
        (r"gpt-4o-2024-05-13$", 4096),
        (r"gpt-4o|chatgpt-4o|gpt-4\.5", 16384),
        (r"gpt-4\.1", 32768),
        (r"gpt-4-(?:turbo|\d{4}-preview|vision)|gpt-3\.5-turbo", 4096),
        (r"gpt-4(?:-0613|-0314)?$", 8192),
        (r"gpt-5(?:\.\d+)?-chat", 16384),
        (r"gpt-5", 128000),
        (r"o1-mini", 65536),
        (r"o1-preview", 32768),
        (r"o[134](?:-mini|-pro)?(?:-\d{4}-\d{2}-\d{2})?$", 100000),
    )
)


def openai_output_token_limit(model: str) -> int | None:
    """The most output tokens an OpenAI chat model takes, None when the name is not known."""
    name = model.lower()
    for pattern, limit in OPENAI_OUTPUT_TOKEN_LIMITS:
        if pattern.match(name):
            return limit
    return None


def opaque_user_id(user: str, key: bytes) -> str:
    """An end-user id providers accept: the same client id always gives the same short opaque id
    within one fleet, and no e-mail address or other personal data leaves the gateway. Keyed
    (HMAC-SHA256 with the fleet's secret, RuntimeConfig.user_id_key), so a provider cannot recover
    an address by hashing a dictionary of candidates."""
    return "aigw-" + hmac.new(key, user.encode("utf-8"), hashlib.sha256).hexdigest()[:USER_ID_HEX]
