"""An MCPRoute's securityPolicy -> who may use the route: Envoy checks an OAuth client's JWT
(ir.McpOAuth: its issuer, audiences and signing keys, and the protected resource metadata, RFC 9728,
that MCP clients discover the authorization server from); the MCP proxy checks API keys and the
authorization rules (the translator entry's oauth, client_keys and authorization).

An oauth without jwks takes the issuer's jwks_uri from its metadata, which the control plane
fetches (issuer_metadata.py; a compile reads no network): until it is known, the route is left out,
with a warning saying why. An extAuth is Envoy's to ask, after the OAuth token is checked
(ext_auth.py: ir.ExtAuth).

The route's backendSelector (which of its backends a client's session joins) is compiled here too:
its rules are authorization rules of CEL alone, which the proxy tries once per backend at initialize.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from aigw.translator.v1 import config_pb2
from aigw_contract import mcp_cel
from aigw_translator.arguments import loopback

from ..api import kinds
from ..resources import Loaded
from . import ir
from .context import CompileContext
from .ext_auth import ext_auth
from .security import referenced_secret, secret_key_value

WELL_KNOWN_RESOURCE = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class RouteSecurity:
    """What a route's securityPolicy compiles to: Envoy's part and the proxy's."""

    oauth: ir.McpOAuth | None
    proxy_oauth: config_pb2.MCPOAuth | None
    client_keys: config_pb2.MCPClientKeys | None
    authorization: config_pb2.MCPAuthorization | None
    ext_auth: ir.ExtAuth | None = None


class NotServed(Exception):
    """A securityPolicy needing what is not known yet: the route is left out (`field`, why, and the
    reason its Accepted condition gives)."""

    def __init__(self, field_path: str, message: str, reason: str) -> None:
        super().__init__(message)
        self.field_path = field_path
        self.reason = reason


def route_security(ctx: CompileContext, loaded: Loaded[Any], path: str) -> RouteSecurity | None:
    """The route's securityPolicy compiled (`path`: the route's spec.path); None when a reference
    does not resolve (an error said). NotServed when it needs what is not known yet."""
    policy: kinds.MCPRouteSecurityPolicy | None = loaded.resource.spec.securityPolicy
    if policy is None:
        return RouteSecurity(None, None, None, None)
    at = "spec.securityPolicy"
    oauth = proxy_oauth = None
    if policy.oauth is not None:
        compiled = _oauth(ctx, loaded, policy.oauth, path, f"{at}.oauth")
        if compiled is None:
            return None
        oauth, proxy_oauth = compiled
    keys = None
    if policy.apiKeyAuth is not None:
        keys = client_keys(ctx, loaded, policy.apiKeyAuth, f"{at}.apiKeyAuth")
        if keys is None:
            return None
    authorization = None
    if policy.authorization is not None:
        authorization = _authorization(ctx, loaded, policy.authorization, f"{at}.authorization")
        if authorization is None:
            return None
    checked = None
    if policy.extAuth is not None:
        checked = ext_auth(ctx, loaded, policy.extAuth, f"{at}.extAuth")
        if checked is None:
            return None
    return RouteSecurity(oauth, proxy_oauth, keys, authorization, checked)


def metadata_url(resource: str) -> str:
    """Where RFC 9728 puts the protected resource metadata of `resource`: the well-known path at its
    host, followed by its path (a trailing slash dropped)."""
    parts = urllib.parse.urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_RESOURCE}{parts.path.rstrip('/')}"


def _oauth(
    ctx: CompileContext, loaded: Loaded[Any], oauth: kinds.MCPRouteOAuth, path: str, at: str
) -> tuple[ir.McpOAuth, config_pb2.MCPOAuth] | None:
    local_jwks = None
    jwks_uri, jwks_cache_s = None, None
    if oauth.jwks is None:
        jwks_uri = _discovered_jwks_uri(ctx, oauth.issuer, f"{at}.jwks")
    else:
        keys = signing_keys(ctx, loaded, oauth.jwks.remoteJWKS, oauth.jwks.localJWKS, f"{at}.jwks")
        if keys is None:
            return None
        jwks_uri, jwks_cache_s, local_jwks = keys
    if oauth.jwks is None and not https_or_loopback(oauth.issuer):
        ctx.warn(
            "the issuer's metadata, which names the signing keys, is fetched in clear text: whoever is on the way "
            "can name keys of their own (use the issuer's https URL, or give jwks)",
            loaded,
            f"{at}.issuer",
        )
    elif jwks_uri is not None and not https_or_loopback(jwks_uri):
        where = f"{at}.jwks.remoteJWKS.uri" if oauth.jwks is not None else f"{at}.issuer"
        ctx.warn(
            f"the signing keys are fetched in clear text ({jwks_uri}): whoever is on the way can give Envoy keys "
            "of their own (use the issuer's https URI)",
            loaded,
            where,
        )
    if not oauth.audiences:
        ctx.warn(
            "no audiences: Envoy accepts the issuer's tokens for any audience (the MCP specification asks a "
            f"server to accept only tokens meant for it: list {oauth.protectedResourceMetadata.resource} or the "
            "audience the issuer gives its tokens)",
            loaded,
            f"{at}.audiences",
        )
    metadata = oauth.protectedResourceMetadata
    url = metadata_url(metadata.resource)
    resource_path = urllib.parse.urlsplit(metadata.resource).path.rstrip("/") or "/"
    if resource_path != (path.rstrip("/") or "/"):
        ctx.warn(
            f"the resource's path is {resource_path}, and clients reach this route at {path}: an MCP client checks "
            "that the resource it is told of is the URL it connects to (set resource to that URL)",
            loaded,
            f"{at}.protectedResourceMetadata.resource",
        )
    document: dict[str, Any] = {
        "resource": metadata.resource,
        "authorization_servers": [oauth.issuer],
        "bearer_methods_supported": ["header"],
    }
    optional = {
        "resource_name": metadata.resourceName,
        "scopes_supported": metadata.scopesSupported,
        "resource_signing_alg_values_supported": metadata.resourceSigningAlgValuesSupported,
        "resource_documentation": metadata.resourceDocumentation,
        "resource_policy_uri": metadata.resourcePolicyUri,
    }
    document.update((key, value) for key, value in optional.items() if value)
    envoy_part = ir.McpOAuth(
        issuer=oauth.issuer,
        audiences=tuple(oauth.audiences),
        jwks_uri=jwks_uri,
        jwks_cache_s=jwks_cache_s,
        local_jwks=local_jwks,
        metadata_path=urllib.parse.urlsplit(url).path,
        metadata=json.dumps(document, separators=(",", ":")),
        metadata_url=url,
        scopes=tuple(metadata.scopesSupported),
    )
    proxy_part = config_pb2.MCPOAuth(
        resource_metadata_url=url,
        claim_headers=[config_pb2.MCPClaimHeader(claim=c.claim, header=c.header) for c in oauth.claimToHeaders],
    )
    return envoy_part, proxy_part


def _discovered_jwks_uri(ctx: CompileContext, issuer: str, at: str) -> str:
    """The jwks_uri of the issuer's metadata, as the control plane learnt it; NotServed while it is
    not known (being fetched, or the fetch failed: it is tried again)."""
    learnt = ctx.issuers.get(issuer)
    if learnt is not None and learnt.jwks_uri:
        return learnt.jwks_uri
    if learnt is None or not learnt.problem:
        message = f"no jwks, and the jwks_uri of {issuer} is being fetched from its metadata (served once it is known)"
        raise NotServed(at, message, "IssuerMetadataPending")
    message = (
        f"no jwks, and the jwks_uri of {issuer} is not known: {learnt.problem} (run and serve ask again until "
        "the issuer answers; or set jwks.remoteJWKS.uri)"
    )
    raise NotServed(at, message, "IssuerMetadataUnavailable")


def signing_keys(
    ctx: CompileContext, loaded: Loaded[Any], remote: kinds.RemoteJWKS | None, local: kinds.LocalJWKS | None, at: str
) -> tuple[str | None, float | None, str | None] | None:
    """(where Envoy fetches the keys, for how long it keeps them, or the keys themselves) of a
    remoteJWKS or a localJWKS at `at`; None when the local keys are not good (an error said)."""
    if local is not None:
        text = _local_jwks(ctx, loaded, local, f"{at}.localJWKS")
        return None if text is None else (None, None, text)
    assert remote is not None
    return remote.uri, kinds.parse_duration(remote.cacheDuration) if remote.cacheDuration else None, None


def https_or_loopback(uri: str) -> bool:
    parts = urllib.parse.urlsplit(uri)
    return parts.scheme == "https" or loopback(parts.hostname or "")


def _local_jwks(ctx: CompileContext, loaded: Loaded[Any], local: kinds.LocalJWKS, at: str) -> str | None:
    """The key set's JSON, checked to be one (Envoy would take a broken one and refuse every token)."""
    text = local.inline
    where = f"{at}.inline"
    if local.valueRef is not None:
        where = f"{at}.valueRef"
        holder = ctx.lookup("ConfigMap", loaded.key.namespace, local.valueRef.name)
        if holder is None:
            ctx.error(ctx.absent("ConfigMap", loaded.key.namespace, local.valueRef.name), loaded, f"{where}.name")
            return None
        data: dict[str, str] = holder.resource.data
        text = data.get("jwks", next(iter(data.values()), None) if len(data) == 1 else None)
        if text is None:
            ctx.error(f"ConfigMap {holder.key.ref} has no key jwks (nor a single key)", loaded, f"{where}.name")
            return None
    assert text is not None
    try:
        keys = json.loads(text).get("keys")
    except (ValueError, AttributeError):
        keys = None
    if not isinstance(keys, list) or not keys or not all(isinstance(key, dict) for key in keys):
        ctx.error("not a JSON Web Key Set: a JSON object whose keys list holds the keys", loaded, where)
        return None
    private = sorted({member for key in keys for member in _PRIVATE_JWK_MEMBERS if member in key})
    if private:
        ctx.error(
            f"a key holds private or secret parts ({', '.join(private)}): give the issuer's public keys only "
            "(Envoy needs no more, and its configuration holds no secret: a symmetric key is one)",
            loaded,
            where,
        )
        return None
    return text


# JWK members of a private key (RFC 7518 §6.2.2, §6.3.2, §6.4): an RSA or EC key's, an oct key's.
_PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def client_keys(
    ctx: CompileContext, loaded: Loaded[Any], auth: kinds.APIKeyAuth, at: str
) -> config_pb2.MCPClientKeys | None:
    keys: dict[str, str] = {}  # client id -> key; of two Secrets naming a client, the first is kept
    for index, ref in enumerate(auth.credentialRefs):
        where = f"{at}.credentialRefs[{index}]"
        secret_loaded = referenced_secret(ctx, loaded, ref, where)
        if secret_loaded is None:
            return None
        client_ids = sorted(secret_loaded.resource.keys())
        if not client_ids:
            ctx.error(f"Secret {secret_loaded.key.ref} holds no key: no client could authenticate", loaded, where)
            return None
        for client_id in client_ids:
            value = secret_key_value(ctx, loaded, secret_loaded, client_id, where)
            if value is None:
                return None
            other = next((known for known, key in keys.items() if key == value and known != client_id), None)
            if other is not None:  # (Envoy's api_key_auth refuses such a list too)
                ctx.error(f"clients {other} and {client_id} have the same key: give each its own", loaded, where)
                return None
            keys.setdefault(client_id, value)
    sources: list[config_pb2.MCPKeySource] = []
    for extract in auth.extractFrom:
        sources += [config_pb2.MCPKeySource(header=name) for name in extract.headers]
        sources += [config_pb2.MCPKeySource(query_param=name) for name in extract.params]
        sources += [config_pb2.MCPKeySource(cookie=name) for name in extract.cookies]
    return config_pb2.MCPClientKeys(
        keys=[config_pb2.MCPClientKey(client_id=client, key=key) for client, key in keys.items()],
        sources=sources,
        client_id_header=auth.forwardClientIDHeader or "",
        sanitize=bool(auth.sanitize),
    )


def backend_selector(
    ctx: CompileContext, loaded: Loaded[Any], selector: kinds.MCPBackendSelector
) -> config_pb2.MCPAuthorization | None:
    """The route's backendSelector as the MCP proxy tries it on each backend when a client
    initializes a session; None when an expression cannot be a rule's (an error said)."""
    at = "spec.backendSelector"
    rules: list[config_pb2.MCPAuthorizationRule] = []
    for index, rule in enumerate(selector.rules):
        where = f"{at}.rules[{index}].cel"
        if rule.cel is not None and (problem := mcp_cel.problem(rule.cel)) is not None:
            ctx.error(f"not a CEL expression of the rule: {problem}", loaded, where)
            return None
        if rule.cel is not None and (unset := mcp_cel.unset_at_selection(rule.cel)) is not None:
            # (Envoy AI Gateway takes such a rule, its value empty too: served as written.)
            message = f"{unset} is empty when backends are selected (a session's start, before any call)"
            ctx.warn(f"{message}: only request.mcp.backend is set", loaded, where)
        rules.append(config_pb2.MCPAuthorizationRule(cel=rule.cel or "", deny=rule.action == "Deny"))
    if selector.defaultAction == "Deny" and not any(rule.action == "Allow" for rule in selector.rules):
        message = "no rule allows a backend and the default is Deny: every client's initialize is refused"
        ctx.warn(message, loaded, f"{at}.rules" if selector.rules else f"{at}.defaultAction")
    return config_pb2.MCPAuthorization(rules=rules, default_allow=selector.defaultAction == "Allow")


def _authorization(
    ctx: CompileContext, loaded: Loaded[Any], authorization: kinds.MCPRouteAuthorization, at: str
) -> config_pb2.MCPAuthorization | None:
    backends = {ref.name for ref in loaded.resource.spec.backendRefs}
    rules: list[config_pb2.MCPAuthorizationRule] = []
    for index, rule in enumerate(authorization.rules):
        where = f"{at}.rules[{index}]"
        tools = rule.target.tools if rule.target is not None else []
        for tool_index, tool in enumerate(tools):
            if tool.backend not in backends:
                ctx.error(
                    f"backend {tool.backend} is not a backendRef of this MCPRoute ({', '.join(sorted(backends))})",
                    loaded,
                    f"{where}.target.tools[{tool_index}].backend",
                )
                return None
        if rule.cel is not None and (problem := mcp_cel.problem(rule.cel)) is not None:
            ctx.error(f"not a CEL expression of the rule: {problem}", loaded, f"{where}.cel")
            return None
        jwt = rule.source.jwt if rule.source is not None else None
        rules.append(
            config_pb2.MCPAuthorizationRule(
                scopes=jwt.scopes if jwt is not None else [],
                claims=[
                    config_pb2.MCPClaimMatch(name=c.name, array=c.valueType == "StringArray", values=c.values)
                    for c in (jwt.claims if jwt is not None else [])
                ],
                tools=[config_pb2.MCPToolRef(backend=t.backend, tool=t.tool) for t in tools],
                cel=rule.cel or "",
                deny=rule.action == "Deny",
            )
        )
    return config_pb2.MCPAuthorization(rules=rules, default_allow=authorization.defaultAction == "Allow")
