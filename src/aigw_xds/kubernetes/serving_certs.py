"""The control plane's own certificate authority and serving certificate (pure: no API calls).

In Kubernetes mode the xDS server serves TLS with a certificate issued by a CA of its own, kept in a
Secret of type kubernetes.io/tls (tls.crt, tls.key, ca.crt, and ca.key: the CA's private key, so a
serving certificate can be reissued from the same CA and the sidecars' trust stays valid). This is
what Istio's istiod does for itself, scaled down: no cert-manager needed.

The CA signs serving certificates only. The xDS server never trusts it for client certificates, so
its key, were it read from the Secret, mints no client identity (sidecars prove theirs with
ServiceAccount tokens or SPIFFE certificates of another CA).
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
SERVING_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)  # reissue when less than this is left
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate clocks a little behind ours

TLS_CERT, TLS_KEY, CA_CERT, CA_KEY = "tls.crt", "tls.key", "ca.crt", "ca.key"


class CertificateError(ValueError):
    """A Secret's certificates cannot be used (missing key, unparsable PEM, a key that does not
    match, a serving certificate the CA did not sign). Messages name the key, never its content."""


@dataclass(frozen=True)
class ServingTLS:
    """PEM bytes: the serving certificate and its key, the CA certificate, and (when we manage the
    Secret) the CA's key."""

    cert: bytes
    key: bytes
    ca: bytes
    ca_key: bytes | None = None

    def __repr__(self) -> str:  # never show key material (logs, test failures)
        return f"ServingTLS(cert={len(self.cert)} bytes, ca={len(self.ca)} bytes, keys=<redacted>)"

    def secret_data(self) -> dict[str, str]:
        """The Secret's `data` (base64 values)."""
        data = {TLS_CERT: self.cert, TLS_KEY: self.key, CA_CERT: self.ca}
        if self.ca_key is not None:
            data[CA_KEY] = self.ca_key
        return {k: base64.b64encode(v).decode() for k, v in data.items()}

    @property
    def not_after(self) -> datetime.datetime:
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc

    @property
    def dns_names(self) -> tuple[str, ...]:
        return _dns_names(x509.load_pem_x509_certificate(self.cert))


def service_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names a client may use for the Service: short, with namespace, .svc, and the full name."""
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aigw-xds"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_authority(now: datetime.datetime, dns_names: tuple[str, ...]) -> ServingTLS:
    """A new CA (ECDSA P-256, 10 years) and a serving certificate it signs for `dns_names`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("aigw-xds CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return reissue(_cert_pem(ca), _key_pem(key), now, dns_names)


def reissue(ca_pem: bytes, ca_key_pem: bytes, now: datetime.datetime, dns_names: tuple[str, ...]) -> ServingTLS:
    """A new serving certificate (ECDSA P-256, 1 year, no longer than the CA) signed by the CA."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{CA_KEY} is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns_names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + SERVING_VALIDITY, ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ServingTLS(_cert_pem(cert), _key_pem(key), ca_pem, ca_key_pem)


def from_secret_data(data: dict[str, str] | None) -> ServingTLS:
    """The certificates of a Secret's `data`, checked: every PEM parses, tls.key is the key of
    tls.crt, tls.crt is signed by ca.crt, and ca.key (when present) is the key of ca.crt."""
    raw: dict[str, bytes] = {}
    for key in (TLS_CERT, TLS_KEY, CA_CERT, CA_KEY):
        value = (data or {}).get(key)
        if value is None:
            continue
        try:
            raw[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise CertificateError(f"{key} is not base64") from None
    missing = [k for k in (TLS_CERT, TLS_KEY, CA_CERT) if not raw.get(k)]
    if missing:
        raise CertificateError(f"no {', '.join(missing)}")
    tls = ServingTLS(raw[TLS_CERT], raw[TLS_KEY], raw[CA_CERT], raw.get(CA_KEY))
    cert, ca = _load_cert(tls.cert, TLS_CERT), _load_cert(tls.ca, CA_CERT)
    if not _same_public_key(_load_key(tls.key, TLS_KEY), cert):
        raise CertificateError(f"{TLS_KEY} is not the key of {TLS_CERT}")
    if tls.ca_key is not None and not _same_public_key(_load_key(tls.ca_key, CA_KEY), ca):
        raise CertificateError(f"{CA_KEY} is not the key of {CA_CERT}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(f"{TLS_CERT} is not signed by {CA_CERT}") from None
    return tls


def renewal_reason(tls: ServingTLS, now: datetime.datetime, dns_names: tuple[str, ...]) -> str | None:
    """Why the serving certificate must be reissued (None: it is good): it ends within RENEW_BEFORE,
    or lacks one of `dns_names`."""
    cert = x509.load_pem_x509_certificate(tls.cert)
    left = cert.not_valid_after_utc - now
    if left < RENEW_BEFORE:
        return f"the serving certificate expires in {max(left.days, 0)} days"
    if now < cert.not_valid_before_utc:
        return "the serving certificate is not valid yet"
    missing = sorted(set(dns_names) - set(_dns_names(cert)))
    if missing:
        return f"the serving certificate does not name {', '.join(missing)}"
    return None


def ca_renewal_reason(tls: ServingTLS, now: datetime.datetime) -> str | None:
    """Why a new CA is needed (None: the CA can sign): it ends within RENEW_BEFORE, or its key is not
    in the Secret."""
    if tls.ca_key is None:
        return f"the Secret has no {CA_KEY}"
    left = x509.load_pem_x509_certificate(tls.ca).not_valid_after_utc - now
    if left < RENEW_BEFORE:
        return f"the CA expires in {max(left.days, 0)} days"
    return None


def _dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CertificateError(f"{what} is not a PEM certificate") from None


def _load_key(pem: bytes, what: str) -> object:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"{what} is not an unencrypted PEM private key") from None


def _same_public_key(key: object, cert: x509.Certificate) -> bool:
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(public().public_bytes(*spki) == cert.public_key().public_bytes(*spki))
