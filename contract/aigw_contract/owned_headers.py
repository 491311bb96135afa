"""The request headers the gateway owns, computed the same way by the control plane (which strips
them on routes Envoy serves alone) and the translator (which strips them before every attempt)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import CLIENT_AUTH_HEADERS, PROVIDER_SCOPED_HEADERS


def override_headers(backends: Iterable[Any]) -> frozenset[str]:
    """Every request header a credentialOverride.fromRequestHeaders of these backends (the
    translator's aigw.translator.v1.Backend messages) reads."""
    return frozenset(
        b.auth.credential_override.from_request_headers.header.lower()
        for b in backends
        if b.auth.credential_override.from_request_headers.header
    )


def mutated_headers(backends: Iterable[Any]) -> frozenset[str]:
    """Every header name a backend's headerMutation sets (e.g. an API-management subscription key)."""
    return frozenset(hv.name.lower() for b in backends for hv in b.header_mutation.set)


def owned_headers_of(overrides: frozenset[str], mutated: frozenset[str]) -> tuple[str, ...]:
    """The standard credential and provider-scoped headers, and the fleet's override and
    headerMutation.set header names (override_headers, mutated_headers): nothing meant for one
    backend reaches another."""
    return tuple(sorted(frozenset(CLIENT_AUTH_HEADERS) | frozenset(PROVIDER_SCOPED_HEADERS) | overrides | mutated))
