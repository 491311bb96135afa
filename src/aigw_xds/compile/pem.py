"""The PEM texts a Secret or ConfigMap gives Envoy, checked (pure): a certificate chain and its
private key, a CA bundle, revocation lists. Envoy refuses any it cannot load, and with it the whole
update of its kind (every listener's certificates); compile says which Secret and field instead.
A bundle goes to Envoy as its blocks of its own type alone.

`cryptography` (OpenSSL, 15 MB) is imported when a certificate is first checked: a configuration
without any does not hold it."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=256)
def key_pair_problem(cert_pem: str, key_pem: str) -> str | None:
    """Why a certificate chain (its first certificate the server's) and private key cannot serve
    TLS, or None."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    if certificates_only(cert_pem) is None:
        return "tls.crt does not load as PEM certificates (a corrupt block?)"
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        return "tls.key is encrypted: Envoy takes an unencrypted key"
    except (ValueError, UnsupportedAlgorithm):
        return "tls.key is not a PEM private key that loads"
    leaf = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    if _public(leaf.public_key()) != _public(key.public_key()):
        return "tls.key is not the key of tls.crt's (first) certificate"
    return None


@lru_cache(maxsize=256)
def certificates_only(pem: str) -> str | None:
    """The PEM certificates of a text, as PEM again and nothing else (a private key pasted into a CA
    bundle would reach Envoy, whose config dump shows CAs unredacted); None when one does not load."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates)


_CRL_BLOCK = re.compile(r"-----BEGIN X509 CRL-----.*?-----END X509 CRL-----", re.DOTALL)


def revocation_lists_only(pem: str) -> str | None:
    """The PEM revocation lists of a text, as PEM again and nothing else; None when one does not load."""
    from cryptography.hazmat.primitives import serialization

    lists = _revocation_lists(pem)
    if lists is None:
        return None
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in lists) or None


def expired_revocation_lists(pem: str, now: datetime) -> list[str]:
    """Of the revocation lists of a text, those whose nextUpdate is past at `now`: each as its
    issuer and when it expired. (Envoy refuses every client certificate checked against one.)"""
    return [
        f"{c.issuer.rfc4514_string()}'s, expired {c.next_update_utc:%Y-%m-%d %H:%M} UTC"
        for c in _revocation_lists(pem) or ()
        if c.next_update_utc is not None and c.next_update_utc <= now
    ]


@lru_cache(maxsize=64)
def _revocation_lists(pem: str) -> tuple[Any, ...] | None:
    """The revocation lists of a text's PEM blocks, loaded (cryptography's); None when one does not."""
    from cryptography import x509

    try:
        return tuple(x509.load_pem_x509_crl(block.encode()) for block in _CRL_BLOCK.findall(pem))
    except ValueError:
        return None


def _public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    spki: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki
