"""Sealing client session ids (sessions.py): pure functions, real AES-GCM."""

from __future__ import annotations

from aigw_translator.mcp.sessions import BackendSession, seal, unseal

SECRET = b"fleet-secret"
SESSIONS = [
    BackendSession("alpha", "a-session", "2025-06-18", frozenset({"tools", "prompts"})),
    BackendSession("beta", "", "2025-03-26", frozenset()),
]


def test_a_sealed_session_opens_on_its_route() -> None:
    token = seal(SECRET, "ns/gw", "ns/route", SESSIONS)
    assert token.isascii() and token.isprintable() and " " not in token
    assert unseal(SECRET, "ns/gw", "ns/route", token) == SESSIONS


def test_the_backend_session_ids_are_not_readable() -> None:
    token = seal(SECRET, "ns/gw", "ns/route", SESSIONS)
    assert "a-session" not in token and "alpha" not in token


def test_sealing_twice_gives_different_ids() -> None:
    assert seal(SECRET, "ns/gw", "ns/route", SESSIONS) != seal(SECRET, "ns/gw", "ns/route", SESSIONS)


def test_another_route_fleet_or_key_refuses_it() -> None:
    token = seal(SECRET, "ns/gw", "ns/route", SESSIONS)
    assert unseal(SECRET, "ns/gw", "ns/other", token) is None
    assert unseal(SECRET, "ns/other-gw", "ns/route", token) is None
    assert unseal(b"another-secret", "ns/gw", "ns/route", token) is None


def test_forged_or_altered_ids_are_refused() -> None:
    token = seal(SECRET, "ns/gw", "ns/route", SESSIONS)
    altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (altered, "", "not base64 !", "AAAA", token[:20]):
        assert unseal(SECRET, "ns/gw", "ns/route", bad) is None


def test_a_session_whose_backends_a_selector_chose_opens_under_that_selector_only() -> None:
    """A route's backendSelector changed (or added, or taken out): its sessions end, and their
    clients initialize again, their backends chosen anew."""
    token = seal(SECRET, "ns/gw", "ns/route", SESSIONS, "p", b"selector-1")
    assert unseal(SECRET, "ns/gw", "ns/route", token, "p", b"selector-1") == SESSIONS
    assert unseal(SECRET, "ns/gw", "ns/route", token, "p", b"selector-2") is None
    assert unseal(SECRET, "ns/gw", "ns/route", token, "p") is None
    unselected = seal(SECRET, "ns/gw", "ns/route", SESSIONS, "p")
    assert unseal(SECRET, "ns/gw", "ns/route", unselected, "p", b"selector-1") is None
    assert unseal(SECRET, "ns/gw", "ns/route", unselected, "p") == SESSIONS
