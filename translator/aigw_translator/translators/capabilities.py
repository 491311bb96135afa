"""What a backend accepts, where it depends on the backend's schema and version, and the opaque
end-user id forwarded to providers.

Azure OpenAI's dated api-versions: `stream_options` (and `max_completion_tokens`, which came with
the o1 models) are accepted from 2024-09-01-preview on, i.e. every preview dated 2024-09-01 or later
and GA 2024-10-21 or later; 2024-06-01 (GA), 2024-05-01-preview and older reject them as an
unrecognized request argument. Non-dated values ("preview", "latest", the v1 API) are current.
"""

from __future__ import annotations

import hashlib
import re

from aigw.translator.v1 import config_pb2

AZURE_OPENAI = "AzureOpenAI"

# First Azure api-version date that accepts stream_options and max_completion_tokens.
AZURE_MODERN_SINCE = "2024-09-01"

_DATED = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:-preview)?$")

# Length of the opaque user id (hex digits of a SHA-256) sent as `user` / `metadata.user_id`.
USER_ID_HEX = 32


def azure_version_is_modern(version: str) -> bool:
    """True when an Azure api-version accepts stream_options and max_completion_tokens."""
    match = _DATED.match(version.strip())
    if match is None:
        return True
    return match.group(1) >= AZURE_MODERN_SINCE


def is_modern(backend: config_pb2.Backend) -> bool:
    """Whether the backend takes OpenAI's current chat parameters (stream_options,
    max_completion_tokens). Only classic Azure api-versions before 2024-09-01 do not."""
    if backend.schema.name != AZURE_OPENAI:
        return True
    return azure_version_is_modern(backend.schema.version)


def opaque_user_id(user: str) -> str:
    """An end-user id providers accept: the same client id always gives the same short opaque id,
    and no e-mail address or other personal data leaves the gateway."""
    return "aigw-" + hashlib.sha256(user.encode("utf-8")).hexdigest()[:USER_ID_HEX]
