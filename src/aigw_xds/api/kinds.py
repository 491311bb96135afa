"""Models of every resource kind aigw-xds reads.

Envoy AI Gateway kinds (aigateway.envoyproxy.io) are modelled in full and strictly: an unknown field
is an error. Gateway API, Envoy Gateway and core kinds are modelled for the fields aigw-xds uses;
other fields are accepted and ignored, as the same files also feed Envoy Gateway.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

import aigw_contract as contract

from ..keys import DNS_1035_LABEL, DNS_SUBDOMAIN
from .base import (
    GATEWAY_API_GROUP,
    Lenient,
    LocalObjectReference,
    ObjectMeta,
    ParentReference,
    Strict,
    require_name,
)
from .base import (
    SecretObjectReference as SecretObjectReference,  # re-exported: compile names the field type as kinds.*
)

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def parse_duration(text: str) -> float:
    """Seconds in a Gateway API duration such as "60s", "1m30s" or "500ms"."""
    m = _DURATION.match(text.strip())
    if not text.strip() or not m or not any(m.groups()):
        raise ValueError(f"invalid duration {text!r} (expected e.g. 60s, 1m30s, 500ms)")
    h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi|k|M|G)?$")
_QUANTITY_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def parse_quantity(text: str | int) -> int:
    """Bytes in a Kubernetes quantity such as "50Mi" or "32768"."""
    if isinstance(text, int):
        return text
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(f"invalid quantity {text!r} (expected e.g. 50Mi, 1Gi, 32768)")
    return int(m.group(1)) * _QUANTITY_FACTORS[m.group(2)]


Duration = Annotated[str, Field(description="Gateway API duration, e.g. 60s")]


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


# --------------------------------------------------------------------------------------------
# Gateway API (gateway.networking.k8s.io)


class GatewayClassSpec(Lenient):
    controllerName: str
    description: str | None = None


class GatewayClass(Lenient):
    apiVersion: str
    kind: Literal["GatewayClass"]
    metadata: ObjectMeta
    spec: GatewayClassSpec


class GatewayTLSConfig(Lenient):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificateRefs: list[SecretObjectReference] = Field(default_factory=list)


class RouteNamespaces(Lenient):
    from_: Literal["Same", "All", "Selector"] = Field(default="Same", alias="from")


class RouteGroupKind(Lenient):
    group: str = GATEWAY_API_GROUP
    kind: str


class AllowedRoutes(Lenient):
    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = Field(default_factory=list)  # none: the kinds the listener supports


class GatewayListener(Lenient):
    name: str = Field(min_length=1)
    protocol: Literal["HTTP", "HTTPS", "TLS", "TCP", "UDP"]
    port: int = Field(ge=1, le=65535)
    hostname: str | None = None
    tls: GatewayTLSConfig | None = None
    allowedRoutes: AllowedRoutes = Field(default_factory=AllowedRoutes)

    _v_name = field_validator("name")(lambda name: require_name(name, DNS_SUBDOMAIN, "Gateway API listener name"))

    @model_validator(mode="after")
    def _https_needs_certificates(self) -> GatewayListener:
        if self.protocol == "HTTPS" and (self.tls is None or not self.tls.certificateRefs):
            raise ValueError("an HTTPS listener needs tls.certificateRefs")
        return self


class GatewayAddress(Lenient):
    type: str = "IPAddress"
    value: str


class GatewaySpec(Lenient):
    gatewayClassName: str
    listeners: list[GatewayListener] = Field(min_length=1, max_length=64)
    addresses: list[GatewayAddress] = Field(default_factory=list)

    @field_validator("listeners")
    @classmethod
    def _unique_listener_names(cls, listeners: list[GatewayListener]) -> list[GatewayListener]:
        seen: set[str] = set()
        for listener in listeners:
            if listener.name in seen:
                raise ValueError(f"listener name {listener.name!r} is used twice")
            seen.add(listener.name)
        return listeners


class Gateway(Lenient):
    apiVersion: str
    kind: Literal["Gateway"]
    metadata: ObjectMeta
    spec: GatewaySpec


class ReferenceGrantFrom(Lenient):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(Lenient):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Lenient):
    from_: list[ReferenceGrantFrom] = Field(alias="from", min_length=1)
    to: list[ReferenceGrantTo] = Field(min_length=1)


class ReferenceGrant(Lenient):
    apiVersion: str
    kind: Literal["ReferenceGrant"]
    metadata: ObjectMeta
    spec: ReferenceGrantSpec


class BackendTLSValidation(Lenient):
    hostname: str
    wellKnownCACertificates: Literal["System"] | None = None
    caCertificateRefs: list[LocalObjectReference] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_trust_source(self) -> BackendTLSValidation:
        if self.wellKnownCACertificates is None and not self.caCertificateRefs:
            raise ValueError("set wellKnownCACertificates or caCertificateRefs")
        return self


class BackendTLSPolicySpec(Lenient):
    targetRefs: list[LocalObjectReference] = Field(min_length=1)
    validation: BackendTLSValidation


class BackendTLSPolicy(Lenient):
    apiVersion: str
    kind: Literal["BackendTLSPolicy"]
    metadata: ObjectMeta
    spec: BackendTLSPolicySpec


# --------------------------------------------------------------------------------------------
# Envoy Gateway (gateway.envoyproxy.io)


class FQDNEndpoint(Lenient):
    hostname: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class IPEndpoint(Lenient):
    address: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class UnixEndpoint(Lenient):
    path: str = Field(min_length=1)


class BackendEndpoint(Lenient):
    fqdn: FQDNEndpoint | None = None
    ip: IPEndpoint | None = None
    unix: UnixEndpoint | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BackendEndpoint:
        if sum(x is not None for x in (self.fqdn, self.ip, self.unix)) != 1:
            raise ValueError("an endpoint sets exactly one of fqdn, ip, unix")
        return self


class BackendSpec(Lenient):
    endpoints: list[BackendEndpoint] = Field(min_length=1, max_length=64)


class Backend(Lenient):
    apiVersion: str
    kind: Literal["Backend"]
    metadata: ObjectMeta
    spec: BackendSpec


# ClientTrafficPolicy (gateway.envoyproxy.io/v1alpha1): the fields aigw-xds implements are typed;
# Envoy Gateway's others are kept (model_extra) for compile to say each is not supported yet.


class ConnectionLimit(Lenient):
    model_config = ConfigDict(extra="allow")

    value: int | None = Field(default=None, ge=1)
    closeDelay: Duration | None = None
    maxConnectionDuration: Duration | None = None
    maxRequestsPerConnection: int | None = Field(default=None, ge=0, le=2**32 - 1)
    maxStreamDuration: Duration | None = None

    _v_durations = field_validator("closeDelay", "maxConnectionDuration", "maxStreamDuration")(_check_duration)

    @model_validator(mode="after")
    def _delay_of_a_limit(self) -> ConnectionLimit:
        if self.closeDelay is not None and self.value is None:
            raise ValueError("closeDelay can only be set with value (the limit whose excess connections it delays)")
        return self


class ClientConnection(Lenient):
    model_config = ConfigDict(extra="allow")

    bufferLimit: str | int | None = None
    connectionLimit: ConnectionLimit | None = None
    maxAcceptPerSocketEvent: int | None = Field(default=None, ge=0, le=2**32 - 1)

    @field_validator("bufferLimit")
    @classmethod
    def _quantity(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_quantity(value)
        return value


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR {value!r} (expected e.g. 192.168.0.0/24 or 2001:db8::/64)") from None
    return value


# An IP network (its host bits may be set, as Envoy Gateway takes it).
CIDR = Annotated[str, AfterValidator(_cidr), Field(min_length=1, max_length=256)]


class XForwardedForSettings(Lenient):
    model_config = ConfigDict(extra="allow")

    numTrustedHops: int | None = Field(default=None, ge=0, le=64)
    trustedCIDRs: list[CIDR] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_way(self) -> XForwardedForSettings:
        if self.numTrustedHops is not None and self.trustedCIDRs is not None:
            raise ValueError("set numTrustedHops or trustedCIDRs, not both")
        return self


class CustomHeaderExtensionSettings(Lenient):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=256)
    failClosed: bool = False


class ClientIPDetection(Lenient):
    model_config = ConfigDict(extra="allow")

    xForwardedFor: XForwardedForSettings | None = None
    customHeader: CustomHeaderExtensionSettings | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ClientIPDetection:
        if self.xForwardedFor is not None and self.customHeader is not None:
            raise ValueError("set xForwardedFor or customHeader, not both")
        return self


def _duration_or_zero(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


class HTTPClientTimeout(Lenient):
    model_config = ConfigDict(extra="allow")

    requestReceivedTimeout: Duration | None = None
    requestHeadersReceivedTimeout: Duration | None = None
    idleTimeout: Duration | None = None
    streamIdleTimeout: Duration | None = None

    _v_durations = field_validator(
        "requestReceivedTimeout", "requestHeadersReceivedTimeout", "idleTimeout", "streamIdleTimeout"
    )(_duration_or_zero)


class ClientTimeout(Lenient):
    model_config = ConfigDict(extra="allow")

    http: HTTPClientTimeout | None = None


class EarlyRequestHeaders(Lenient):
    """Envoy Gateway's HTTPHeaderFilter: header changes made as a request arrives, before any
    filter or route reads it."""

    model_config = ConfigDict(extra="allow")

    set: list[HTTPHeader] = Field(default_factory=list, max_length=64)
    add: list[HTTPHeader] = Field(default_factory=list, max_length=64)
    addIfAbsent: list[HTTPHeader] = Field(default_factory=list, max_length=64)
    remove: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _header_names(self) -> EarlyRequestHeaders:
        for header in (*self.set, *self.add, *self.addIfAbsent):
            if not _HEADER_NAME.fullmatch(header.name):
                raise ValueError(f"{header.name!r} is not a header name Envoy changes (no ':', '/' or spaces)")
            if any(c in header.value for c in "\r\n\0"):
                raise ValueError(f"the value of {header.name} holds a line break or NUL: Envoy refuses it")
        return self


# The names Envoy's header mutation takes (not pseudo-headers such as :path).
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
XFCCMode = Literal["Sanitize", "ForwardOnly", "AppendForward", "SanitizeSet", "AlwaysForwardOnly"]


class XForwardedClientCert(Lenient):
    model_config = ConfigDict(extra="allow")

    mode: XFCCMode | None = None
    certDetailsToAdd: list[Literal["Subject", "Cert", "Chain", "DNS", "URI"]] = Field(
        default_factory=list, max_length=5
    )

    @model_validator(mode="after")
    def _details_where_set(self) -> XForwardedClientCert:
        if self.certDetailsToAdd and self.mode not in ("AppendForward", "SanitizeSet"):
            raise ValueError("certDetailsToAdd is only for mode AppendForward or SanitizeSet")
        return self


class HeaderSettings(Lenient):
    model_config = ConfigDict(extra="allow")

    enableEnvoyHeaders: bool | None = None
    withUnderscoresAction: Literal["Allow", "RejectRequest", "DropHeader"] | None = None
    requestID: Literal["PreserveOrGenerate", "Preserve", "Generate", "Disable"] | None = None
    preserveXRequestID: bool | None = None  # Envoy Gateway's older switch: true is PreserveOrGenerate
    earlyRequestHeaders: EarlyRequestHeaders | None = None
    xForwardedClientCert: XForwardedClientCert | None = None

    @model_validator(mode="after")
    def _one_request_id(self) -> HeaderSettings:
        if self.requestID is not None and self.preserveXRequestID is not None:
            raise ValueError("set requestID or preserveXRequestID (its older form), not both")
        return self


class HTTP10Settings(Lenient):
    model_config = ConfigDict(extra="allow")

    useDefaultHost: bool | None = None


class HTTP1Settings(Lenient):
    model_config = ConfigDict(extra="allow")

    enableTrailers: bool | None = None
    preserveHeaderCase: bool | None = None
    http10: HTTP10Settings | None = None


class TCPKeepalive(Lenient):
    model_config = ConfigDict(extra="allow")

    probes: int | None = Field(default=None, ge=1, le=2**31 - 1)
    idleTime: Duration | None = None
    interval: Duration | None = None

    @field_validator("idleTime", "interval")
    @classmethod
    def _whole_seconds(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < 1:
            raise ValueError(f"{value} is under a second: the kernel counts keepalive times in whole seconds")
        return value


class ProxyProtocolSettings(Lenient):
    model_config = ConfigDict(extra="allow")

    optional: bool | None = None  # connections without the PROXY header taken too


class HealthCheckSettings(Lenient):
    model_config = ConfigDict(extra="allow")

    path: str = Field(min_length=1, max_length=1024)

    @field_validator("path")
    @classmethod
    def _a_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not a path (a path begins with /): no request would ask for it")
        return value


TLSVersion = Literal["Auto", "1.0", "1.1", "1.2", "1.3"]
# Envoy Gateway's order of the versions: Auto is the lowest minimum and the highest maximum.
_MIN_ORDER = {"Auto": 0, "1.0": 1, "1.1": 2, "1.2": 3, "1.3": 4}
_MAX_ORDER = {"1.0": 1, "1.1": 2, "1.2": 3, "1.3": 4, "Auto": 5}


class CACertificateRef(Lenient):
    """A Secret's or ConfigMap's CA bundle (its `ca.crt`, else its only key)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    namespace: str | None = None
    group: Literal[""] = ""
    kind: Literal["Secret", "ConfigMap"] = "Secret"


ClientValidationMode = Literal["Request", "RequireAny", "VerifyIfGiven", "RequireAndVerify"]


class StringMatch(Lenient):
    """Envoy Gateway's StringMatch: a value's match, exact unless said."""

    model_config = ConfigDict(extra="allow")

    type: Literal["Exact", "Prefix", "Suffix", "RegularExpression"] = "Exact"
    value: str = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _regex_compiles(self) -> StringMatch:
        if self.type == "RegularExpression":
            require_envoy_regex(self.value)
        return self


class OtherSANMatch(StringMatch):
    oid: str = Field(pattern=r"^[0-9]+(\.[0-9]+)+$")


class SubjectAltNames(Lenient):
    model_config = ConfigDict(extra="allow")
    dnsNames: list[StringMatch] = Field(default_factory=list)
    emailAddresses: list[StringMatch] = Field(default_factory=list)
    ipAddresses: list[StringMatch] = Field(default_factory=list)
    uris: list[StringMatch] = Field(default_factory=list)
    otherNames: list[OtherSANMatch] = Field(default_factory=list)


class CrlContext(Lenient):
    """Certificate revocation lists (each Secret's or ConfigMap's `ca.crl`, else its only key)."""

    model_config = ConfigDict(extra="allow")

    refs: list[CACertificateRef] = Field(min_length=1, max_length=8)
    onlyVerifyLeafCertificate: bool | None = None


class ClientValidation(Lenient):
    model_config = ConfigDict(extra="allow")

    optional: bool | None = None  # Envoy Gateway's older switch: true is VerifyIfGiven
    mode: ClientValidationMode | None = None
    caCertificateRefs: list[CACertificateRef] = Field(default_factory=list, max_length=8)
    # SHA-256 of a certificate's SubjectPublicKeyInfo (base64) or of the certificate (hex): a client
    # certificate must have one of them; and a SAN one of these matches.
    spkiHashes: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{43}=$")]] = Field(default_factory=list)
    certificateHashes: list[
        Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){31})$")]
    ] = Field(default_factory=list)
    subjectAltNames: SubjectAltNames | None = None
    crl: CrlContext | None = None
    allowExpiredCertificate: bool | None = None

    @property
    def effective_mode(self) -> ClientValidationMode:
        return self.mode or ("VerifyIfGiven" if self.optional else "RequireAndVerify")

    @model_validator(mode="after")
    def _verified_against_a_ca(self) -> ClientValidation:
        mode = self.effective_mode
        if mode in ("VerifyIfGiven", "RequireAndVerify") and not self.caCertificateRefs:
            raise ValueError(f"mode {mode} verifies client certificates: caCertificateRefs names the CAs to trust")
        if not self.caCertificateRefs:  # (Request, RequireAny)
            # Envoy asks clients for a certificate only with CAs to check it against: without them it
            # would take every client (Envoy Gateway renders it so, and requires nothing).
            raise ValueError(f"mode {mode}: Envoy asks for client certificates only given caCertificateRefs")
        checks = [name for name in ("spkiHashes", "certificateHashes", "crl") if getattr(self, name)]
        checks += ["subjectAltNames"] if self.subjectAltNames else []
        checks += ["allowExpiredCertificate"] if self.allowExpiredCertificate else []
        if checks and mode in ("Request", "RequireAny"):
            # Envoy takes any certificate in these modes: a check there would not be made.
            raise ValueError(f"{', '.join(checks)}: mode {mode} takes any certificate, checking none of them")
        return self


class TLSResumption(Lenient):
    model_config = ConfigDict(extra="allow")

    stateless: dict[str, Any] | None = None
    stateful: dict[str, Any] | None = None


class TLSSession(Lenient):
    model_config = ConfigDict(extra="allow")

    resumption: TLSResumption | None = None


# The names Envoy 1.40 takes (its BoringSSL's; checked one by one with `envoy --mode validate`): a
# name it does not take makes it refuse the listener, or the secret its TLS waits for (an HTTPS
# listener then resets every connection). Cipher suites: those Envoy Gateway takes (OpenSSL's and
# IANA's names), alone or in an equal-preference group ([A|B]).
TLS_CIPHERS = frozenset(
    {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-AES128-SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "ECDHE-RSA-AES128-SHA",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        "AES128-GCM-SHA256",
        "TLS_RSA_WITH_AES_128_GCM_SHA256",
        "AES128-SHA",
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        "ECDHE-ECDSA-AES256-SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        "ECDHE-RSA-AES256-SHA",
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        "AES256-GCM-SHA384",
        "TLS_RSA_WITH_AES_256_GCM_SHA384",
        "AES256-SHA",
        "TLS_RSA_WITH_AES_256_CBC_SHA",
    }
)
TLS_CURVES = frozenset(
    {
        "X25519",
        "x25519",
        "P-256",
        "prime256v1",
        "P-384",
        "secp384r1",
        "P-521",
        "secp521r1",
        "X25519MLKEM768",
        "MLKEM1024",
    }
)
TLS_SIGNATURE_ALGORITHMS = frozenset(
    {
        "rsa_pkcs1_sha1",
        "rsa_pkcs1_sha256",
        "rsa_pkcs1_sha384",
        "rsa_pkcs1_sha512",
        "rsa_pkcs1_sha256_legacy",
        "ecdsa_sha1",
        "ecdsa_secp256r1_sha256",
        "ecdsa_secp384r1_sha384",
        "ecdsa_secp521r1_sha512",
        "rsa_pss_rsae_sha256",
        "rsa_pss_rsae_sha384",
        "rsa_pss_rsae_sha512",
        "ed25519",
        "mldsa44",
        "mldsa65",
        "mldsa87",
    }
)
# OpenSSL's other way of writing one: a key type and a hash (RSA+SHA256, ECDSA+SHA384, RSA-PSS+SHA256;
# PSS has no SHA-1).
_SIGNATURE_PAIR = re.compile(r"(RSA|ECDSA)\+SHA(1|256|384|512)|(RSA-PSS|PSS)\+SHA(256|384|512)")


class ClientTLSSettings(Lenient):
    model_config = ConfigDict(extra="allow")

    minVersion: TLSVersion | None = None
    maxVersion: TLSVersion | None = None
    ciphers: list[Annotated[str, Field(min_length=1)]] | None = None
    ecdhCurves: list[Annotated[str, Field(min_length=1)]] | None = None
    signatureAlgorithms: list[Annotated[str, Field(min_length=1)]] | None = None
    alpnProtocols: list[Literal["http/1.0", "http/1.1", "h2"]] | None = None
    clientValidation: ClientValidation | None = None
    session: TLSSession | None = None

    @field_validator("ciphers")
    @classmethod
    def _ciphers(cls, ciphers: list[str] | None) -> list[str] | None:
        for cipher in ciphers or ():
            if any(member not in TLS_CIPHERS for member in cipher.strip("[]").split("|")):
                raise ValueError(
                    f"{cipher} is not a cipher suite Envoy Gateway takes (e.g. ECDHE-RSA-AES128-GCM-SHA256)"
                )
        return ciphers

    @field_validator("ecdhCurves")
    @classmethod
    def _curves(cls, curves: list[str] | None) -> list[str] | None:
        for curve in curves or ():
            if curve not in TLS_CURVES:
                raise ValueError(f"{curve} is not a curve Envoy takes ({', '.join(sorted(TLS_CURVES))})")
        return curves

    @field_validator("signatureAlgorithms")
    @classmethod
    def _signature_algorithms(cls, algorithms: list[str] | None) -> list[str] | None:
        for algorithm in algorithms or ():
            if algorithm not in TLS_SIGNATURE_ALGORITHMS and not _SIGNATURE_PAIR.fullmatch(algorithm):
                raise ValueError(f"{algorithm} is not a signature algorithm Envoy takes (e.g. ecdsa_secp256r1_sha256)")
        return algorithms

    @model_validator(mode="after")
    def _versions(self) -> ClientTLSSettings:
        if self.minVersion == "1.3" and self.ciphers is not None:
            raise ValueError("ciphers have no effect when minVersion is 1.3 (TLS 1.3's suites are fixed)")
        low = _MIN_ORDER[self.minVersion or "1.2"]
        if self.maxVersion is not None and _MAX_ORDER[self.maxVersion] < low:
            lowest = self.minVersion or "1.2 (the default minVersion)"
            raise ValueError(f"maxVersion {self.maxVersion} is below minVersion {lowest}")
        return self


EscapedSlashesAction = Literal["KeepUnchanged", "RejectRequest", "UnescapeAndRedirect", "UnescapeAndForward"]


class PathSettings(Lenient):
    model_config = ConfigDict(extra="allow")

    escapedSlashesAction: EscapedSlashesAction | None = None
    disableMergeSlashes: bool | None = None


# The HTTP/2 flow-control windows Envoy takes (its http2_protocol_options' bounds).
_HTTP2_WINDOW = (65535, 2**31 - 1)


class HTTP2Settings(Lenient):
    model_config = ConfigDict(extra="allow")

    initialStreamWindowSize: str | int | None = None
    initialConnectionWindowSize: str | int | None = None
    maxConcurrentStreams: int | None = Field(default=None, ge=1, le=2**31 - 1)
    onInvalidMessage: Literal["TerminateConnection", "TerminateStream"] | None = None

    @field_validator("initialStreamWindowSize", "initialConnectionWindowSize")
    @classmethod
    def _window(cls, value: str | int | None) -> str | int | None:
        if value is not None and not _HTTP2_WINDOW[0] <= parse_quantity(value) <= _HTTP2_WINDOW[1]:
            raise ValueError(f"{value} is not a window Envoy takes: 64Ki - 1 (65535) to 2Gi - 1 bytes")
        return value


class GatewaySelector(Strict):
    """Envoy Gateway's TargetSelector, for Gateways: those of the policy's namespace whose labels
    hold every matchLabels pair (none: every Gateway there, as a Kubernetes label selector)."""

    group: str = GATEWAY_API_GROUP
    kind: str
    matchLabels: dict[str, str] = Field(default_factory=dict)

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.matchLabels.items())


class GatewayPolicySpec(Lenient):
    """The targets of an Envoy Gateway policy that takes Gateways (ClientTrafficPolicy,
    SecurityPolicy): targetRefs, v1alpha1's single targetRef, and targetSelectors by labels."""

    model_config = ConfigDict(extra="allow")

    targetRefs: list[PolicyTargetReference] = Field(default_factory=list)
    targetRef: PolicyTargetReference | None = None
    targetSelectors: list[GatewaySelector] = Field(default_factory=list)

    @property
    def targets(self) -> list[tuple[str, PolicyTargetReference]]:
        """(field path, reference) of every target, whichever form names it."""
        named = [(f"spec.targetRefs[{i}]", ref) for i, ref in enumerate(self.targetRefs)]
        return named + ([("spec.targetRef", self.targetRef)] if self.targetRef is not None else [])


class ClientTrafficPolicySpec(GatewayPolicySpec):
    connection: ClientConnection | None = None
    clientIPDetection: ClientIPDetection | None = None
    timeout: ClientTimeout | None = None
    headers: HeaderSettings | None = None
    path: PathSettings | None = None
    http1: HTTP1Settings | None = None
    http2: HTTP2Settings | None = None
    tls: ClientTLSSettings | None = None
    tcpKeepalive: TCPKeepalive | None = None
    enableProxyProtocol: bool | None = None  # (Envoy Gateway's older name: proxyProtocol {} wins)
    proxyProtocol: ProxyProtocolSettings | None = None
    healthCheck: HealthCheckSettings | None = None

    @model_validator(mode="after")
    def _gateways_only(self) -> ClientTrafficPolicySpec:
        # (A kind aigw-xds does not read, `Gatway`, would leave the policy applying to nothing.)
        if not self.targets and not self.targetSelectors:
            raise ValueError("targetRefs names the Gateway (or its listener: sectionName) the policy is for")
        named = [(path, ref.group, ref.kind) for path, ref in self.targets]
        named += [(f"spec.targetSelectors[{i}]", s.group, s.kind) for i, s in enumerate(self.targetSelectors)]
        for path, group, kind in named:
            if (group, kind) != (GATEWAY_API_GROUP, "Gateway"):
                raise ValueError(
                    f"{path.removeprefix('spec.')} names a {kind} of group {group!r}: a ClientTrafficPolicy "
                    f"targets a Gateway (group {GATEWAY_API_GROUP})"
                )
        return self


class ClientTrafficPolicy(Lenient):
    apiVersion: str
    kind: Literal["ClientTrafficPolicy"]
    metadata: ObjectMeta
    spec: ClientTrafficPolicySpec


# SecurityPolicy (gateway.envoyproxy.io/v1alpha1): read for its targets alone. Who may use what it
# targets (API keys, JWTs, external authorization...) is not enforced yet, and what it targets is not
# served without it (compile/security_policies.py); its other fields are kept as written.


class SecurityPolicySpec(GatewayPolicySpec):
    """Its targets, and what aigw-xds enforces of it (jwt, cors, apiKeyAuth, basicAuth, authorization);
    Envoy Gateway's other fields kept as written (model_extra), which compile/security_policies.py
    refuses, as any unknown one."""

    jwt: JWT | None = None
    cors: CORS | None = None
    apiKeyAuth: APIKeyAuth | None = None
    authorization: Authorization | None = None
    basicAuth: BasicAuth | None = None


class SecurityPolicy(Lenient):
    apiVersion: str
    kind: Literal["SecurityPolicy"]
    metadata: ObjectMeta
    spec: SecurityPolicySpec


# BackendTrafficPolicy (gateway.envoyproxy.io/v1alpha1): the fields aigw-xds implements are typed
# and strict; Envoy Gateway's other fields are accepted as written and reported by compile
# (traffic.py) as not supported, so none is ignored silently; a field Envoy Gateway does not have
# (a typo) is an error.

RetryTrigger = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]


def _positive_duration(value: str | None) -> str | None:
    if value is not None and parse_duration(value) <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return value


class PolicyTargetReference(Strict):
    """Gateway API LocalPolicyTargetReferenceWithSectionName."""

    group: str = ""
    kind: str
    name: str = Field(min_length=1)
    sectionName: str | None = None


class RetryOn(Strict):
    triggers: list[RetryTrigger] = Field(default_factory=list)
    httpStatusCodes: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=list)


class BackOffPolicy(Strict):
    baseInterval: str | None = None
    maxInterval: str | None = None

    _v_intervals = field_validator("baseInterval", "maxInterval")(_positive_duration)

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BackOffPolicy:
        if (
            self.baseInterval
            and self.maxInterval
            and parse_duration(self.maxInterval) < parse_duration(self.baseInterval)
        ):
            raise ValueError("maxInterval must not be shorter than baseInterval")
        return self


class PerRetryPolicy(Strict):
    timeout: str | None = None
    backOff: BackOffPolicy | None = None

    _v_timeout = field_validator("timeout")(_positive_duration)


class Retry(Strict):
    numRetries: int | None = Field(default=None, ge=0)
    numAttemptsPerPriority: int | None = Field(default=None, ge=0)
    retryOn: RetryOn | None = None
    perRetry: PerRetryPolicy | None = None


class TCPTimeout(Strict):
    connectTimeout: str | None = None

    _v_connect = field_validator("connectTimeout")(_positive_duration)


class HTTPTimeout(Strict):
    # "0s" disables requestTimeout (no cap on the whole response), as in Envoy and Gateway API.
    requestTimeout: str | None = None
    connectionIdleTimeout: str | None = None
    maxConnectionDuration: str | None = None
    maxStreamDuration: str | None = None

    _v_request = field_validator("requestTimeout")(_check_duration)
    _v_others = field_validator("connectionIdleTimeout", "maxConnectionDuration", "maxStreamDuration")(
        _positive_duration
    )


class Timeout(Strict):
    tcp: TCPTimeout | None = None
    http: HTTPTimeout | None = None


class CircuitBreaker(Strict):
    maxConnections: int | None = Field(default=None, ge=1)
    maxPendingRequests: int | None = Field(default=None, ge=1)
    maxParallelRequests: int | None = Field(default=None, ge=1)
    maxParallelRetries: int | None = Field(default=None, ge=1)
    maxRequestsPerConnection: int | None = Field(default=None, ge=1)
    perEndpoint: dict[str, Any] | None = None  # not supported yet: reported by compile


# loadBalancer and healthCheck (Envoy Gateway's LoadBalancer and HealthCheck): built into each
# rule's cluster (xds/build.py); the fields Envoy Gateway has that are not built are kept (Any) and
# reported as not supported by compile (traffic.unsupported_parts).


class SlowStart(Strict):
    window: str

    _v_window = field_validator("window")(_positive_duration)


class HashHeader(Strict):
    name: str = Field(min_length=1, max_length=256)


class HashCookie(Strict):
    name: str = Field(min_length=1)
    ttl: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)

    _v_ttl = field_validator("ttl")(_check_duration)


class HashQueryParam(Strict):
    name: str = Field(min_length=1)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


class ConsistentHash(Strict):
    type: Literal["SourceIP", "Header", "Headers", "Cookie", "QueryParams"]
    header: HashHeader | None = None  # deprecated in Envoy Gateway for headers, still read
    headers: list[HashHeader] = Field(default_factory=list)
    cookie: HashCookie | None = None
    queryParams: list[HashQueryParam] = Field(default_factory=list)
    tableSize: int | None = Field(default=None, ge=2, le=5000011)

    @model_validator(mode="after")
    def _type_matches(self) -> ConsistentHash:
        given = {
            "Header": self.header is not None,
            "Headers": bool(self.headers),
            "Cookie": self.cookie is not None,
            "QueryParams": bool(self.queryParams),
        }
        for kind, present in given.items():
            name = kind[0].lower() + kind[1:]
            if kind == self.type and not present:
                raise ValueError(f"type {kind} needs {name}")
            if kind != self.type and present:
                raise ValueError(f"{name} is for type {kind}, not {self.type}")
        if self.tableSize is not None and not _is_prime(self.tableSize):
            raise ValueError(f"tableSize {self.tableSize} is not a prime number (Maglev's table needs one)")
        return self


class LoadBalancer(Strict):
    type: Literal["ConsistentHash", "LeastRequest", "Random", "RoundRobin", "BackendUtilization", "DynamicModule"]
    consistentHash: ConsistentHash | None = None
    slowStart: SlowStart | None = None
    backendUtilization: Any = None  # not supported yet
    dynamicModule: Any = None  # not supported yet
    endpointOverride: Any = None  # not supported yet
    zoneAware: Any = None  # not supported yet

    @model_validator(mode="after")
    def _type_matches(self) -> LoadBalancer:
        if (self.type == "ConsistentHash") != (self.consistentHash is not None):
            raise ValueError("type ConsistentHash needs consistentHash, and consistentHash needs that type")
        if self.slowStart is not None and self.type in ("Random", "ConsistentHash", "DynamicModule"):
            raise ValueError("slowStart is for RoundRobin, LeastRequest and BackendUtilization only")
        return self


class PassiveHealthCheck(Strict):
    """Envoy's outlier detection, with Envoy Gateway's defaults."""

    splitExternalLocalOriginErrors: bool = False
    interval: str = "3s"
    consecutiveLocalOriginFailures: int = Field(default=5, ge=0)
    consecutiveGatewayErrors: int | None = Field(default=None, ge=0)
    consecutive5XxErrors: int = Field(default=5, ge=0)
    baseEjectionTime: str = "30s"
    maxEjectionPercent: int = Field(default=10, ge=0, le=100)
    failurePercentageThreshold: int | None = Field(default=None, ge=0, le=100)
    alwaysEjectOneEndpoint: bool = False

    _v_times = field_validator("interval", "baseEjectionTime")(_positive_duration)


class HealthCheckPayload(Strict):
    type: Literal["Text", "Binary"]
    text: str | None = Field(default=None, min_length=1)
    binary: str | None = Field(default=None, min_length=1)  # base64, as the API server keeps []byte

    @model_validator(mode="after")
    def _type_matches(self) -> HealthCheckPayload:
        if (self.type == "Text") != (self.text is not None) or (self.type == "Binary") != (self.binary is not None):
            raise ValueError("a Text payload sets text, a Binary one binary (base64), and not the other")
        if self.binary is not None:
            try:
                base64.b64decode(self.binary, validate=True)
            except ValueError:
                raise ValueError("binary is not base64") from None
        return self

    @property
    def data(self) -> bytes:
        return self.text.encode() if self.text is not None else base64.b64decode(self.binary or "")


HTTPStatus = Annotated[int, Field(ge=100, le=599)]


class HTTPActiveHealthChecker(Strict):
    hostname: str | None = Field(default=None, min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    path: str = Field(min_length=1, max_length=1024)
    # Envoy's health checker sends any method but CONNECT.
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] | None = None
    expectedStatuses: list[HTTPStatus] = Field(default_factory=list)
    retriableStatuses: list[HTTPStatus] = Field(default_factory=list)
    expectedResponse: HealthCheckPayload | None = None
    requestBody: HealthCheckPayload | None = None

    @model_validator(mode="after")
    def _body_with_method(self) -> HTTPActiveHealthChecker:
        if self.requestBody is not None and self.method not in ("POST", "PUT"):
            raise ValueError("requestBody needs method POST or PUT")
        return self


class TCPActiveHealthChecker(Strict):
    send: HealthCheckPayload | None = None
    receive: HealthCheckPayload | None = None


class GRPCActiveHealthChecker(Strict):
    service: str | None = None


class ActiveHealthCheck(Strict):
    timeout: str = "1s"
    interval: str = "3s"
    initialJitter: str | None = None
    unhealthyThreshold: int = Field(default=3, ge=1)
    healthyThreshold: int = Field(default=1, ge=1)
    type: Literal["HTTP", "TCP", "GRPC"]
    http: HTTPActiveHealthChecker | None = None
    tcp: TCPActiveHealthChecker | None = None
    grpc: GRPCActiveHealthChecker | None = None
    overrides: Any = None  # not supported yet
    healthCheckLog: Any = None  # not supported yet

    _v_times = field_validator("timeout", "interval")(_positive_duration)
    _v_jitter = field_validator("initialJitter")(_check_duration)

    @model_validator(mode="after")
    def _type_matches(self) -> ActiveHealthCheck:
        given = {"HTTP": self.http, "TCP": self.tcp, "GRPC": self.grpc}
        if self.type != "GRPC" and given[self.type] is None:  # GRPC's own settings are optional
            raise ValueError(f"type {self.type} needs {self.type.lower()}")
        for kind, settings in given.items():
            if kind != self.type and settings is not None:
                raise ValueError(f"{kind.lower()} is for type {kind}, not {self.type}")
        return self


class HealthCheck(Strict):
    active: ActiveHealthCheck | None = None
    passive: PassiveHealthCheck | None = None
    # Below this % of healthy endpoints Envoy ignores health (Envoy's default 50; 0: never).
    panicThreshold: int | None = Field(default=None, ge=0, le=100)


# rateLimit (Envoy Gateway's RateLimitSpec). Global rules are counted by the translator
# (compile/traffic.py); Local (Envoy's local_ratelimit) is accepted and reported as not supported.


class RateLimitHeaderMatch(Strict):
    """A request header (in `headers`) or query parameter (in `queryParams`) a rate limit selects by."""

    type: Literal["Exact", "RegularExpression", "Distinct"] = "Exact"
    name: str = Field(min_length=1, max_length=256)
    value: str | None = Field(default=None, max_length=1024)
    invert: bool = False

    @model_validator(mode="after")
    def _value_fits_type(self) -> RateLimitHeaderMatch:
        if self.type == "Distinct":
            if self.value is not None or self.invert:
                raise ValueError("a Distinct match takes no value and no invert (each value is counted apart)")
            return self
        if self.value is None:
            raise ValueError(f"an {self.type} match needs a value")
        if self.type == "RegularExpression":
            require_envoy_regex(self.value)
        return self


class RateLimitSourceMatch(Strict):
    type: Literal["Exact", "Distinct"] = "Exact"
    value: CIDR
    invert: bool = False  # (Envoy Gateway's newer field) clients outside the range


HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class RateLimitMethodMatch(Strict):
    value: HTTPMethod
    invert: bool = False


class RateLimitPathMatch(Strict):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = Field(default="/", max_length=1024)
    invert: bool = False

    @model_validator(mode="after")
    def _regex_compiles(self) -> RateLimitPathMatch:
        if self.type == "RegularExpression":
            require_envoy_regex(self.value)
        elif not self.value.startswith("/"):
            raise ValueError(f"an {self.type} path starts with /")
        return self


class RateLimitSelectCondition(Strict):
    headers: list[RateLimitHeaderMatch] = Field(default_factory=list, max_length=16)
    methods: list[RateLimitMethodMatch] = Field(default_factory=list)
    path: RateLimitPathMatch | None = None
    sourceCIDR: RateLimitSourceMatch | None = None
    queryParams: list[RateLimitHeaderMatch] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _something_selected(self) -> RateLimitSelectCondition:
        if not (self.headers or self.methods or self.path or self.sourceCIDR or self.queryParams):
            raise ValueError("at least one of headers, methods, path, sourceCIDR or queryParams must be specified")
        return self


RateLimitUnit = Literal["Second", "Minute", "Hour", "Day", "Week", "Month", "Year"]


class RateLimitValue(Strict):
    requests: int = Field(gt=0)
    unit: RateLimitUnit


class RateLimitCostMetadata(Strict):
    namespace: str = Field(min_length=1)
    key: str = Field(min_length=1)


class RateLimitCostSpecifier(Strict):
    from_: Literal["Number", "Metadata"] = Field(alias="from")
    number: int | None = Field(default=None, ge=0)
    metadata: RateLimitCostMetadata | None = None

    @model_validator(mode="after")
    def _one_source(self) -> RateLimitCostSpecifier:
        if self.number is not None and self.metadata is not None:
            raise ValueError("only one of number or metadata can be specified")
        if self.from_ == "Number" and self.number is None:
            raise ValueError("from: Number needs number")
        if self.from_ == "Metadata" and self.metadata is None:
            raise ValueError("from: Metadata needs metadata {namespace, key}")
        return self


class RateLimitCost(Strict):
    request: RateLimitCostSpecifier | None = None
    response: RateLimitCostSpecifier | None = None


class RateLimitRule(Strict):
    clientSelectors: list[RateLimitSelectCondition] = Field(default_factory=list, max_length=8)
    limit: RateLimitValue
    cost: RateLimitCost | None = None
    # (Envoy Gateway's newer field) Off: the answers carry no x-ratelimit-* for this rule.
    xRateLimitHeaders: Literal["Off", "DraftVersion03"] | None = None
    # True: one counter for every route the policy applies to; false (Envoy Gateway's default):
    # each route counts apart.
    shared: bool | None = None
    shadowMode: bool | None = None


class GlobalRateLimit(Strict):
    rules: list[RateLimitRule] = Field(max_length=128)


class LocalRateLimit(Strict):
    rules: list[RateLimitRule] = Field(default_factory=list, max_length=16)


class RateLimitSpec(Strict):
    # Deprecated in Envoy Gateway (set global and/or local), still accepted.
    type: Literal["Global", "Local"] | None = None
    global_: GlobalRateLimit | None = Field(default=None, alias="global")
    local: LocalRateLimit | None = None

    @model_validator(mode="after")
    def _type_matches(self) -> RateLimitSpec:
        if self.type == "Global" and self.global_ is None:
            raise ValueError("type Global needs global.rules")
        if self.type == "Local" and self.local is None:
            raise ValueError("type Local needs local.rules")
        if self.global_ is None and self.local is None:
            raise ValueError("set global.rules (counted across the Gateway's translator processes) or local.rules")
        return self


# Envoy Gateway fields of a BackendTrafficPolicy spec that aigw-xds does not implement yet.
UNSUPPORTED_TRAFFIC_FIELDS = (
    "targetSelectors",
    "mergeType",
    "proxyProtocol",
    "tcpKeepalive",
    "connection",
    "dns",
    "http2",
    "faultInjection",
    "useClientProtocol",
    "compression",
    "responseOverride",
    "httpUpgrade",
    "requestBuffer",
    "telemetry",
)


class BackendTrafficPolicySpec(Strict):
    """Its own fields are strict, as every model under it is; fields it does not have are kept
    (model_extra), for compile to tell a misspelt one (an error) from one of Envoy Gateway's that
    aigw-xds does not implement, e.g. a newer release's (a warning): check_traffic_policies."""

    model_config = ConfigDict(extra="allow")

    targetRef: PolicyTargetReference | None = None
    targetRefs: list[PolicyTargetReference] = Field(default_factory=list)
    retry: Retry | None = None
    timeout: Timeout | None = None
    circuitBreaker: CircuitBreaker | None = None
    targetSelectors: Any = None
    mergeType: Any = None
    rateLimit: RateLimitSpec | None = None
    loadBalancer: LoadBalancer | None = None
    healthCheck: HealthCheck | None = None
    proxyProtocol: Any = None
    tcpKeepalive: Any = None
    connection: Any = None
    dns: Any = None
    http2: Any = None
    faultInjection: Any = None
    useClientProtocol: Any = None
    compression: Any = None
    responseOverride: Any = None
    httpUpgrade: Any = None
    requestBuffer: Any = None
    telemetry: Any = None

    @model_validator(mode="after")
    def _one_target_form(self) -> BackendTrafficPolicySpec:
        if self.targetRef is not None and self.targetRefs:
            raise ValueError("set targetRef or targetRefs, not both")
        if self.targetRef is None and not self.targetRefs and not self.targetSelectors:
            raise ValueError("targetRefs is required (the HTTPRoute named after an AIGatewayRoute, or a Gateway)")
        return self

    @property
    def targets(self) -> list[tuple[str, PolicyTargetReference]]:
        """(field path, reference) of every target, whichever form names it."""
        if self.targetRef is not None:
            return [("spec.targetRef", self.targetRef)]
        return [(f"spec.targetRefs[{i}]", ref) for i, ref in enumerate(self.targetRefs)]


class BackendTrafficPolicy(Lenient):
    apiVersion: str
    kind: Literal["BackendTrafficPolicy"]
    metadata: ObjectMeta
    spec: BackendTrafficPolicySpec


# --------------------------------------------------------------------------------------------
# Core (v1)


class Secret(Lenient):
    apiVersion: str
    kind: Literal["Secret"]
    metadata: ObjectMeta
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    stringData: dict[str, str] = Field(default_factory=dict)
    # Keys whose substitution (api/substitution.py) failed, with the reason; filled by the loader.
    unresolved: dict[str, str] = Field(default_factory=dict)

    def __repr__(self) -> str:  # never show values
        return f"Secret({self.metadata.namespace}/{self.metadata.name}, keys={sorted(self.keys())})"

    __str__ = __repr__

    def keys(self) -> set[str]:
        return set(self.data) | set(self.stringData)

    def value(self, key: str) -> str | None:
        """The decoded value of key; stringData wins over data, as in Kubernetes."""
        import base64

        if key in self.stringData:
            return self.stringData[key]
        if key in self.data:
            return base64.b64decode(self.data[key]).decode()
        return None

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str]) -> dict[str, str]:
        import base64
        import binascii

        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise ValueError(f"data.{key} is not valid base64 of UTF-8 text") from exc
        return data


class ConfigMap(Lenient):
    apiVersion: str
    kind: Literal["ConfigMap"]
    metadata: ObjectMeta
    data: dict[str, str] = Field(default_factory=dict)


class ServicePort(Lenient):
    # Unset ("" or null) only on a single-port Service. Fields the API leaves unset may come as null.
    name: str | None = None
    port: int = Field(ge=1, le=65535)
    targetPort: int | str | None = None
    protocol: str | None = "TCP"
    appProtocol: str | None = None


class ServiceSpec(Lenient):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] | None = "ClusterIP"
    externalName: str | None = None
    ports: list[ServicePort] | None = None
    clusterIP: str | None = None

    @model_validator(mode="after")
    def _external_name(self) -> ServiceSpec:
        if self.type == "ExternalName" and not self.externalName:
            raise ValueError("a Service of type ExternalName needs spec.externalName")
        return self


class ServiceMeta(ObjectMeta):
    """A Service's name is a DNS-1035 label (it becomes a DNS name in the cluster)."""

    _v_name = field_validator("name")(lambda name: require_name(name, DNS_1035_LABEL, "Service name"))


class Service(Lenient):
    """A core Service, for the fields a Service backend uses (its ports, or its externalName)."""

    apiVersion: str
    kind: Literal["Service"]
    metadata: ServiceMeta
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


# The label that ties an EndpointSlice to its Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class EndpointConditions(Lenient):
    # Unset means ready (the API's convention: consumers treat an unknown state as ready).
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class SliceEndpoint(Lenient):
    addresses: list[str] = Field(min_length=1)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    hostname: str | None = None
    nodeName: str | None = None
    zone: str | None = None


class EndpointPort(Lenient):
    name: str | None = None  # unset or "" for the unnamed port of a single-port Service
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: str | None = "TCP"
    appProtocol: str | None = None


class EndpointSlice(Lenient):
    """discovery.k8s.io/v1 EndpointSlice: the endpoints of a Service (label kubernetes.io/service-name)."""

    apiVersion: str
    kind: Literal["EndpointSlice"]
    metadata: ObjectMeta
    addressType: Literal["IPv4", "IPv6", "FQDN"]
    endpoints: list[SliceEndpoint] | None = None
    ports: list[EndpointPort] | None = None


# --------------------------------------------------------------------------------------------
# Envoy AI Gateway (aigateway.envoyproxy.io)

SchemaName = Literal[
    "OpenAI", "Cohere", "AWSBedrock", "AzureOpenAI", "GCPVertexAI", "GCPAnthropic", "Anthropic", "AWSAnthropic"
]


class VersionedAPISchema(Strict):
    name: SchemaName
    version: str | None = None
    prefix: str | None = None


class HTTPHeader(Strict):
    name: str = Field(min_length=1)
    value: str


class HTTPHeaderMutation(Strict):
    set: list[HTTPHeader] = Field(default_factory=list, max_length=16)
    remove: list[str] = Field(default_factory=list, max_length=16)


class HTTPBodyField(Strict):
    path: str = Field(min_length=1)
    value: str

    @field_validator("value")
    @classmethod
    def _json(cls, value: str) -> str:
        import json

        try:
            json.loads(value)
        except ValueError as exc:
            raise ValueError(f"value must be JSON text (a string needs quotes): {exc}") from exc
        return value


class HTTPBodyMutation(Strict):
    set: list[HTTPBodyField] = Field(default_factory=list, max_length=16)
    remove: list[str] = Field(default_factory=list, max_length=16)


# Envoy's default RE2 limit (RegexMatcher max_program_size error level): a bigger regex is rejected
# with the whole RouteConfiguration, so every route of the Gateway would answer 404.
ENVOY_MAX_REGEX_PROGRAM_SIZE = 100


def envoy_regex_problem(pattern: str) -> str | None:
    """Why Envoy would reject pattern as a safe_regex (RE2 syntax, or program size over Envoy's
    default limit), or None. The program size is RE2's own count; Envoy's RE2 build counts a few
    capture instructions less at times, so this check is, if anything, slightly stricter."""
    import re2

    options = re2.Options()
    options.log_errors = False
    try:
        size = re2.compile(pattern, options).programsize
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"invalid regular expression {pattern!r} (RE2 syntax, as Envoy uses): {reason}"
    if size > ENVOY_MAX_REGEX_PROGRAM_SIZE:
        return (
            f"regular expression {pattern!r} is too complex for Envoy: RE2 program size {size} > "
            f"{ENVOY_MAX_REGEX_PROGRAM_SIZE} (shorten it, e.g. fewer alternatives or (?:...) groups)"
        )
    return None


def require_envoy_regex(pattern: str) -> None:
    """Raises ValueError (envoy_regex_problem's reason) when Envoy would reject the pattern."""
    problem = envoy_regex_problem(pattern)
    if problem is not None:
        raise ValueError(problem)


class HeaderMatch(Strict):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str = Field(min_length=1)
    value: str

    @model_validator(mode="after")
    def _regex_compiles(self) -> HeaderMatch:
        if self.type == "RegularExpression":
            require_envoy_regex(self.value)
        return self


class RouteRuleMatch(Strict):
    headers: list[HeaderMatch] = Field(default_factory=list, max_length=16)


class RouteRuleBackendRef(Strict):
    name: str = Field(min_length=1)
    namespace: str | None = None
    group: str | None = None
    kind: str | None = None
    modelNameOverride: str | None = None
    headerMutation: HTTPHeaderMutation | None = None
    bodyMutation: HTTPBodyMutation | None = None
    weight: int = Field(default=1, ge=0, le=1_000_000)
    priority: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _group_kind(self) -> RouteRuleBackendRef:
        if (self.group is None) != (self.kind is None):
            raise ValueError("group and kind are set together")
        if self.kind is not None and (self.group, self.kind) not in (
            ("inference.networking.k8s.io", "InferencePool"),
            ("aigateway.envoyproxy.io", "AIServiceBackend"),
        ):
            raise ValueError(
                f"backendRef kind {self.group}/{self.kind} is not supported "
                "(AIServiceBackend, or inference.networking.k8s.io/InferencePool)"
            )
        return self

    @property
    def is_inference_pool(self) -> bool:
        return self.kind == "InferencePool"


class HTTPRouteTimeouts(Strict):
    request: str | None = None
    backendRequest: str | None = None

    _v_request = field_validator("request", "backendRequest")(_check_duration)


class LLMRequestCost(Strict):
    metadataKey: str = Field(min_length=1)
    type: Literal[
        "OutputToken",
        "InputToken",
        "CachedInputToken",
        "CacheCreationInputToken",
        "TotalToken",
        "ReasoningToken",
        "CEL",
    ]
    cel: str | None = None

    @model_validator(mode="after")
    def _cel_iff_type(self) -> LLMRequestCost:
        if (self.type == "CEL") != bool(self.cel):
            raise ValueError("cel is set exactly when type is CEL")
        return self


class AIGatewayRouteRule(Strict):
    name: str | None = None
    matches: list[RouteRuleMatch] = Field(default_factory=list, max_length=128)
    backendRefs: list[RouteRuleBackendRef] = Field(default_factory=list, max_length=128)
    timeouts: HTTPRouteTimeouts | None = None
    streamIdleTimeout: str | None = None
    modelsOwnedBy: str | None = None
    modelsCreatedAt: str | None = None

    _v_idle = field_validator("streamIdleTimeout")(_check_duration)

    @model_validator(mode="after")
    def _pools(self) -> AIGatewayRouteRule:
        pools = [r for r in self.backendRefs if r.is_inference_pool]
        if pools and len(pools) != len(self.backendRefs):
            raise ValueError("a rule cannot mix InferencePool and AIServiceBackend backendRefs")
        if len(pools) > 1:
            raise ValueError("a rule has at most one InferencePool backendRef")
        if self.name == "route-not-found":
            raise ValueError("rule name 'route-not-found' is reserved")
        return self


class AIGatewayRouteSpec(Strict):
    parentRefs: list[ParentReference] = Field(default_factory=list, max_length=16)
    targetRefs: list[LocalObjectReference] = Field(default_factory=list)  # v1alpha1
    hostnames: list[str] = Field(default_factory=list, max_length=16)
    rules: list[AIGatewayRouteRule] = Field(min_length=1)
    llmRequestCosts: list[LLMRequestCost] = Field(default_factory=list, max_length=36)
    schema_: VersionedAPISchema | None = Field(default=None, alias="schema")  # v1alpha1
    filterConfig: dict[Any, Any] | None = None  # v1alpha1, ignored

    @field_validator("rules")
    @classmethod
    def _unique_rule_names(cls, rules: list[AIGatewayRouteRule]) -> list[AIGatewayRouteRule]:
        names = [r.name for r in rules if r.name]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"rule names must be unique: {sorted(dup)}")
        return rules


class AIGatewayRoute(Strict):
    apiVersion: str
    kind: Literal["AIGatewayRoute"]
    metadata: ObjectMeta
    spec: AIGatewayRouteSpec
    status: dict[Any, Any] | None = None


class BackendObjectReference(Strict):
    name: str = Field(min_length=1)
    namespace: str | None = None
    group: str | None = None
    kind: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)

    @property
    def is_service(self) -> bool:
        """A core Service (group "" or "core", kind Service) rather than an Envoy Gateway Backend."""
        return self.kind == "Service" and (self.group or "") in ("", "core")


class AIServiceBackendSpec(Strict):
    schema_: VersionedAPISchema = Field(alias="schema")
    backendRef: BackendObjectReference
    headerMutation: HTTPHeaderMutation | None = None
    bodyMutation: HTTPBodyMutation | None = None
    timeouts: HTTPRouteTimeouts | None = None  # v1alpha1

    @field_validator("backendRef")
    @classmethod
    def _eg_backend(cls, ref: BackendObjectReference) -> BackendObjectReference:
        if ref.is_service:
            if ref.port is None:
                raise ValueError("backendRef.port is required for a Service (the Service port to send to)")
            return ref
        if (ref.group or "gateway.envoyproxy.io", ref.kind or "Backend") != ("gateway.envoyproxy.io", "Backend"):
            raise ValueError(
                "backendRef must be a gateway.envoyproxy.io Backend or a core Service "
                f'(group "" or "core", kind Service, with a port); got group {ref.group or "(unset)"!r}, '
                f"kind {ref.kind or '(unset)'!r}"
            )
        return ref


class AIServiceBackend(Strict):
    apiVersion: str
    kind: Literal["AIServiceBackend"]
    metadata: ObjectMeta
    spec: AIServiceBackendSpec
    status: dict[Any, Any] | None = None


class SecretRefHolder(Strict):
    secretRef: SecretObjectReference


class AWSCredentialsFile(Strict):
    secretRef: SecretObjectReference
    profile: str = "default"


class OIDCProvider(Lenient):
    issuer: str = Field(min_length=1)
    tokenEndpoint: str | None = None


class OIDC(Lenient):
    """Envoy Gateway's OIDC settings; only what a client-credentials grant needs is read."""

    provider: OIDCProvider
    clientID: str = Field(min_length=1)
    clientSecret: SecretObjectReference
    scopes: list[str] = Field(default_factory=list)


class OIDCExchangeToken(Strict):
    oidc: OIDC
    grantType: str | None = None
    aud: str | None = None
    awsRoleArn: str | None = None


class GCPServiceAccountImpersonation(Strict):
    serviceAccountName: str = Field(min_length=1)


class GCPWorkloadIdentityFederationConfig(Strict):
    projectID: str = Field(min_length=1)
    workloadIdentityProviderName: str = Field(min_length=1)
    workloadIdentityPoolName: str = Field(min_length=1)
    oidcExchangeToken: OIDCExchangeToken
    serviceAccountImpersonation: GCPServiceAccountImpersonation | None = None


class AWSCredentials(Strict):
    region: str = Field(min_length=1)
    credentialsFile: AWSCredentialsFile | None = None
    oidcExchangeToken: OIDCExchangeToken | None = None


class AzureCredentials(Strict):
    clientID: str = Field(min_length=1)
    tenantID: str = Field(min_length=1)
    clientSecretRef: SecretObjectReference | None = None
    oidcExchangeToken: OIDCExchangeToken | None = None

    @model_validator(mode="after")
    def _one(self) -> AzureCredentials:
        if (self.clientSecretRef is None) == (self.oidcExchangeToken is None):
            raise ValueError("set exactly one of clientSecretRef, oidcExchangeToken")
        return self


class GCPCredentialsFile(Strict):
    secretRef: SecretObjectReference


class GCPCredentials(Strict):
    projectName: str = Field(min_length=1)
    region: str = Field(min_length=1)
    credentialsFile: GCPCredentialsFile | None = None
    workloadIdentityFederationConfig: GCPWorkloadIdentityFederationConfig | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> GCPCredentials:
        if self.credentialsFile is not None and self.workloadIdentityFederationConfig is not None:
            raise ValueError("set at most one of credentialsFile, workloadIdentityFederationConfig")
        return self


class FromRequestHeaders(Strict):
    header: str | None = None
    fallbackToConfigured: bool = True


class FromDynamicMetadata(Strict):
    namespace: str = Field(min_length=1)
    key: str | None = None
    fallbackToConfigured: bool = True


class CredentialOverride(Strict):
    fromRequestHeaders: FromRequestHeaders | None = None
    fromDynamicMetadata: FromDynamicMetadata | None = None

    @model_validator(mode="after")
    def _one(self) -> CredentialOverride:
        if (self.fromRequestHeaders is None) == (self.fromDynamicMetadata is None):
            raise ValueError("set exactly one of fromRequestHeaders, fromDynamicMetadata")
        return self


_BSP_FIELD = {
    "APIKey": "apiKey",
    "AnthropicAPIKey": "anthropicAPIKey",
    "AzureAPIKey": "azureAPIKey",
    "AWSCredentials": "awsCredentials",
    "AzureCredentials": "azureCredentials",
    "GCPCredentials": "gcpCredentials",
}


# What a BackendSecurityPolicy may target: (group, kind).
_BSP_TARGETS = (("aigateway.envoyproxy.io", "AIServiceBackend"), ("inference.networking.k8s.io", "InferencePool"))


class BackendSecurityPolicySpec(Strict):
    targetRefs: list[LocalObjectReference] = Field(default_factory=list, max_length=16)
    type: Literal["APIKey", "AnthropicAPIKey", "AzureAPIKey", "AWSCredentials", "AzureCredentials", "GCPCredentials"]
    apiKey: SecretRefHolder | None = None
    anthropicAPIKey: SecretRefHolder | None = None
    azureAPIKey: SecretRefHolder | None = None
    awsCredentials: AWSCredentials | None = None
    azureCredentials: AzureCredentials | None = None
    gcpCredentials: GCPCredentials | None = None
    credentialOverride: CredentialOverride | None = None

    @model_validator(mode="after")
    def _field_matches_type(self) -> BackendSecurityPolicySpec:
        wanted = _BSP_FIELD[self.type]
        for field in _BSP_FIELD.values():
            present = getattr(self, field) is not None
            if field == wanted and not present and self.type not in ("AWSCredentials",):
                raise ValueError(f"type {self.type} needs the field {field}")
            if field != wanted and present:
                raise ValueError(f"field {field} does not belong to type {self.type}")
        if self.type == "AWSCredentials" and self.awsCredentials is None:
            raise ValueError("type AWSCredentials needs the field awsCredentials")
        return self

    @field_validator("targetRefs")
    @classmethod
    def _backends_only(cls, refs: list[LocalObjectReference]) -> list[LocalObjectReference]:
        for index, ref in enumerate(refs):
            if (ref.group, ref.kind) not in _BSP_TARGETS:
                raise ValueError(
                    f"targetRefs[{index}] must name an aigateway.envoyproxy.io AIServiceBackend or an InferencePool, "
                    f"not {ref.group}/{ref.kind}"
                )
        return refs


class BackendSecurityPolicy(Strict):
    apiVersion: str
    kind: Literal["BackendSecurityPolicy"]
    metadata: ObjectMeta
    spec: BackendSecurityPolicySpec
    status: dict[Any, Any] | None = None


class ForwardProxy(Strict):
    address: str

    @field_validator("address")
    @classmethod
    def _ip_port(cls, value: str) -> str:
        ip_and_port(value)
        return value

    @property
    def ip_port(self) -> tuple[str, int]:
        return ip_and_port(self.address)


def ip_and_port(address: str) -> tuple[str, int]:
    """A forward proxy's `IP:port` (an IPv6 address in brackets), as Envoy takes it: Envoy's
    http_11_proxy transport socket reads an IP address and resolves no name (Envoy 1.40 refuses
    a cluster naming one, "malformed IP address")."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"address must be IP:port, got {address!r}")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(
            f"the proxy's host {host!r} is not an IP address: Envoy connects to a forward proxy by IP address "
            "and does not resolve its name (give the proxy's IP, in Kubernetes its Service's clusterIP)"
        ) from None
    if ip.version == 6 and not bracketed:
        raise ValueError(f"an IPv6 address takes brackets: [{host}]:{port}")
    if ip.version == 4 and bracketed:
        raise ValueError(f"only an IPv6 address takes brackets: {ip}:{port}")
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv6Address) and ip.scope_id):
        raise ValueError(f"{ip} is not an address a proxy can be reached at (an unspecified or scoped address)")
    return str(ip), int(port)


class GatewayConfigSpec(Strict):
    extProc: dict[Any, Any] | None = None
    globalLLMRequestCosts: list[LLMRequestCost] = Field(default_factory=list)
    forwardProxy: ForwardProxy | None = None


class GatewayConfig(Strict):
    apiVersion: str
    kind: Literal["GatewayConfig"]
    metadata: ObjectMeta
    spec: GatewayConfigSpec
    status: dict[Any, Any] | None = None


def _absolute_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path: begin it with / (/{path})")
    return path


# An HTTP path that begins with "/" (Envoy takes one that does not and matches nothing with it).
AbsolutePath = Annotated[str, AfterValidator(_absolute_path), Field(max_length=1024)]


class MCPToolSelector(Strict):
    include: list[str] = Field(default_factory=list)
    includeRegex: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    excludeRegex: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _regexes(self) -> MCPToolSelector:
        for pattern in (*self.includeRegex, *self.excludeRegex):
            require_envoy_regex(pattern)  # RE2, as the MCP proxy matches them
        if not (self.include or self.includeRegex or self.exclude or self.excludeRegex):
            raise ValueError("set at least one of include, includeRegex, exclude, excludeRegex (or no toolSelector)")
        if self.include and self.includeRegex:
            raise ValueError("set at most one of include, includeRegex")
        if self.exclude and self.excludeRegex:
            raise ValueError("set at most one of exclude, excludeRegex")
        return self


class MCPAPIKey(Strict):
    """The key the gateway sends an MCP server: a Secret's `apiKey` or inline; in a header (by default
    Authorization, as "Bearer <key>") or a query parameter."""

    secretRef: SecretObjectReference | None = None
    inline: str | None = Field(default=None, min_length=1)
    header: str | None = Field(default=None, min_length=1)
    queryParam: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_each(self) -> MCPAPIKey:
        if (self.secretRef is None) == (self.inline is None):
            raise ValueError("set exactly one of secretRef, inline")
        if self.header is not None and self.queryParam is not None:
            raise ValueError("set at most one of header, queryParam")
        return self


class MCPBackendSecurityPolicy(Strict):
    apiKey: MCPAPIKey | None = None


# Headers a client's request may not give an MCP server (forwardHeaders): the transport's and the
# session's own, which the MCP proxy sets (a forwarded Content-Length or Transfer-Encoding would
# corrupt the request; the client's Mcp-Session-Id is the gateway's sealed session).
UNFORWARDABLE_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "accept",
        "content-type",
        "content-encoding",
        "expect",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
    }
)
# An HTTP header name (Gateway API's HTTPHeaderName).
HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"


def _not_the_transports(header: str) -> str:
    if header.lower() in UNFORWARDABLE_HEADERS:
        raise ValueError(f"{header} is the MCP transport's own header: the gateway sets it")
    if header.lower().startswith(contract.OVERRIDE_HEADER_PREFIX):
        raise ValueError(f"{header} is a name of the gateway's own headers ({contract.OVERRIDE_HEADER_PREFIX}...)")
    return header


# A header the MCP proxy may send an MCP server (not one of the transport's own).
MCPServerHeader = Annotated[str, Field(min_length=1, pattern=HEADER_NAME), AfterValidator(_not_the_transports)]


class MCPForwardHeader(Strict):
    """A client header the gateway passes to an MCP server (`name`), under `backendHeader` if set."""

    name: str = Field(min_length=1, pattern=HEADER_NAME)
    backendHeader: MCPServerHeader | None = None

    @model_validator(mode="after")
    def _forwardable(self) -> MCPForwardHeader:
        if self.name.lower().startswith("x-envoy-"):
            raise ValueError(
                f"name {self.name}: the x-envoy-* headers a client sends are removed as its request arrives"
            )
        if self.backendHeader is None:
            try:
                _not_the_transports(self.name)
            except ValueError as exc:
                raise ValueError(f"name {exc}") from None
        return self


class MCPRouteBackendRef(Strict):
    name: str = Field(min_length=1)
    namespace: str | None = None
    group: str | None = None
    kind: str | None = None
    port: int | None = None
    # The MCP server's endpoint, an absolute path.
    path: AbsolutePath = "/mcp"
    toolSelector: MCPToolSelector | None = None
    securityPolicy: MCPBackendSecurityPolicy | None = None
    forwardHeaders: list[MCPForwardHeader] = Field(default_factory=list)


HTTP_URL_MAX = 2048


def http_url(url: str) -> str:
    """`url` when it is an absolute http(s) URL Envoy can take (ValueError saying why not)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if any(c in url for c in '"\\ \t\r\n'):  # it goes in a quoted string of a challenge header
        raise ValueError(f"{url!r} holds a quote, backslash or space: percent-encode it")
    if len(url) > HTTP_URL_MAX:
        raise ValueError(f"a URL of {len(url)} characters is longer than {HTTP_URL_MAX}")
    try:
        parsed.port  # noqa: B018  # raises for a port out of range or not a number
    except ValueError:
        raise ValueError(f"{url!r} has no valid port") from None
    return url


# An absolute http or https URL.
HttpURL = Annotated[str, AfterValidator(http_url), Field(max_length=HTTP_URL_MAX)]


# An OAuth scope (RFC 6749 scope-token: printable ASCII but space, quote and backslash).
ScopeToken = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")]


class RemoteJWKS(Strict):
    """Where Envoy fetches the issuer's signing keys (Envoy Gateway's RemoteJWKS, its uri)."""

    uri: HttpURL
    cacheDuration: Annotated[Duration | None, AfterValidator(_check_duration)] = None


class LocalJWKS(Strict):
    """Signing keys given in the configuration: inline, or a ConfigMap's `jwks` (else its only) value."""

    type: Literal["Inline", "ValueRef"] = "Inline"
    inline: str | None = Field(default=None, min_length=1)
    valueRef: LocalObjectReference | None = None

    @model_validator(mode="after")
    def _one_source(self) -> LocalJWKS:
        if self.type == "Inline" and (self.inline is None or self.valueRef is not None):
            raise ValueError("type Inline takes inline (and no valueRef)")
        if self.type == "ValueRef" and (self.valueRef is None or self.inline is not None):
            raise ValueError("type ValueRef takes valueRef (and no inline)")
        if self.valueRef is not None and (self.valueRef.group, self.valueRef.kind or "ConfigMap") != ("", "ConfigMap"):
            raise ValueError('valueRef names a ConfigMap (group "", kind ConfigMap)')
        return self


class JWTHeaderExtractor(Strict):
    name: str = Field(min_length=1, pattern=HEADER_NAME)
    valuePrefix: str | None = None


class JWTExtractor(Strict):
    """Where a JWT is read from (Envoy Gateway's JWTExtractor; none: Authorization's Bearer token
    or the access_token query parameter)."""

    headers: list[JWTHeaderExtractor] = Field(default_factory=list)
    cookies: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    params: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)


class JWTClaimToHeader(Strict):
    header: Annotated[str, Field(min_length=1, pattern=HEADER_NAME)]
    claim: str = Field(min_length=1)


class JWTProvider(Strict):
    """Envoy Gateway's JWTProvider: how one issuer's tokens are checked."""

    name: str = Field(min_length=1, max_length=253)
    issuer: str = Field(default="", max_length=253)
    audiences: list[str] = Field(default_factory=list, max_length=8)
    remoteJWKS: RemoteJWKS | None = None
    localJWKS: LocalJWKS | None = None
    claimToHeaders: list[JWTClaimToHeader] = Field(default_factory=list)
    recomputeRoute: bool | None = None
    extractFrom: JWTExtractor | None = None

    @model_validator(mode="after")
    def _one_source(self) -> JWTProvider:
        if (self.remoteJWKS is None) == (self.localJWKS is None):
            raise ValueError("set exactly one of remoteJWKS, localJWKS")
        if self.recomputeRoute and not self.claimToHeaders:
            raise ValueError("claimToHeaders must be specified if recomputeRoute is enabled")
        return self


class JWT(Strict):
    """Envoy Gateway's JWT: a request passes with a token any of the providers verifies."""

    optional: bool | None = None
    failOpen: bool | None = None
    providers: list[JWTProvider] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _checks(self) -> JWT:
        if self.optional is not None and self.failOpen is not None:
            raise ValueError("optional and failOpen cannot both be set; failOpen already tolerates a missing JWT")
        names = [provider.name for provider in self.providers]
        if len(names) != len(set(names)):
            raise ValueError("providers must have distinct names")
        return self


# An origin Envoy Gateway's CORS takes: "*", or scheme://host[:port] whose host may start with "*.".
CORS_ORIGIN = r"^(\*|[A-Za-z][A-Za-z0-9+.-]*:\/\/(\*|(\*\.)?(([\w-]+\.?)+)?[\w-]+)(:\d{1,5})?)$"


class CORS(Strict):
    """Envoy Gateway's CORS: which web pages' scripts may call what the policy names."""

    allowOrigins: list[Annotated[str, Field(min_length=1, max_length=253, pattern=CORS_ORIGIN)]] = Field(
        default_factory=list
    )
    allowMethods: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    allowHeaders: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    exposeHeaders: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    maxAge: Annotated[Duration | None, AfterValidator(_check_duration)] = None
    allowCredentials: bool | None = None


class MCPJWKS(Strict):
    remoteJWKS: RemoteJWKS | None = None
    localJWKS: LocalJWKS | None = None

    @model_validator(mode="after")
    def _one_source(self) -> MCPJWKS:
        if (self.remoteJWKS is None) == (self.localJWKS is None):
            raise ValueError("set exactly one of remoteJWKS, localJWKS")
        return self


class ProtectedResourceMetadata(Strict):
    """What the route's OAuth protected resource metadata (RFC 9728) says of it."""

    # The MCP endpoint's URL as its clients know it, e.g. https://api.example.com/mcp.
    resource: HttpURL
    resourceName: str | None = Field(default=None, max_length=256)
    scopesSupported: list[ScopeToken] = Field(default_factory=list, max_length=32)
    resourceSigningAlgValuesSupported: list[str] | None = Field(default=None, min_length=1, max_length=16)
    resourceDocumentation: HttpURL | None = None
    resourcePolicyUri: HttpURL | None = None


class ClaimToHeader(Strict):
    header: MCPServerHeader
    claim: str = Field(min_length=1)


class MCPRouteOAuth(Strict):
    """Clients authenticate with an OAuth access token (a JWT) of `issuer`, checked by Envoy."""

    issuer: HttpURL
    audiences: list[str] = Field(default_factory=list, max_length=32)
    jwks: MCPJWKS | None = None
    protectedResourceMetadata: ProtectedResourceMetadata
    claimToHeaders: list[ClaimToHeader] = Field(default_factory=list, max_length=16)


class APIKeyExtractFrom(Strict):
    headers: list[str] = Field(default_factory=list)
    params: list[str] = Field(default_factory=list)
    cookies: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_kind(self) -> APIKeyExtractFrom:
        if sum(bool(kind) for kind in (self.headers, self.params, self.cookies)) != 1:
            raise ValueError("set exactly one of headers, params, cookies")
        return self


class APIKeyAuth(Strict):
    """Envoy Gateway's APIKeyAuth: each Secret's data keys are client ids, their values the keys."""

    credentialRefs: list[SecretObjectReference] = Field(min_length=1)
    extractFrom: list[APIKeyExtractFrom] = Field(min_length=1)
    forwardClientIDHeader: MCPServerHeader | None = None
    sanitize: bool | None = None


class BasicAuth(Strict):
    """Envoy Gateway's BasicAuth: the users of an htpasswd file (the Secret's key ".htpasswd")."""

    users: SecretObjectReference
    forwardUsernameHeader: MCPServerHeader | None = None


class JWTClaim(Strict):
    # A claim name; dots name a nested claim.
    name: str = Field(min_length=1, max_length=253)
    valueType: Literal["String", "StringArray"] = "String"
    values: list[str] = Field(min_length=1, max_length=128)


class JWTPrincipal(Strict):
    """Envoy Gateway's JWTPrincipal: claims and scopes of a token the policy's provider verified."""

    provider: str = Field(min_length=1, max_length=253)
    claims: list[JWTClaim] = Field(default_factory=list, max_length=16)
    scopes: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _something(self) -> JWTPrincipal:
        if not self.claims and not self.scopes:
            raise ValueError("at least one of claims or scopes must be specified")
        return self


class AuthorizationHeaderMatch(Strict):
    name: str = Field(min_length=1, max_length=256, pattern=HEADER_NAME)
    values: list[str] = Field(min_length=1, max_length=256)


class Principal(Strict):
    """Envoy Gateway's Principal: who the client is (every kind given must match). Its
    clientIPGeoLocations are kept as written (compile refuses them: not supported yet)."""

    clientCIDRs: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    jwt: JWTPrincipal | None = None
    headers: list[AuthorizationHeaderMatch] = Field(default_factory=list, max_length=256)
    clientIPGeoLocations: list[Any] | None = None

    @model_validator(mode="after")
    def _something(self) -> Principal:
        if not (self.clientCIDRs or self.jwt or self.headers or self.clientIPGeoLocations):
            raise ValueError("at least one of clientCIDRs, jwt, headers, or clientIPGeoLocations must be specified")
        return self


class Operation(Strict):
    """Envoy Gateway's Operation: the request's methods (its path kept as written: compile refuses
    it, not supported yet)."""

    methods: list[HTTPMethod] = Field(default_factory=list, max_length=16)
    path: Any = None


class AuthorizationRule(Strict):
    """One rule: its action when its principal (and operation) match. Its cel is kept as written
    (compile refuses it: not supported yet)."""

    name: str | None = Field(default=None, min_length=1, max_length=253)
    action: Literal["Allow", "Deny"]
    operation: Operation | None = None
    principal: Principal | None = None
    cel: str | None = None

    @model_validator(mode="after")
    def _something(self) -> AuthorizationRule:
        if self.principal is None and self.cel is None:
            raise ValueError("at least one of principal or cel must be specified")
        return self


class Authorization(Strict):
    """Envoy Gateway's Authorization: the first rule that matches decides; none, defaultAction
    (Deny unless said)."""

    rules: list[AuthorizationRule] = Field(default_factory=list)
    defaultAction: Literal["Allow", "Deny"] | None = None


class MCPJWTSource(Strict):
    scopes: list[ScopeToken] = Field(default_factory=list, max_length=16)
    claims: list[JWTClaim] = Field(default_factory=list, max_length=16)

    @model_validator(mode="after")
    def _something(self) -> MCPJWTSource:
        if not self.scopes and not self.claims:
            raise ValueError("set scopes or claims (or no jwt source)")
        if any(c.name == "scope" for c in self.claims):
            raise ValueError("claim name 'scope' is reserved for OAuth scopes: list them under scopes")
        return self


class MCPAuthorizationSource(Strict):
    jwt: MCPJWTSource


class MCPToolCall(Strict):
    # A backendRef's name, and the tool's name at that backend (without the "<backend>__" prefix).
    backend: str = Field(min_length=1)
    tool: str = Field(min_length=1)


class MCPAuthorizationTarget(Strict):
    tools: list[MCPToolCall] = Field(min_length=1, max_length=16)


class MCPAuthorizationRule(Strict):
    source: MCPAuthorizationSource | None = None
    target: MCPAuthorizationTarget | None = None
    cel: str | None = Field(default=None, min_length=1, max_length=4096)
    action: Literal["Allow", "Deny"] = "Allow"


class MCPRouteAuthorization(Strict):
    defaultAction: Literal["Allow", "Deny"] = "Deny"
    rules: list[MCPAuthorizationRule] = Field(default_factory=list, max_length=32)


class MCPBackendSelectorRule(Strict):
    # Tried once per backendRef (request.mcp.backend its name) when a client initializes a session.
    cel: str | None = Field(default=None, min_length=1, max_length=4096)
    action: Literal["Allow", "Deny"] = "Allow"


class MCPBackendSelector(Strict):
    defaultAction: Literal["Allow", "Deny"] = "Deny"
    rules: list[MCPBackendSelectorRule] = Field(default_factory=list, max_length=32)


class ExtAuthBackendRef(Strict):
    """Envoy Gateway's BackendRef of an external service: a Service or a Backend, and its weight."""

    name: str = Field(min_length=1)
    namespace: str | None = None
    group: str | None = None
    kind: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int | None = Field(default=None, ge=0, le=1_000_000)
    fallback: bool | None = None


class ExtServiceSettings(Strict):
    """Envoy Gateway's ClusterSettings of an external service (backendSettings): retry, connect
    timeout and circuit breakers are built; the rest is read and warned about (compile)."""

    retry: Retry | None = None
    timeout: Timeout | None = None
    circuitBreaker: CircuitBreaker | None = None
    loadBalancer: Any = None
    proxyProtocol: Any = None
    tcpKeepalive: Any = None
    healthCheck: Any = None
    connection: Any = None
    dns: Any = None
    http2: Any = None


class ExtAuthService(Strict):
    """Where Envoy asks (Envoy Gateway's BackendCluster): backendRef, or backendRefs."""

    backendRef: ExtAuthBackendRef | None = None
    backendRefs: list[ExtAuthBackendRef] = Field(default_factory=list, max_length=16)
    backendSettings: ExtServiceSettings | None = None

    @model_validator(mode="after")
    def _some_backend(self) -> ExtAuthService:
        if self.backendRef is None and not self.backendRefs:
            raise ValueError("backendRef or backendRefs needs to be set")
        return self

    @property
    def refs(self) -> list[tuple[str, ExtAuthBackendRef]]:
        """(field path below the service, reference) of each backend, whichever form names it."""
        if self.backendRef is not None:
            return [("backendRef", self.backendRef)]
        return [(f"backendRefs[{i}]", ref) for i, ref in enumerate(self.backendRefs)]


class HTTPExtAuthService(ExtAuthService):
    path: str | None = None
    pathOverride: str | None = None
    headersToBackend: list[str] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _one_path(self) -> HTTPExtAuthService:
        if self.path is not None and self.pathOverride is not None:
            raise ValueError("only one of path or pathOverride can be specified")
        for value in (self.path, self.pathOverride):
            if value is not None and value and not value.startswith("/"):
                raise ValueError(f"path {value!r} must start with /")
        return self


class BodyToExtAuth(Strict):
    maxRequestBytes: int = Field(ge=1, le=2**32 - 1)


class LocalObjectKeyReference(Strict):
    group: str = ""
    kind: str
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class ContextExtension(Strict):
    name: str = Field(min_length=1)
    type: Literal["Value", "ValueRef"] = "Value"
    value: str | None = None
    valueRef: LocalObjectKeyReference | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ContextExtension:
        given = (self.value is not None, self.valueRef is not None)
        if given == (False, True) and self.type == "Value":
            raise ValueError("a valueRef needs type: ValueRef (type is Value unless set)")
        if given != ((True, False) if self.type == "Value" else (False, True)):
            raise ValueError("Exactly one of value or valueRef must be set with correct type.")
        ref = self.valueRef
        if ref is not None and (ref.kind not in ("ConfigMap", "Secret") or ref.group not in ("", "v1")):
            raise ValueError(
                "Only a reference to an object of kind ConfigMap or Secret belonging to default v1 API group is "
                "supported."
            )
        return self


# The statuses Envoy Gateway lets statusOnError be (4xx and 5xx that Envoy names).
EXT_AUTH_ERROR_STATUSES = frozenset(
    [*range(400, 418), 421, 422, 423, 424, 426, 428, 429, 431, *range(500, 509), 510, 511]
)


class ExtAuth(Strict):
    """Envoy Gateway's ExtAuth (v1.8): Envoy asks an external service, over gRPC (Envoy's
    Authorization service) or HTTP, whether each request may pass."""

    grpc: ExtAuthService | None = None
    http: HTTPExtAuthService | None = None
    headersToExtAuth: list[str] = Field(default_factory=list, max_length=64)
    bodyToExtAuth: BodyToExtAuth | None = None
    timeout: Annotated[Duration | None, AfterValidator(_positive_duration)] = None
    failOpen: bool = False
    recomputeRoute: bool = False
    includeRouteMetadata: bool = False
    contextExtensions: list[ContextExtension] = Field(default_factory=list, max_length=64)
    statusOnError: int | None = None

    @model_validator(mode="after")
    def _one_service(self) -> ExtAuth:
        if self.grpc is None and self.http is None:
            raise ValueError("one of grpc or http must be specified")
        if self.grpc is not None and self.http is not None:
            raise ValueError("only one of grpc or http can be specified")
        if self.statusOnError is not None and self.statusOnError not in EXT_AUTH_ERROR_STATUSES:
            raise ValueError(f"statusOnError {self.statusOnError} is not a 4xx or 5xx status Envoy Gateway allows")
        names = [extension.name for extension in self.contextExtensions]
        if len(names) != len(set(names)):
            raise ValueError("contextExtensions names must be unique")
        return self


class MCPRouteSecurityPolicy(Strict):
    oauth: MCPRouteOAuth | None = None
    apiKeyAuth: APIKeyAuth | None = None
    extAuth: ExtAuth | None = None
    authorization: MCPRouteAuthorization | None = None

    @model_validator(mode="after")
    def _jwt_needs_oauth(self) -> MCPRouteSecurityPolicy:
        rules = self.authorization.rules if self.authorization is not None else []
        if self.oauth is None and any(rule.source is not None for rule in rules):
            raise ValueError("oauth must be configured when any authorization rule uses a jwt source")
        return self


class MCPRouteSpec(Strict):
    parentRefs: list[ParentReference] = Field(min_length=1)
    # The clients' MCP endpoint on the Gateway's listeners: this path exactly (no trailing slash).
    path: AbsolutePath = "/mcp"
    headers: list[HeaderMatch] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    backendRefs: list[MCPRouteBackendRef] = Field(min_length=1, max_length=256)
    securityPolicy: MCPRouteSecurityPolicy | None = None
    backendSelector: MCPBackendSelector | None = None

    @field_validator("backendRefs")
    @classmethod
    def _unique(cls, refs: list[MCPRouteBackendRef]) -> list[MCPRouteBackendRef]:
        names = [r.name for r in refs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"backendRefs names must be unique: {sorted(dup)}")
        return refs


class MCPRoute(Strict):
    apiVersion: str
    kind: Literal["MCPRoute"]
    metadata: ObjectMeta
    spec: MCPRouteSpec
    status: dict[Any, Any] | None = None


_QUOTA_DURATION = re.compile(r"^([1-9]\d{0,5})(s|m|h|d|w|mo)$")
_QUOTA_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_quota_duration(text: str) -> tuple[int, int]:
    """(seconds, months) of a QuotaPolicy window: "<n>s", "<n>m", "<n>h", "<n>d", "<n>w" (Envoy AI
    Gateway's 1s/1m/1h/1d, and the longer windows its #2469 asks for), or "<n>mo" (calendar
    months). Exactly one of the two is non-zero."""
    m = _QUOTA_DURATION.match(text.strip())
    if not m:
        raise ValueError(
            f"invalid quota duration {text!r} (expected <n>s, <n>m, <n>h, <n>d, <n>w or <n>mo, e.g. 1h, 1w, 1mo)"
        )
    count, unit = int(m.group(1)), m.group(2)
    return (0, count) if unit == "mo" else (count * _QUOTA_SECONDS[unit], 0)


class Quota(Strict):
    limit: int = Field(gt=0)
    duration: str

    @field_validator("duration")
    @classmethod
    def _duration_parses(cls, value: str) -> str:
        parse_quota_duration(value)
        return value


class QuotaBucketRule(Strict):
    # Envoy Gateway's RateLimitSelectCondition; QuotaPolicy selects on headers only.
    clientSelectors: list[RateLimitSelectCondition] = Field(default_factory=list)
    quota: Quota
    shadowMode: bool | None = None

    @field_validator("clientSelectors")
    @classmethod
    def _headers_only(cls, selectors: list[RateLimitSelectCondition]) -> list[RateLimitSelectCondition]:
        for selector in selectors:
            if selector.methods or selector.path is not None or selector.sourceCIDR is not None or selector.queryParams:
                raise ValueError("QuotaPolicy bucket rules select clients by headers only")
        return selectors


class PerModelQuotaSpec(Strict):
    costExpression: str = "total_tokens"
    mode: Literal["Shared"] = "Shared"
    defaultBucket: Quota | None = None
    bucketRules: list[QuotaBucketRule] = Field(default_factory=list)


class PerModelQuota(Strict):
    modelName: str = Field(min_length=1)
    quota: PerModelQuotaSpec


class ServiceQuota(Strict):
    costExpression: str | None = None
    quota: Quota


class QuotaPolicySpec(Strict):
    targetRefs: list[LocalObjectReference] = Field(min_length=1)
    serviceQuota: ServiceQuota | None = None
    perModelQuotas: list[PerModelQuota] = Field(default_factory=list)


class QuotaPolicy(Strict):
    apiVersion: str
    kind: Literal["QuotaPolicy"]
    metadata: ObjectMeta
    spec: QuotaPolicySpec
    status: dict[Any, Any] | None = None


# --------------------------------------------------------------------------------------------
# Gateway API Inference Extension


class InferencePoolPort(Lenient):
    number: int = Field(ge=1, le=65535)


class EndpointPickerRef(Lenient):
    """The pool's endpoint picker: an ext_proc service (a Service in the pool's namespace) that
    picks, per request, the pod that serves it."""

    name: str = Field(min_length=1)
    port: InferencePoolPort | None = None
    kind: str = "Service"
    group: str = ""
    failureMode: Literal["FailOpen", "FailClose"] = "FailClose"

    @model_validator(mode="after")
    def _port_of_a_service(self) -> EndpointPickerRef:
        if self.kind == "Service" and self.port is None:
            raise ValueError("port is required when kind is Service")
        return self


class LabelSelector(Lenient):
    matchLabels: dict[str, str] = Field(min_length=1, max_length=64)


class InferencePoolSpec(Lenient):
    selector: LabelSelector
    targetPorts: list[InferencePoolPort] = Field(min_length=1, max_length=8)
    endpointPickerRef: EndpointPickerRef


class InferencePool(Lenient):
    apiVersion: str
    kind: Literal["InferencePool"]
    metadata: ObjectMeta
    spec: InferencePoolSpec
