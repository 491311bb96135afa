"""Sealing small secrets (upstream_phase.py's record of the original request headers an attempt changed,
client credentials among them) so they can ride in Envoy dynamic metadata between the retry
attempts of one request without being readable or forgeable by anything but the translator
processes of the fleet, which share the key.

Construction (stdlib only): HMAC-SHA256 in counter mode as the key stream, encrypt-then-MAC with
HMAC-SHA256 truncated to 128 bits, independent subkeys for both, a random 128-bit nonce per token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from aigw.translator.v1 import config_pb2

_NONCE = 16
_TAG = 16


class Sealer:
    def __init__(self, secret: bytes) -> None:
        self._enc = hmac.new(secret, b"aigw-seal-enc", hashlib.sha256).digest()
        self._mac = hmac.new(secret, b"aigw-seal-mac", hashlib.sha256).digest()

    def _stream(self, nonce: bytes, length: int) -> bytes:
        blocks = []
        for counter in range((length + 31) // 32):
            blocks.append(hmac.new(self._enc, nonce + counter.to_bytes(4, "big"), hashlib.sha256).digest())
        return b"".join(blocks)[:length]

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE)
        ct = bytes(a ^ b for a, b in zip(plaintext, self._stream(nonce, len(plaintext)), strict=True))
        tag = hmac.new(self._mac, nonce + ct, hashlib.sha256).digest()[:_TAG]
        return base64.urlsafe_b64encode(nonce + ct + tag).decode()

    def unseal(self, token: str) -> bytes | None:
        """The plaintext, or None for a token that is malformed or was not sealed with this key."""
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except (ValueError, UnicodeEncodeError):
            return None
        if len(raw) < _NONCE + _TAG:
            return None
        nonce, ct, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        expected = hmac.new(self._mac, nonce + ct, hashlib.sha256).digest()[:_TAG]
        if not hmac.compare_digest(tag, expected):
            return None
        return bytes(a ^ b for a, b in zip(ct, self._stream(nonce, len(ct)), strict=True))


def fleet_secret(config: config_pb2.TranslatorConfig) -> bytes:
    """The fleet's secret: its seal_key (compile derives it from the fleet's credentials), else a
    digest of the whole configuration (serialized only then: 2.7 MB at 10,000 routes)."""
    if config.seal_key:
        return config.seal_key
    return hashlib.sha256(b"aigw-translator-config\0" + config.SerializeToString(deterministic=True)).digest()


def user_id_key(secret: bytes) -> bytes:
    """The key of the opaque end-user ids (translators/capabilities.opaque_user_id): a subkey of the
    fleet's secret, so ids are stable for one fleet's credentials and useless without them."""
    return hmac.new(secret, b"aigw-user-id", hashlib.sha256).digest()
