"""Test Google service-account keys (never real ones): the JSON a `gcloud iam service-accounts keys
create` file holds, with a fresh RSA key and the ``token_uri`` of a local fake token endpoint
(``google_auth.GoogleAuthFake``), so google-auth's ``service_account.Credentials`` sends its
JWT-bearer grant there and never to oauth2.googleapis.com.

This module needs ``cryptography`` only (no aiohttp): ``rewrite`` calls it to fill an example's
service-account Secret, and ``annotated`` reads such a key back (``public_key_pem``) to start the
token endpoint it names.
"""

from __future__ import annotations

import secrets
from typing import Any

TEST_PROJECT = "aigw-test-project"
TEST_ACCOUNT = "aigw-test"


def make_service_account_key(
    token_uri: str, *, project_id: str = TEST_PROJECT, account: str = TEST_ACCOUNT
) -> dict[str, Any]:
    """A service-account key JSON (as a dict) with a new 2048-bit RSA key; its client_email is
    ``<account>@<project_id>.iam.gserviceaccount.com`` and its token_uri ``token_uri``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    email = f"{account}@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem.decode(),
        "client_email": email,
        "client_id": str(100000000000000000000 + secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}",
        "universe_domain": "googleapis.com",
    }


def public_key_pem(key: dict[str, Any]) -> bytes:
    """The PEM public key of a service-account key JSON's private key (ValueError if it has none)."""
    from cryptography.hazmat.primitives import serialization

    private = key.get("private_key")
    if not isinstance(private, str):
        raise ValueError("the key has no private_key")
    loaded = serialization.load_pem_private_key(private.encode(), password=None)
    return loaded.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
