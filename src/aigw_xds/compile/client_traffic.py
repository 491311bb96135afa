"""A Gateway's ClientTrafficPolicies (Envoy Gateway's gateway.envoyproxy.io/v1alpha1): what its
listeners take of them (ir.ClientTraffic, per port), as Envoy Gateway renders each field. Per
listener, the oldest policy naming it applies whole, else the oldest naming the Gateway; each field
aigw-xds does not implement is warned about, but none that checks client certificates is left out
(an error). docs/client-traffic.md."""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

import aigw_contract as contract
from aigw_translator.endpoints import resolve_path

from ..api import kinds
from ..api.kinds import parse_duration, parse_quantity
from ..api.spelling import CLOSENESS, typo_of
from ..keys import ResourceKey
from ..resources import Loaded
from . import ir
from .context import CompileContext
from .pem import certificates_only, expired_revocation_lists, revocation_lists_only
from .traffic import oldest_first, outranked

Ports = dict[int, list[tuple[int, kinds.GatewayListener]]]  # the Gateway's listeners by port (as written)


def client_traffic(ctx: CompileContext, gateway: Loaded[Any], ports: Ports) -> dict[int, ir.ClientTraffic]:
    """What each port's listener takes of the Gateway's ClientTrafficPolicies: the oldest naming its
    Gateway listeners (sectionName), else the oldest naming the Gateway (then by namespace/name, as
    Envoy Gateway chooses; the others are said not to apply): its connections' limits, where its
    clients' addresses come from behind proxies in front (clientIPDetection), its HTTP timeouts,
    headers, HTTP/1 and HTTP/2 settings, TLS and keepalives. Each field it has that aigw-xds does
    not implement is warned about; the rest applies."""
    policies_meant_for(ctx, gateway, "ClientTrafficPolicy")
    chosen = _chosen(ctx, gateway, ports)
    made: dict[ResourceKey, ir.ClientTraffic] = {}
    out = {}
    for port, policy in chosen.items():
        if policy is None:
            out[port] = ir.ClientTraffic()
            continue
        if policy.key not in made:
            https = any(ports[p][0][1].protocol == "HTTPS" for p, chose in chosen.items() if chose is policy)
            made[policy.key] = _settings(ctx, gateway, policy, https)
        out[port] = _for_port(made[policy.key], ports[port])
    governs: dict[ResourceKey, list[str]] = {}  # (a policy another one beats is Conflicted: _chosen)
    for port, policy in chosen.items():
        if policy is not None:
            governs.setdefault(policy.key, []).extend(listener.name for _, listener in ports[port])
    for key, names in governs.items():
        problem = next((d for d in ctx.diagnostics if d.is_error and d.resource == key), None)
        if problem is not None:
            ctx.status.set(key, "Accepted", False, "Invalid", problem.detail)
        else:
            listeners = f"listener{'s' if len(names) > 1 else ''} {', '.join(sorted(names))}"
            ctx.status.set(key, "Accepted", True, "Accepted", f"applies to {listeners} of Gateway {gateway.key.ref}")
    return out


def policies_meant_for(ctx: CompileContext, gateway: Loaded[Any], kind: str) -> None:
    """An error on the Gateway for each policy of `kind` (one whose targets have `targets`) of a
    file naming, in its namespace, a Gateway that is not there by a name close to its own (`secur`
    for `secure`): a typo, whose Gateway is not served without it (a ClientTrafficPolicy's HTTPS
    listeners would take clients without the certificates asked for; a SecurityPolicy's, clients it
    meant to check). (From the Kubernetes API, a policy may name a Gateway yet to come: it applies
    to nothing meanwhile.)"""
    namespace, name = gateway.key.namespace, gateway.key.name
    for policy in ctx.resources.of_kind(kind):
        if policy.key.namespace != namespace or policy.origin.from_api_server:
            continue
        for path, ref in policy.resource.spec.targets:
            if ref.kind != "Gateway":
                continue
            missing = ref.name != name and ctx.resources.get("Gateway", namespace, ref.name) is None
            if missing and difflib.get_close_matches(ref.name, [name], n=1, cutoff=CLOSENESS):
                ctx.use(policy)
                ctx.error(
                    f"{policy.key} names Gateway {namespace}/{ref.name} ({path}), which is not there: if it is "
                    "meant for this one, this one is not to be served without it",
                    gateway,
                )


def _chosen(ctx: CompileContext, gateway: Loaded[Any], ports: Ports) -> dict[int, Loaded[Any] | None]:
    """Each port's policy: the one naming its listeners, else the Gateway's (None: none). A port's
    listeners share Envoy's settings: a policy naming one of them names them all."""
    gw: kinds.Gateway = gateway.resource
    listener_names = {listener.name for listener in gw.spec.listeners}
    # The policies whose targetSelectors take the Gateway by its labels, as those naming it.
    whole: list[Loaded[Any]] = [
        policy
        for policy in ctx.resources.of_kind("ClientTrafficPolicy")
        if policy.key.namespace == gateway.key.namespace
        and any(s.selects(gw.metadata.labels) for s in policy.resource.spec.targetSelectors)
    ]
    by_section: dict[str, list[Loaded[Any]]] = {}
    for policy in ctx.resources.policies_for("ClientTrafficPolicy", gateway.key):
        for path, ref in policy.resource.spec.targets:
            if ref.kind != "Gateway" or ref.name != gateway.key.name:
                continue
            if ref.sectionName is None:
                whole.append(policy)
            elif ref.sectionName in listener_names:
                by_section.setdefault(ref.sectionName, []).append(policy)
            else:
                missing = f"Gateway {gateway.key.ref} has no listener {ref.sectionName}"
                ctx.error(missing, policy, f"{path}.sectionName")
                ctx.status.set(policy.key, "Accepted", False, "Invalid", f"{path}.sectionName: {missing}")
    whole = oldest_first(whole)
    by_section = {section: oldest_first(policies) for section, policies in by_section.items()}
    for policy in [*whole, *(p for policies in by_section.values() for p in policies)]:
        ctx.use(policy)
    for target, candidates in ((f"Gateway {gateway.key.ref}", whole), *by_section.items()):
        for other in candidates[1:]:
            where = target if candidates is whole else f"listener {target} of Gateway {gateway.key.ref}"
            message = outranked("ClientTrafficPolicy", candidates[0], where)
            ctx.warn(message, other, "spec.targetRefs")
            ctx.status.set(other.key, "Accepted", False, "Conflicted", message)
    out: dict[int, Loaded[Any] | None] = {}
    for port, group in ports.items():
        named = {listener.name: by_section[listener.name][0] for _, listener in group if listener.name in by_section}
        section = next(iter(named.values()), None)
        if section is not None and (len(named) < len(group) or any(p is not section for p in named.values())):
            shared = ", ".join(sorted(listener.name for _, listener in group))
            ctx.error(
                f"listeners {shared} of Gateway {gateway.key.ref} share port {port}, whose connections take one "
                "policy's settings: a policy naming one of them names them all (or the Gateway)",
                section,
                "spec.targetRefs",
            )
        out[port] = section or (whole[0] if whole else None)
    if whole:
        _say_overridden(ctx, gateway, whole[0], ports, out)
    return out


def _say_overridden(
    ctx: CompileContext,
    gateway: Loaded[Any],
    policy: Loaded[Any],
    ports: Ports,
    chosen: dict[int, Loaded[Any] | None],
) -> None:
    """The Gateway's own policy, where policies naming some of its listeners apply there instead:
    an Overridden condition naming them (as Envoy Gateway's), and a warning when that is all of them
    (the policy applies to nothing)."""
    overridden = sorted(
        listener.name for port, group in ports.items() if chosen[port] is not policy for _, listener in group
    )
    if not overridden:
        return
    names = ", ".join(overridden)
    message = f"ClientTrafficPolicies naming listeners {names} of Gateway {gateway.key.ref} apply to them instead"
    ctx.status.set(policy.key, "Overridden", True, "Overridden", message)
    spec = policy.resource.spec
    elsewhere = spec.targetSelectors or len({ref.name for _, ref in spec.targets}) > 1  # may apply to another
    if not elsewhere and all(chosen[port] is not policy for port in ports):
        ctx.warn(f"this policy applies to no listener: {message}", policy, "spec.targetRefs")
        ctx.status.set(policy.key, "Accepted", True, "Accepted", f"applies to no listener of Gateway {gateway.key.ref}")


def _for_port(settings: ir.ClientTraffic, group: list[tuple[int, kinds.GatewayListener]]) -> ir.ClientTraffic:
    """The policy's settings for one port: HTTP/1.0 requests' host, its listeners' first hostname
    that is not a wildcard (else the Gateway's)."""
    http1 = settings.http1
    if http1 is None or not http1.default_host:
        return settings
    own = _named_host(listener for _, listener in group)
    return replace(settings, http1=replace(http1, default_host=own)) if own else settings


def _named_host(listeners: Iterable[kinds.GatewayListener]) -> str:
    """The first hostname of `listeners` that is not a wildcard ("" when none)."""
    return next((h for h in (listener.hostname for listener in listeners) if h and not h.startswith("*")), "")


def _settings(ctx: CompileContext, gateway: Loaded[Any], chosen: Loaded[Any], https: bool) -> ir.ClientTraffic:
    """What a policy sets (`https`: it applies to an HTTPS listener)."""
    spec: kinds.ClientTrafficPolicySpec = chosen.resource.spec
    for path in _unread_fields(spec, "spec", typos_said=not chosen.origin.from_api_server):
        if path.startswith(_TLS) and path != _FINGERPRINTS:  # (TLS settings are never left out)
            ctx.error(
                f"{path.removeprefix('spec.')} is not a tls setting aigw-xds reads: fix or remove it", chosen, path
            )
        else:
            ctx.warn(
                f"{path.removeprefix('spec.')} is not supported yet; the rest of the policy applies without it",
                chosen,
                path,
            )
    if spec.healthCheck is not None and resolve_path(spec.healthCheck.path, contract.root_prefix("/")) is not None:
        message = (
            f"{spec.healthCheck.path} is a path of the AI APIs the gateway serves: Envoy would answer every request "
            "for it itself (200, empty), none reaching a route; choose a path of its own (/healthz)"
        )
        ctx.error(message, chosen, "spec.healthCheck.path")
    connection = spec.connection or kinds.ClientConnection()
    limit = connection.connectionLimit or kinds.ConnectionLimit()
    headers = spec.headers or kinds.HeaderSettings()
    http = spec.timeout.http if spec.timeout is not None else None
    return ir.ClientTraffic(
        buffer_limit=(
            parse_quantity(connection.bufferLimit)
            if connection.bufferLimit is not None
            else contract.BUFFER_LIMIT_BYTES
        ),
        client_ip=_client_ip(spec.clientIPDetection),
        request_received_s=_seconds(http.requestReceivedTimeout) if http else 0,
        request_headers_received_s=_seconds(http.requestHeadersReceivedTimeout) if http else 0,
        idle_s=parse_duration(http.idleTimeout) if http and http.idleTimeout is not None else None,
        stream_idle_s=_seconds(http.streamIdleTimeout) if http else 0,
        envoy_headers=bool(headers.enableEnvoyHeaders),
        headers_with_underscores=headers.withUnderscoresAction,
        escaped_slashes=spec.path.escapedSlashesAction if spec.path else None,
        # (Envoy Gateway merges slashes unless told not to: so here once the policy has `path`.)
        merge_slashes=not spec.path.disableMergeSlashes if spec.path else None,
        http2=_http2(spec.http2) if spec.http2 else None,
        http1=_http1(ctx, chosen, gateway, spec.http1) if spec.http1 else None,
        tls=_tls(ctx, chosen, spec.tls, https),
        tcp_keepalive=_keepalive(spec.tcpKeepalive) if spec.tcpKeepalive else None,
        connection_limit=limit.value,
        connection_close_delay_s=parse_duration(limit.closeDelay) if limit.closeDelay else None,
        max_connection_s=parse_duration(limit.maxConnectionDuration) if limit.maxConnectionDuration else None,
        max_requests_per_connection=limit.maxRequestsPerConnection,
        max_stream_s=parse_duration(limit.maxStreamDuration) if limit.maxStreamDuration else None,
        max_accept_per_socket_event=connection.maxAcceptPerSocketEvent,
        request_id=headers.requestID or ("PreserveOrGenerate" if headers.preserveXRequestID else None),
        early_headers=_early_headers(headers.earlyRequestHeaders) if headers.earlyRequestHeaders else None,
        client_cert_mode=headers.xForwardedClientCert.mode if headers.xForwardedClientCert else None,
        client_cert_details=(
            tuple(headers.xForwardedClientCert.certDetailsToAdd) if headers.xForwardedClientCert else ()
        ),
        proxy_protocol=_proxy_protocol(spec),
        health_check_path=spec.healthCheck.path if spec.healthCheck else None,
    )


def _proxy_protocol(spec: kinds.ClientTrafficPolicySpec) -> ir.ProxyProtocol | None:
    """proxyProtocol, else the older enableProxyProtocol (Envoy Gateway's rule)."""
    if spec.proxyProtocol is not None:
        return ir.ProxyProtocol(optional=bool(spec.proxyProtocol.optional))
    return ir.ProxyProtocol() if spec.enableProxyProtocol else None


def _seconds(value: str | None) -> float:
    return parse_duration(value) if value is not None else 0


def _client_ip(detection: kinds.ClientIPDetection | None) -> ir.ClientIP | None:
    forwarded = detection.xForwardedFor if detection else None
    header = detection.customHeader if detection else None
    if forwarded is not None and (forwarded.numTrustedHops or forwarded.trustedCIDRs):
        cidrs = tuple(str(ipaddress.ip_network(c, strict=False)) for c in forwarded.trustedCIDRs or ())
        return ir.ClientIP(trusted_hops=forwarded.numTrustedHops or 0, trusted_cidrs=cidrs)
    if header is not None:
        return ir.ClientIP(header=header.name.lower(), fail_closed=header.failClosed)
    return None


def _http2(http2: kinds.HTTP2Settings) -> ir.Http2Settings:
    def window(value: str | int | None) -> int | None:
        return parse_quantity(value) if value is not None else None

    invalid = http2.onInvalidMessage
    return ir.Http2Settings(
        initial_stream_window=window(http2.initialStreamWindowSize),
        initial_connection_window=window(http2.initialConnectionWindowSize),
        max_concurrent_streams=http2.maxConcurrentStreams,
        terminate_stream_on_invalid_message=invalid == "TerminateStream" if invalid else None,
    )


def _http1(
    ctx: CompileContext, policy: Loaded[Any], gateway: Loaded[Any], http1: kinds.HTTP1Settings
) -> ir.Http1Settings:
    """HTTP/1 settings; with http10.useDefaultHost, HTTP/1.0 requests (which carry no host) go to the
    Gateway's first listener hostname that is not a wildcard, as Envoy Gateway chooses it."""
    http10 = http1.http10 is not None
    default_host = ""
    if http1.http10 is not None and http1.http10.useDefaultHost:
        gw: kinds.Gateway = gateway.resource
        default_host = _named_host(gw.spec.listeners)  # (each port's own first: _for_port)
        if not default_host:
            ctx.error(
                f"Gateway {gateway.key.ref} has no listener hostname without a wildcard for HTTP/1.0 requests' host",
                policy,
                "spec.http1.http10.useDefaultHost",
            )
    return ir.Http1Settings(
        trailers=bool(http1.enableTrailers),
        preserve_case=bool(http1.preserveHeaderCase),
        http10=http10,
        default_host=default_host,
    )


def _keepalive(keepalive: kinds.TCPKeepalive) -> ir.TcpKeepalive:
    def whole_seconds(value: str | None) -> int | None:
        return int(parse_duration(value)) if value is not None else None

    return ir.TcpKeepalive(keepalive.probes, whole_seconds(keepalive.idleTime), whole_seconds(keepalive.interval))


def _early_headers(early: kinds.EarlyRequestHeaders) -> ir.EarlyHeaders:
    """The changes, each header once (its first mention: add, then set, then addIfAbsent, as Envoy
    Gateway keeps it), names lowercase."""
    seen: set[str] = set()

    def first(headers: list[kinds.HTTPHeader]) -> tuple[tuple[str, str], ...]:
        out = []
        for header in headers:
            name = header.name.lower()
            if name not in seen:
                seen.add(name)
                out.append((name, header.value))
        return tuple(out)

    add = first(early.add)
    set_ = first(early.set)
    add_if_absent = first(early.addIfAbsent)
    remove = tuple(dict.fromkeys(name.lower() for name in early.remove))
    return ir.EarlyHeaders(set=set_, add=add, add_if_absent=add_if_absent, remove=remove)


# (require a certificate, accept one no CA signed) of each clientValidation mode (Envoy Gateway's).
_VALIDATION_MODES = {
    "Request": (False, True),
    "RequireAny": (True, True),
    "VerifyIfGiven": (False, False),
    "RequireAndVerify": (True, False),
}


def _tls(
    ctx: CompileContext, policy: Loaded[Any], tls: kinds.ClientTLSSettings | None, https: bool
) -> ir.ClientTls | None:
    """What HTTPS listeners take of the policy's tls (Envoy Gateway's defaults: TLS 1.2 to 1.3,
    session resumption off). None where it applies to no HTTPS listener: a tls there is said to
    apply to nothing."""
    if not https:
        if tls is not None:
            ctx.warn("the policy applies to no HTTPS listener: tls applies to none", policy, "spec.tls")
        return None
    tls = tls or kinds.ClientTLSSettings()
    validation = tls.clientValidation
    require, untrusted = _VALIDATION_MODES[validation.effective_mode] if validation else (False, False)
    resumption = tls.session.resumption if tls.session else None
    return ir.ClientTls(
        min_version=tls.minVersion or "1.2",
        max_version=tls.maxVersion or "1.3",
        ciphers=tuple(tls.ciphers or ()),
        ecdh_curves=tuple(tls.ecdhCurves or ()),
        signature_algorithms=tuple(tls.signatureAlgorithms or ()),
        alpn=tuple(tls.alpnProtocols) if tls.alpnProtocols is not None else None,
        client_ca=_client_ca(ctx, policy, validation) if validation else None,
        require_client_certificate=require,
        accept_untrusted=untrusted,
        spki_hashes=tuple(validation.spkiHashes) if validation else (),
        certificate_hashes=tuple(validation.certificateHashes) if validation else (),
        subject_alt_names=_san_matches(validation.subjectAltNames) if validation else (),
        allow_expired=bool(validation and validation.allowExpiredCertificate),
        stateless_resumption=bool(resumption and resumption.stateless is not None),
        stateful_resumption=bool(resumption and resumption.stateful is not None),
    )


def _san_matches(names: kinds.SubjectAltNames | None) -> tuple[ir.SanMatch, ...]:
    if names is None:
        return ()
    kinds_of = (
        ("DNS", names.dnsNames),
        ("EMAIL", names.emailAddresses),
        ("IP_ADDRESS", names.ipAddresses),
        ("URI", names.uris),
    )
    out = [ir.SanMatch(kind, m.type, m.value) for kind, matches in kinds_of for m in matches]
    out += [ir.SanMatch("OTHER_NAME", m.type, m.value, m.oid) for m in names.otherNames]
    return tuple(out)


def _client_ca(ctx: CompileContext, policy: Loaded[Any], validation: kinds.ClientValidation) -> ir.TLSValidation | None:
    """The CA bundle of caCertificateRefs (each Secret's or ConfigMap's `ca.crt`, else its only key)
    and the revocation lists of crl.refs (`ca.crl`), as one SDS secret named after the policy. None
    when it names no CA (mode Request or RequireAny) or one cannot be read (an error)."""
    where = "spec.tls.clientValidation"
    cas = _bundle(ctx, policy, validation.caCertificateRefs, f"{where}.caCertificateRefs", "ca.crt", _CERTIFICATE)
    crl = validation.crl
    crls = _bundle(ctx, policy, crl.refs, f"{where}.crl.refs", "ca.crl", _CRL) if crl is not None else ""
    if not cas or crls is None:
        return None
    for expired in expired_revocation_lists(crls, datetime.now(UTC)):
        ctx.warn(
            f"the revocation list {expired}: Envoy refuses every client certificate checked against an expired "
            "list until a renewed one is served",
            policy,
            f"{where}.crl.refs",
        )
    leaf_only = bool(crl is not None and crl.onlyVerifyLeafCertificate)
    return ir.TLSValidation(f"{policy.key.ref}/ca.crt", cas, crls, leaf_only)


# Of a bundle: its PEM block type, what it is, and what loads it (its blocks of that type alone,
# or None).
_CERTIFICATE = ("CERTIFICATE", "certificate", certificates_only)
_CRL = ("X509 CRL", "revocation list", revocation_lists_only)


def _bundle(
    ctx: CompileContext,
    policy: Loaded[Any],
    refs: list[kinds.CACertificateRef],
    path: str,
    key: str,
    pem: tuple[str, str, Callable[[str], str | None]],
) -> str | None:
    """The PEM bundles (`pem`: their block type, what it is, and what loads it) the refs' Secrets
    or ConfigMaps hold (under `key`, else their only key), each bundle once and its blocks of that
    type alone; None after an error naming the ref that cannot be read."""
    block, what, load = pem
    bundles: list[str] = []
    for index, ref in enumerate(refs):
        at = f"{path}[{index}]"
        namespace = ref.namespace or policy.key.namespace
        if not ctx.reference_allowed(policy, "gateway.envoyproxy.io", "", ref.kind, namespace, ref.name):
            ctx.error(f"{ref.kind} {namespace}/{ref.name} in another namespace needs a ReferenceGrant", policy, at)
            return None
        holder = ctx.lookup(ref.kind, namespace, ref.name)
        if holder is None:
            ctx.error(ctx.absent(ref.kind, namespace, ref.name), policy, at)
            return None
        value = _value(holder, key)
        if value is None or f"-----BEGIN {block}-----" not in value:
            ctx.error(f"{ref.kind} {holder.key.ref} holds no PEM {what} under {key} (nor as its only key)", policy, at)
            return None
        loaded = load(value)
        if loaded is None:  # (Envoy would refuse the secret, and every listener's with it)
            ctx.error(f"{ref.kind} {holder.key.ref}: {key} does not load as PEM {what}s (a corrupt block?)", policy, at)
            return None
        bundles.append(loaded)
    return "".join(dict.fromkeys(bundles))


def _value(holder: Loaded[Any], key: str) -> str | None:
    """A Secret's or ConfigMap's value of `key`, else the value of its only key."""
    if holder.key.kind == "Secret":
        secret: kinds.Secret = holder.resource
        keys = sorted({*secret.data, *secret.stringData})
        return secret.value(key) or (secret.value(keys[0]) if len(keys) == 1 else None)
    data: dict[str, str] = holder.resource.data
    return data.get(key) or (next(iter(data.values())) if len(data) == 1 else None)


# Of Envoy Gateway's tls, aigw-xds leaves out only the fingerprints (JA3/JA4, for logs): any other
# field there it does not read (`validation` for clientValidation) would serve the listener without
# the TLS its author asked for.
_TLS, _FINGERPRINTS = "spec.tls.", "spec.tls.fingerprints"


def _unread_fields(model: BaseModel, path: str, typos_said: bool) -> list[str]:
    """The paths of the fields of a policy (a model whose kinds keep fields they do not have) that
    its model does not have, at any depth: what aigw-xds does not implement of it. `typos_said`:
    those close to one it has were said to be typos of it (api/spelling.py: a file's; the Kubernetes
    API keeps only the fields of the installed CRD), and are not listed."""
    out = [f"{path}.{name}" for name in model.model_extra or {} if not (typos_said and typo_of(type(model), name))]
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.extend(_unread_fields(value, f"{path}.{name}", typos_said))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out.extend(_unread_fields(item, f"{path}.{name}[{index}]", typos_said))
    return out
