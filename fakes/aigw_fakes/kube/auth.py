"""Authentication, authorization and TokenReview of the emulated API server.

* Bearer tokens only: an admin token (the tests: everything allowed) and the controller's token
  (user ``system:serviceaccount:aigw-system:aigw-xds``, what the written kubeconfig carries); any
  other token is 401. Service-account tokens minted by ``issue_token`` are audience-bound to
  their audiences (default ``aigw-xds``), not to the API server, so the API server itself refuses
  them, as a real one refuses a token without its audience.
* Authorization: the controller may do everything except what ``forbid(verb, group, resource)``
  took away (resource may be ``<plural>/status``; verb ``*`` for every verb).
* TokenReview: the user, groups and audiences of a minted token; unknown or revoked tokens, or no
  audience in common with ``spec.audiences`` (default: the API server's own audience), are
  ``authenticated: false`` with an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

CONTROLLER_NAMESPACE = "aigw-system"
CONTROLLER_SERVICE_ACCOUNT = "aigw-xds"
API_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


CONTROLLER_USER = service_account_user(CONTROLLER_NAMESPACE, CONTROLLER_SERVICE_ACCOUNT)
ADMIN_USER = "kubernetes-admin"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    admin: bool = False


@dataclass(frozen=True)
class MintedToken:
    namespace: str
    service_account: str
    audiences: tuple[str, ...]
    uid: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class Auth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.admin_token = "admin-" + secrets.token_urlsafe(24)
        self.controller_token = "controller-" + secrets.token_urlsafe(24)
        self._signing_key = secrets.token_bytes(32)
        self._forbidden: set[tuple[str, str, str]] = set()
        self._minted: dict[str, MintedToken] = {}
        self._revoked: set[str] = set()

    def authenticate(self, authorization: str | None) -> User | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        token = authorization[len("Bearer ") :].strip()
        if secrets.compare_digest(token, self.admin_token):
            return User(ADMIN_USER, ("system:masters", "system:authenticated"), admin=True)
        if secrets.compare_digest(token, self.controller_token):
            return User(
                CONTROLLER_USER,
                ("system:serviceaccounts", f"system:serviceaccounts:{CONTROLLER_NAMESPACE}", "system:authenticated"),
            )
        return None

    # ------------------------------------------------------------------------------------ RBAC

    def forbid(self, verb: str, group: str, resource: str) -> None:
        with self._lock:
            self._forbidden.add((verb, group, resource))

    def allow(self, verb: str, group: str, resource: str) -> None:
        with self._lock:
            self._forbidden.discard((verb, group, resource))

    def allowed(self, user: User, verb: str, group: str, resource: str) -> bool:
        if user.admin:
            return True
        with self._lock:
            return (verb, group, resource) not in self._forbidden and ("*", group, resource) not in self._forbidden

    # ----------------------------------------------------------------------------- TokenReview

    def issue_token(self, namespace: str, service_account: str, audiences: Iterable[str] = ("aigw-xds",)) -> str:
        """A service-account token (JWT-shaped, HMAC-signed by this server) bound to ``audiences``."""
        uid = secrets.token_hex(8)
        claims = {
            "aud": list(audiences),
            "iss": "https://kubernetes.default.svc.cluster.local",
            "iat": int(time.time()),
            "exp": int(time.time()) + 3600,
            "sub": service_account_user(namespace, service_account),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": service_account, "uid": uid}},
        }
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._signing_key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        token = f"{head}.{body}.{sig}"
        with self._lock:
            self._minted[token] = MintedToken(namespace, service_account, tuple(audiences), uid)
        return token

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._revoked.add(token)

    def review(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The ``status`` of a TokenReview with this ``spec``."""
        token = spec.get("token") or ""
        wanted = list(spec.get("audiences") or [API_AUDIENCE])
        with self._lock:
            minted = None if token in self._revoked else self._minted.get(token)
        if minted is None:
            return {"authenticated": False, "user": {}, "error": "[invalid bearer token, token has been invalidated]"}
        common = [a for a in wanted if a in minted.audiences]
        if not common:
            return {
                "authenticated": False,
                "user": {},
                "error": f"[invalid bearer token, token audiences {json.dumps(list(minted.audiences))} "
                f"is invalid for the target audiences {json.dumps(wanted)}]",
            }
        return {
            "authenticated": True,
            "user": {
                "username": service_account_user(minted.namespace, minted.service_account),
                "uid": minted.uid,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{minted.namespace}",
                    "system:authenticated",
                ],
            },
            "audiences": common,
        }
