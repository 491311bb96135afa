"""The intermediate representation of one Gateway: everything the xDS builder needs, resolved, with
defaults applied. Immutable and ordered, so equal inputs give equal IR. Fields that hold a secret
(a TLS private key, the translator config with its credentials) are left out of repr."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property
from itertools import chain
from typing import Any, Literal

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.config_parts import make_whole

from ..keys import ResourceKey
from ..runs import Run
from ..wire import Serialized
from .backend_traits import FleetBackends


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: Literal["fqdn", "ip", "unix"]
    address: str  # hostname, IP address or socket path
    port: int = 0


@dataclass(frozen=True)
class UpstreamTLS:
    sni: str
    # PEM bundle of trusted CAs; None means the system trust store.
    ca_pem: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str
    value: str
    regex: bool = False


@dataclass(frozen=True, slots=True)
class BackendTarget:
    """One backendRef of one rule: a locality of the rule's cluster."""

    name: str  # "<ns>/<backend>/route/<route>/rule/<i>/ref/<j>", stamped on endpoints
    endpoints: tuple[Endpoint, ...]
    upstream_host: str
    weight: int
    priority: int
    tls: UpstreamTLS | None = None
    # "<ns>/<service>:<port>" when the endpoints are a Kubernetes Service's (its ready EndpointSlice
    # endpoints, which come and go with its pods): the Service, not its pods' addresses, is then
    # what the target reaches. "" for a Backend.
    service: str = ""
    # The HTTP CONNECT proxy Envoy reaches the target through (its Gateway's GatewayConfig
    # forwardProxy), asking it for upstream_host at the endpoint's port; None: reached directly.
    proxy: Endpoint | None = None


@dataclass(frozen=True)
class Retry:
    """A BackendTrafficPolicy's retry, resolved: what the rule's routes' RetryPolicy says."""

    num_retries: int
    retry_on: tuple[str, ...]
    retriable_status_codes: tuple[int, ...] = ()
    # Attempts sent to one priority before the next (previous_priorities update_frequency); 0:
    # every attempt goes to the highest healthy priority.
    attempts_per_priority: int = 0
    per_try_timeout_s: float | None = None
    backoff_base_s: float | None = None
    backoff_max_s: float | None = None


@dataclass(frozen=True)
class CircuitBreaker:
    """Thresholds of the rule's cluster (None: Envoy Gateway's default, 1024, set by the build)."""

    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_parallel_requests: int | None = None
    max_parallel_retries: int | None = None
    max_requests_per_connection: int | None = None


@dataclass(frozen=True)
class HashInput:
    """What a consistent hash reads of a request (the rule's routes' hash policy)."""

    kind: Literal["source_ip", "header", "cookie", "query_parameter"]
    name: str = ""
    cookie_ttl_s: float | None = None  # a cookie Envoy makes when the request has none
    cookie_attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LoadBalancing:
    """A BackendTrafficPolicy's loadBalancer: how the cluster picks an endpoint within a backend's
    locality (the backendRefs' weights still split the traffic between localities)."""

    policy: Literal["RoundRobin", "LeastRequest", "Random", "ConsistentHash"]
    slow_start_window_s: float | None = None
    table_size: int | None = None  # ConsistentHash (Maglev)
    hash_on: tuple[HashInput, ...] = ()  # ConsistentHash


@dataclass(frozen=True)
class OutlierDetection:
    """A BackendTrafficPolicy's healthCheck.passive, Envoy Gateway's defaults applied."""

    interval_s: float
    base_ejection_time_s: float
    consecutive_5xx: int
    consecutive_local_origin_failures: int
    split_external_local_origin_errors: bool
    max_ejection_percent: int
    consecutive_gateway_errors: int | None = None
    failure_percentage_threshold: int | None = None
    always_eject_one: bool = False


@dataclass(frozen=True)
class ActiveHealthCheck:
    """A BackendTrafficPolicy's healthCheck.active, Envoy Gateway's defaults applied."""

    kind: Literal["HTTP", "TCP"]
    timeout_s: float
    interval_s: float
    unhealthy_threshold: int
    healthy_threshold: int
    initial_jitter_s: float | None = None
    path: str = ""  # HTTP
    method: str = ""  # HTTP; "" is GET
    # HTTP: the Host header; "" sends each endpoint's backend host (its Backend's hostname).
    host: str = ""
    expected_statuses: tuple[int, ...] = ()  # HTTP; () is 200
    retriable_statuses: tuple[int, ...] = ()  # HTTP
    send: bytes | None = None  # HTTP body or TCP payload
    receive: bytes | None = None  # expected in the answer (HTTP body, TCP)


@dataclass(frozen=True)
class TrafficPolicy:
    """The BackendTrafficPolicy that applies to a rule (compile/traffic.py picks it)."""

    name: str  # "<ns>/<policy>"
    retry: Retry | None = None
    connect_timeout_s: float | None = None
    connection_idle_timeout_s: float | None = None
    max_connection_duration_s: float | None = None
    max_stream_duration_s: float | None = None
    circuit_breaker: CircuitBreaker | None = None
    load_balancing: LoadBalancing | None = None
    outlier_detection: OutlierDetection | None = None
    active_health_check: ActiveHealthCheck | None = None
    panic_threshold: int | None = None  # % of healthy endpoints; None: Envoy's default, 50


@dataclass(frozen=True, slots=True)
class EndpointPicker:
    """An InferencePool's endpoint picker (Gateway API Inference Extension): the ext_proc service
    Envoy asks, for each request of a rule sending to the pool, which of the pool's pods serves it.
    It answers with the pod's address in a header (x-gateway-destination-endpoint), which the rule's
    cluster (ORIGINAL_DST) connects to."""

    pool: str  # "<ns>/<pool>"
    cluster: str  # the picker's own cluster: "aigw-epp/<ns>/<pool>"
    endpoints: tuple[Endpoint, ...]  # the picker Service's ready endpoints
    sni: str  # the name its (self-signed, not verified) TLS certificate is asked for: "<svc>.<ns>.svc"


@dataclass(frozen=True)
class Rule:
    route: str  # "<ns>/<route>"
    index: int
    cluster: str  # "<ns>/<route>/rule/<i>"
    # OR of ANDs: each entry is one match (all its headers must match). Empty: match every request.
    matches: tuple[tuple[HeaderMatch, ...], ...]
    backends: tuple[BackendTarget, ...]
    timeout_s: float
    idle_timeout_s: float | None = None
    traffic: TrafficPolicy | None = None
    # False when no rule timeout or policy asked for timeout_s (it is the 60 s default): it then
    # applies per attempt as an idle timeout (no byte for that long), never as a cap on a whole
    # healthy stream; True: timeout_s caps the whole response (0: no cap).
    timeout_caps_response: bool = True
    # Ids of the budgets (TranslatorConfig.rate_limits) of the BackendTrafficPolicy that applies to
    # the rule (its rateLimit.global rules), sorted: the router phase admits and charges them.
    rate_limit_ids: tuple[str, ...] = ()
    # A rule whose backendRef is an InferencePool: its one backend has no endpoints; the pool's
    # picker names the pod of each request.
    picker: EndpointPicker | None = None

    @property
    def priorities(self) -> int:
        return len({b.priority for b in self.backends})

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.backends)

    def __hash__(self) -> int:
        # The build memoizes a rule's routes and cluster on the rule.
        return hash_once(self)


def hash_once(instance: Any) -> int:
    """A frozen dataclass's hash over its fields, computed once per instance: functools caches hash
    their arguments on every call, and the build's are called for every rule of every compile. It is
    kept as an attribute, set as its fields were: an item put in the instance's __dict__ would turn
    the dictionary its class's instances share the keys of into one of its own (700 bytes more for
    a rule, 7 MB at 10,000 routes). CPython 3.11 leaves room in a class's shared keys for one
    attribute set after __init__: a second one set lazily would unshare every instance's again. A
    class with slots has a `_hash` field of its own (init=False, compare=False), left out here."""
    cached: int | None = getattr(instance, "_hash", None)
    if cached is None:
        cls = type(instance)
        names = _HASHED_FIELDS.get(cls)
        if names is None:  # dataclasses.fields() walks the class's fields anew at every call
            names = _HASHED_FIELDS[cls] = tuple(f.name for f in fields(instance) if f.name != "_hash")
        cached = hash(tuple(getattr(instance, name) for name in names))
        object.__setattr__(instance, "_hash", cached)
    return cached


_HASHED_FIELDS: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class McpOAuth:
    """An MCPRoute's clients present an OAuth access token (a JWT) that Envoy verifies; the route's
    protected resource metadata (RFC 9728) tells them where to get one."""

    issuer: str
    audiences: tuple[str, ...]
    jwks_uri: str | None  # where Envoy fetches the signing keys, or
    jwks_cache_s: float | None
    local_jwks: str | None  # the keys themselves (JSON)
    metadata_path: str  # where the metadata is served
    metadata: str  # its JSON
    metadata_url: str  # what the challenge names
    scopes: tuple[str, ...]  # what the challenge asks for


@dataclass(frozen=True, slots=True)
class JwtProvider:
    """One of a SecurityPolicy's JWT providers, as Envoy's jwt_authn checks it."""

    name: str  # its name in its policy
    issuer: str  # "": not checked
    audiences: tuple[str, ...]  # (): not checked
    jwks_uri: str | None  # where Envoy fetches the signing keys, or
    jwks_cache_s: float | None
    local_jwks: str | None  # the keys themselves (JSON)
    claim_to_headers: tuple[tuple[str, str], ...] = ()  # (header, claim)
    recompute_route: bool = False
    # The headers the token is read from (none: Authorization's Bearer token).
    headers: tuple[tuple[str, str], ...] = ()  # (name, value prefix)


@dataclass(frozen=True, slots=True)
class Cors:
    """A SecurityPolicy's CORS: the web pages whose scripts may call, and what they may send and read."""

    allow_origins: tuple[str, ...]  # "*", or scheme://host[:port], the host maybe "*."-prefixed
    allow_methods: tuple[str, ...]
    allow_headers: tuple[str, ...]
    expose_headers: tuple[str, ...]
    max_age_s: int | None
    allow_credentials: bool


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    """One rule of a SecurityPolicy's authorization: `allow` (else deny) when every condition given
    matches: the method is one of `methods`, the client's address in one of `cidrs`, the token of
    the policy's provider `jwt_provider` has each of `claims` ((dotted name, a list, values) of
    which one matches) and each of `scopes`, each of `headers` ((name, values) of which one
    matches)."""

    name: str
    allow: bool
    methods: tuple[str, ...] = ()
    cidrs: tuple[str, ...] = ()
    jwt_provider: str = ""
    claims: tuple[tuple[str, bool, tuple[str, ...]], ...] = ()
    scopes: tuple[str, ...] = ()
    headers: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Authorization:
    """A SecurityPolicy's authorization: the first rule that matches decides, else `default_allow`."""

    rules: tuple[AuthorizationRule, ...] = ()
    default_allow: bool = False


@dataclass(frozen=True, slots=True)
class ClientChecks:
    """What one SecurityPolicy has Envoy check of the requests it applies to: a JWT (any of the
    providers; `optional`: none at all passes too; `fail_open`: a bad one too), CORS, and who may
    pass (authorization)."""

    name: str  # "<ns>/<policy>"
    jwt: tuple[JwtProvider, ...] = ()
    optional: bool = False
    fail_open: bool = False
    cors: Cors | None = None
    # A client key of its apiKeyAuth (checked by the translator, which holds the keys), and the
    # header its client's id is written to ("": none).
    api_keys: bool = False
    client_id_header: str = ""
    # Where its keys are read from: ("header" or "query_param", name).
    key_sources: tuple[tuple[str, str], ...] = ()
    authorization: Authorization | None = None

    @property
    def claim_headers(self) -> tuple[str, ...]:
        """The request headers its JWT's claims and its client's id are written to (a client's own
        values go first)."""
        names = [header.lower() for p in self.jwt for header, _ in p.claim_to_headers]
        return tuple(dict.fromkeys([*names, *([self.client_id_header.lower()] if self.client_id_header else [])]))

    @property
    def credential_headers(self) -> tuple[str, ...]:
        """The request headers its tokens and keys are read from (a token without extractFrom, from
        Authorization)."""
        tokens = [name.lower() for p in self.jwt for name, _ in p.headers or (("authorization", ""),)]
        keys = [name.lower() for kind, name in self.key_sources if kind == "header"]
        return tuple(dict.fromkeys([*tokens, *keys]))

    @property
    def reads_credentials(self) -> bool:
        """Whether it reads a token or a key off the request."""
        return bool(self.jwt) or self.api_keys

    @property
    def checks_client(self) -> bool:
        """Whether it asks who the client is (a JWT, a key) or what the client may do
        (authorization): not only CORS."""
        return self.reads_credentials or self.authorization is not None


@dataclass(frozen=True, slots=True)
class HostChecks:
    """The SecurityPolicies of a virtual host's requests: its own (its Gateway listener's, or its
    Gateway's), and its routes' (by Rule.route), each in place of the host's for its rules."""

    host: str  # the virtual host's name
    checks: ClientChecks | None = None
    route_checks: tuple[tuple[str, ClientChecks], ...] = ()
    # Whether a rule of the host asks for other checks than the host does (a policy of its own that
    # checks the client: then a request the router phase routes again is checked again there:
    # xds/client_checks.py).
    again: bool = False

    @classmethod
    def of(
        cls, host: str, checks: ClientChecks | None, route_checks: tuple[tuple[str, ClientChecks], ...]
    ) -> HostChecks:
        own = checks.name if checks is not None and checks.checks_client else None
        again = any((c.name if c.checks_client else None) != own for _, c in route_checks)
        return cls(host, checks, route_checks, again)

    @property
    def every_checks(self) -> tuple[ClientChecks, ...]:
        """The policies, the host's own first."""
        own = (self.checks,) if self.checks is not None else ()
        return own + tuple(checks for _, checks in self.route_checks)


@dataclass(frozen=True, slots=True)
class ExtAuth:
    """An external authorization service Envoy asks whether each request of a route may pass
    (Envoy Gateway's ExtAuth, resolved): its own filter and cluster, named after `name`."""

    name: str  # "<ns>/<route>": the filter's and the cluster's name end with it
    grpc: bool  # Envoy's Authorization service over gRPC; else an HTTP service
    targets: tuple[BackendTarget, ...]  # the cluster's localities
    authority: str  # the Host (HTTP) or :authority (gRPC) of the check requests
    timeout_s: float
    retry: Retry | None = None
    connect_timeout_s: float | None = None
    circuit_breaker: CircuitBreaker | None = None
    fail_open: bool = False
    recompute_route: bool = False
    route_metadata: bool = False  # the route's identity sent along (includeRouteMetadata)
    headers_to_ext_auth: tuple[str, ...] = ()
    max_request_bytes: int | None = None  # the body sent too, up to this size
    status_on_error: int | None = None
    context_extensions: tuple[tuple[str, str], ...] = ()
    path_prefix: str = ""  # HTTP: before the client's path
    path_override: str = ""  # HTTP: in place of the client's path
    headers_to_backend: tuple[str, ...] = ()  # HTTP: the answer's headers set on the request


@dataclass(frozen=True, slots=True)
class McpRoute:
    """An MCPRoute in a virtual host: Envoy sends the requests it matches to the translator's MCP
    proxy, naming the route (its backends are in the translator configuration's mcp_routes)."""

    fleet: str  # "<ns>/<gateway>"
    name: str  # "<ns>/<mcproute>"
    path: str
    headers: tuple[HeaderMatch, ...] = ()
    oauth: McpOAuth | None = None
    ext_auth: ExtAuth | None = None
    # A route whose clients sign in (OAuth, API keys): the request headers a browser page may send
    # it besides MCP's own (its key's, those its backends are forwarded); None: an open route (no CORS).
    cors_headers: tuple[str, ...] | None = None
    # It has a securityPolicy of its own, which takes the place of its Gateway's SecurityPolicy, and
    # where that reads its clients' keys: ("header" or "query_param", name), which the Gateway's
    # removal of its own policies' credentials leaves (xds/client_checks.py).
    secured: bool = False
    own_credentials: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    rules: tuple[Rule, ...]
    # The same rules in runs (runs.py), as the compile merged its routes: the build keeps what it
    # makes of each run. How they are cut is not part of what the host is (not compared).
    runs: tuple[Run[Rule], ...] = field(default=(), compare=False, repr=False)
    # The MCPRoutes of the host, tried before its rules.
    mcp_routes: tuple[McpRoute, ...] = ()
    # The SecurityPolicies of its requests (None: none).
    client_checks: HostChecks | None = None

    @classmethod
    def of(
        cls,
        name: str,
        domains: tuple[str, ...],
        rule_runs: tuple[Run[Rule], ...],
        mcp_routes: tuple[McpRoute, ...] = (),
        client_checks: HostChecks | None = None,
    ) -> VirtualHost:
        rules = tuple(chain.from_iterable(rule_runs))
        return cls(name, domains, rules, rule_runs, mcp_routes, client_checks)


@dataclass(frozen=True)
class TLSCertificate:
    name: str  # SDS secret name "<ns>/<secret>"
    cert_pem: str
    key_pem: str = field(repr=False)  # the private key


@dataclass(frozen=True)
class ClientIP:
    """The client's address behind proxies in front: the x-forwarded-for address `trusted_hops`
    from its end, or the last one not in `trusted_cidrs`, or a header's (`header`; `fail_closed`: a
    request without a valid one is refused)."""

    trusted_hops: int = 0
    trusted_cidrs: tuple[str, ...] = ()
    header: str = ""
    fail_closed: bool = False


@dataclass(frozen=True)
class Http2Settings:
    """A ClientTrafficPolicy's http2 (None: Envoy's default)."""

    initial_stream_window: int | None = None
    initial_connection_window: int | None = None
    max_concurrent_streams: int | None = None
    terminate_stream_on_invalid_message: bool | None = None


@dataclass(frozen=True)
class ClientTls:
    """A ClientTrafficPolicy's tls, for the Gateway's HTTPS listeners: versions as Envoy Gateway's
    API names them (None: Envoy's, 1.2 to 1.3), suites, curves and signature algorithms (empty:
    BoringSSL's), the ALPN offered (None: h2 and HTTP/1.1), the CA bundle client certificates are
    verified against (`client_ca`, an SDS secret of that name), and Envoy Gateway's resumption
    switches (both off unless asked)."""

    min_version: str | None = None
    max_version: str | None = None
    ciphers: tuple[str, ...] = ()
    ecdh_curves: tuple[str, ...] = ()
    signature_algorithms: tuple[str, ...] = ()
    alpn: tuple[str, ...] | None = None
    client_ca: TLSValidation | None = None  # None: client certificates are not asked for
    require_client_certificate: bool = False
    accept_untrusted: bool = False
    # What a client certificate must be besides signed by the CAs: one of these SPKI (base64) or
    # certificate (hex) SHA-256 hashes, a SAN one of these matches; an expired one is taken if said.
    spki_hashes: tuple[str, ...] = ()
    certificate_hashes: tuple[str, ...] = ()
    subject_alt_names: tuple[SanMatch, ...] = ()
    allow_expired: bool = False
    stateless_resumption: bool = False
    stateful_resumption: bool = False


@dataclass(frozen=True)
class TLSValidation:
    """The CAs a listener verifies client certificates against, and the revocation lists it checks
    them with (all of the chain's, or the leaf's alone), as an SDS secret."""

    name: str  # "<policy namespace>/<policy name>/ca.crt", as Envoy Gateway names it
    ca_pem: str = field(repr=False)
    crl_pem: str = field(default="", repr=False)
    crl_leaf_only: bool = False


@dataclass(frozen=True)
class SanMatch:
    """A client certificate's subject alternative name matched: its kind (DNS, EMAIL, IP_ADDRESS,
    URI, or an other name's `oid`), how (Exact, Prefix, Suffix, RegularExpression) and what."""

    kind: str
    match: str
    value: str
    oid: str = ""


@dataclass(frozen=True)
class ProxyProtocol:
    """A listener's connections begin with a PROXY header; `optional`: or not."""

    optional: bool = False


@dataclass(frozen=True)
class TcpKeepalive:
    """SO_KEEPALIVE on the listener's connections, with the probes' count and times (None: the
    kernel's)."""

    probes: int | None = None
    idle_s: int | None = None
    interval_s: int | None = None


@dataclass(frozen=True)
class EarlyHeaders:
    """Header changes made as a request arrives (earlyRequestHeaders): (name, value) pairs."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    add_if_absent: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Http1Settings:
    """A ClientTrafficPolicy's http1 (None: Envoy's default)."""

    trailers: bool = False
    preserve_case: bool = False
    http10: bool = False
    default_host: str = ""


@dataclass(frozen=True)
class ClientTraffic:
    """What a Gateway's ClientTrafficPolicy sets of its listeners; without one, the defaults."""

    buffer_limit: int = contract.BUFFER_LIMIT_BYTES
    # Where the client's address comes from (clientIPDetection): None, the connection's.
    client_ip: ClientIP | None = None
    # timeout.http, in seconds (0: none): the whole request's reception and its headers' (none by
    # default: an answer streams for long), a connection without requests (None: Envoy's hour), a
    # stream without bytes either way (none by default: a model may think for minutes).
    request_received_s: float = 0
    request_headers_received_s: float = 0
    idle_s: float | None = None
    stream_idle_s: float = 0
    # headers.enableEnvoyHeaders: the router's own x-envoy-* headers, off as in Envoy Gateway.
    envoy_headers: bool = False
    # As Envoy Gateway's API names them; None: Envoy's defaults (Allow; escaped slashes kept, slashes
    # not merged; HTTP/2's own settings).
    headers_with_underscores: str | None = None
    escaped_slashes: str | None = None
    merge_slashes: bool | None = None
    http2: Http2Settings | None = None
    http1: Http1Settings | None = None
    tls: ClientTls | None = None  # HTTPS listeners'
    tcp_keepalive: TcpKeepalive | None = None
    # connection.connectionLimit: the listener's open connections at most (None: no limit) and how
    # long an excess one is held before it is closed; the HTTP connection's and stream's limits.
    connection_limit: int | None = None
    connection_close_delay_s: float | None = None
    max_connection_s: float | None = None
    max_requests_per_connection: int | None = None
    max_stream_s: float | None = None
    max_accept_per_socket_event: int | None = None
    # headers: requestID as Envoy Gateway names it (None: the client's x-request-id kept, else one
    # made); earlyRequestHeaders; xForwardedClientCert's mode (None: Envoy's Sanitize) and details.
    request_id: str | None = None
    early_headers: EarlyHeaders | None = None
    client_cert_mode: str | None = None
    client_cert_details: tuple[str, ...] = ()
    # proxyProtocol: each connection begins with a PROXY header (v1 or v2), whose source is the
    # client's address; `optional`: connections without one are taken too. None: no header read.
    proxy_protocol: ProxyProtocol | None = None
    health_check_path: str | None = None  # healthCheck: Envoy answers this path itself


@dataclass(frozen=True)
class Listener:
    """One Envoy listener: the Gateway listeners sharing a port."""

    name: str  # "<ns>/<gateway>/<port>"
    port: int
    tls: bool
    certificates: tuple[TLSCertificate, ...]
    virtual_hosts: tuple[VirtualHost, ...]
    client: ClientTraffic = ClientTraffic()
    # Why it answers every request with a 500 in the client's schema instead of serving its routes
    # ("": it serves them): Kubernetes mode's Gateway whose ClientTrafficPolicy does not validate.
    refusal: str = ""


@dataclass(frozen=True)
class GatewayIR:
    key: ResourceKey
    listeners: tuple[Listener, ...]
    # The translator configuration without its backends and models: what the build reads (route
    # and global costs, budgets, the root prefix). Holds the seal key: never in a repr.
    translator_core: config_pb2.TranslatorConfig = field(compare=False, repr=False)
    # The translator configuration as translator processes get it (credentials), packed: whole, or
    # its head (TranslatorConfig.parts set) and its parts, in order (translator_config_resources).
    translator_served: tuple[Serialized, ...] = field(compare=False, repr=False)
    # Every resource this Gateway's configuration was built from.
    closure: frozenset[ResourceKey] = frozenset()
    # What the build reads of the translator's backends (holds their credentials).
    backends: FleetBackends = field(default_factory=lambda: FleetBackends.of(()), compare=False, repr=False)

    @cached_property
    def translator(self) -> config_pb2.TranslatorConfig:
        """The whole translator configuration (parsed when first read: serving over xDS needs only
        its bytes, and at 10,000 routes the message is 20,000 backends)."""
        return whole_translator_config(self.translator_served)

    def translator_config_resources(self) -> dict[str, Serialized]:
        """The resources of its translator configuration, by name: the head named after the fleet,
        the parts after contract.translator_config_part."""
        head, *parts = self.translator_served
        return {self.fleet: head} | {contract.translator_config_part(self.fleet, i): p for i, p in enumerate(parts)}

    @property
    def fleet(self) -> str:
        return self.key.ref

    @property
    def rule_runs(self) -> tuple[Run[Rule], ...]:
        """The runs of every virtual host, each once."""
        return tuple(
            dict.fromkeys(run for listener in self.listeners for vhost in listener.virtual_hosts for run in vhost.runs)
        )

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule once, in the order the listeners' routes try them (the first listener's
        hosts first): a route's rules by index, routes as the compile lists them."""
        seen: dict[str, Rule] = {}
        for listener in self.listeners:
            for vhost in listener.virtual_hosts:
                for rule in vhost.rules:
                    seen.setdefault(rule.cluster, rule)
        return tuple(seen.values())


def whole_translator_config(served: tuple[Serialized, ...]) -> config_pb2.TranslatorConfig:
    """A translator configuration as served (GatewayIR.translator_served) as one message: its head
    merged with its parts, in order (their serializations one after the other), made whole as a
    translator makes it."""
    config = config_pb2.TranslatorConfig.FromString(b"".join(s.data for s in served))
    make_whole(config)
    return config
