"""What is wrong, if anything, with a PEM text a Secret or ConfigMap gives Envoy (pure): a
certificate chain and its private key, a CA bundle, revocation lists. Envoy refuses any it cannot
load, and with it the whole update of its kind (every listener's certificates); compile says which
Secret and field instead."""

from __future__ import annotations

from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization


@lru_cache(maxsize=256)
def key_pair_problem(cert_pem: str, key_pem: str) -> str | None:
    """Why a certificate chain (its first certificate the server's) and private key cannot serve
    TLS, or None."""
    problem = bundle_problem(cert_pem)
    if problem is not None:
        return f"tls.crt: {problem}"
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
def bundle_problem(pem: str) -> str | None:
    """Why a text of PEM certificates does not load as one, or None."""
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return "does not load as PEM certificates (a corrupt or truncated block?)"
    return None


@lru_cache(maxsize=64)
def revocation_lists_problem(pem: str) -> str | None:
    """Why a text of PEM revocation lists does not load, or None."""
    blocks = [block for block in pem.split("-----END X509 CRL-----") if "-----BEGIN X509 CRL-----" in block]
    try:
        for block in blocks:
            x509.load_pem_x509_crl((block.strip() + "\n-----END X509 CRL-----\n").encode())
    except ValueError:
        return "does not load as PEM revocation lists (a corrupt or truncated block?)"
    return None


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
