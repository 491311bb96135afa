"""What a GCPCredentials Secret's service_account.json must be, checked alike where it is compiled
(a warning naming the policy and the Secret, before anything is served) and where it is used (the
translator: its requests get a 503)."""

from __future__ import annotations

import json
from typing import Any

# The fields google-auth needs of a service-account key.
REQUIRED = ("client_email", "token_uri", "private_key")


def service_account_info(text: str) -> dict[str, Any]:
    """The key's fields; ValueError saying what is wrong (never quoting the key)."""
    try:
        info = json.loads(text)
    except ValueError:
        raise ValueError("the service-account key is not JSON") from None
    if not isinstance(info, dict):
        raise ValueError("the service-account key is not a JSON object")
    kind = info.get("type", "service_account")
    if kind != "service_account":
        # Application default credentials take a gcloud user's; federation is the policy's
        # workloadIdentityFederationConfig (an external_account JSON may fetch URLs or run programs).
        raise ValueError(f"credentials JSON of type {str(kind)[:40]} is not taken here (a service_account key is)")
    missing = [k for k in REQUIRED if not info.get(k)]
    if missing:
        raise ValueError(f"the service-account key is not usable: missing {', '.join(missing)}")
    return info
