"""The contract: every name the control plane (which emits the Envoy config) and the translator
(which reads what Envoy sends) share, in one package that imports neither, so the two halves
cannot drift apart (Envoy AI Gateway's `internalapi` plays this role).

Values follow Envoy AI Gateway where it has one, so the same access-log formats and rate-limit
descriptors keep working. The backend-name format is in `backend_name`, the CEL cost environment in
`costs`.
"""

# --- Envoy objects both halves name -----------------------------------------------------------

# The ext_proc filter in the HCM (the router phase, or the whole translation on a route that
# translates on one stream) and in the clusters' upstream filters (the per-attempt phase). Their names
# differ because a route's per-filter configuration (ExtProcPerRoute) addresses a filter by name, and
# each route enables exactly the levels it needs.
EXT_PROC_FILTER_NAME = "envoy.filters.http.ext_proc/aigateway"
UPSTREAM_EXT_PROC_FILTER_NAME = "envoy.filters.http.ext_proc/aigateway-upstream"
# Cluster (in every fleet's CDS) that points at the translator.
TRANSLATOR_CLUSTER_NAME = "aigw-translator"
# Where the translator listens unless told otherwise (`aigw-xds translator`, `serve`'s in-process
# one), and so where Envoy is told to reach it.
TRANSLATOR_ADDRESS = "127.0.0.1:1063"
# The cluster (in the CDS of a fleet with MCPRoutes) that points at the translator's MCP proxy: an
# HTTP/1.1 server beside its gRPC one, which answers MCP clients for every MCPRoute of the fleets it
# serves (Streamable HTTP), reaching their backends' MCP servers itself.
MCP_PROXY_CLUSTER_NAME = "aigw-mcp-proxy"
# Where the MCP proxy listens unless told otherwise: Envoy AI Gateway's MCP proxy port.
MCP_PROXY_ADDRESS = "127.0.0.1:9856"
# Request headers an MCPRoute's Envoy route sets on what it sends the proxy (a client's own are
# replaced): the fleet ("<namespace>/<gateway>") and the route ("<namespace>/<mcproute>").
MCP_FLEET_HEADER = "x-aigw-mcp-fleet"
MCP_ROUTE_HEADER = "x-aigw-mcp-route"
# On what the MCP proxy sends an MCP server: the proxy refuses a request that carries it (a backend
# that is the proxy itself would have it answer its own requests, and take the fleet and route
# headers for Envoy's). No client header reaches an MCP server under a name with the gateway's
# prefix (OVERRIDE_HEADER_PREFIX).
MCP_HOP_HEADER = "x-aigw-mcp-hop"
# On an MCPRoute with OAuth: the payload of the client's JWT as Envoy verified it (base64url JSON),
# which jwt_authn sets over any the client sent; the MCP proxy reads claims from it alone.
MCP_JWT_PAYLOAD_HEADER = "x-aigw-jwt-payload"
# Response headers the MCP proxy sets for the access log: the JSON-RPC method, the backend's own name
# of the tool called (tools/call) and the backend that answered (a request for one backend). Envoy
# moves them into dynamic metadata (METADATA_NAMESPACE, under Envoy AI Gateway's keys), which the
# access log reads as mcp.method.name, mcp.tool.name and mcp.provider.name; clients do not get them.
MCP_METHOD_HEADER = "x-aigw-mcp-method"
MCP_TOOL_HEADER = "x-aigw-mcp-tool"
MCP_BACKEND_HEADER = "x-aigw-mcp-backend"
MCP_METADATA_KEYS = {
    MCP_METHOD_HEADER: "mcp_method",
    MCP_TOOL_HEADER: "mcp_tool_name",
    MCP_BACKEND_HEADER: "mcp_backend",
}
# Between a backendRef's name and its tool's (or prompt's) name in what clients see, as Envoy AI
# Gateway names them: "github__create_issue".
MCP_NAME_SEPARATOR = "__"

# --- Dynamic metadata -------------------------------------------------------------------------

# Dynamic metadata the translator writes (usage, costs, backend, content length).
METADATA_NAMESPACE = "io.envoy.ai_gateway"
# Metadata the control plane stamps on endpoints, clusters and routes.
INTERNAL_METADATA_NAMESPACE = "aigateway.envoy.io"
BACKEND_NAME_KEY = "per_route_rule_backend_name"
UPSTREAM_HOST_KEY = "upstream_host"
ROUTE_NAME_KEY = "aigw_route_name"

# Keys inside METADATA_NAMESPACE.
# The model and the stream flag of the request body, which Envoy reads itself (json_to_metadata) and
# routes on; the translator writes the model when it had to find it (a multipart form).
REQUEST_MODEL_KEY = "model"
REQUEST_STREAM_KEY = "stream"
CONTENT_LENGTH_KEY = "content_length"
BACKEND_NAME_METADATA_KEY = "backend_name"
MODEL_NAME_OVERRIDE_KEY = "model_name_override"
ROUTE_NAME_METADATA_KEY = "route_name"
RESPONSE_MODEL_KEY = "response_model"
AI_SERVICE_BACKEND_KEY = "ai_service_backend_name"
# Token counts, always written (whatever costs are configured), named as OpenTelemetry's GenAI
# conventions name them, for access logs.
INPUT_TOKENS_KEY = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS_KEY = "gen_ai.usage.output_tokens"
# True while the usage written is (partly) estimated: a stream the provider has not reported final
# usage for yet. Once it has, the provider's figures replace the estimate.
USAGE_ESTIMATED_KEY = "usage_estimated"
# True on a request admitted without its budgets checked: the rate limit store could not be read and
# the translator fails open (the access log shows which requests went unchecked during an outage).
RATE_LIMIT_UNCHECKED_KEY = "rate_limit_unchecked"
# On a request refused by a budget: where the budget was written ("BackendTrafficPolicy ns/name
# spec.rateLimit.global.rules[0]", "QuotaPolicy ..."), or that the rate limit store was unavailable.
RATE_LIMITED_BY_KEY = "rate_limited_by"
# True once a request was admitted against its route's budgets (by the router phase, or by the first
# attempt when the router phase could not tell the route): later attempts do not admit it again.
# Dynamic metadata only the translator writes: a client cannot set it.
BUDGETS_ADMITTED_KEY = "route_budgets_admitted"
# Streams: time to first token and mean inter-token latency (milliseconds), as Envoy AI Gateway
# names them.
TTFT_KEY = "token_latency_ttft"
ITL_KEY = "token_latency_itl"
# The sealed record of the client's original headers, which the upstream phase writes and Envoy
# forwards to the next attempt's ext_proc stream (never logged: it is sealed, not secret-free).
SEALED_ORIGINAL_HEADERS_KEY = "sealed_original_headers"

# --- Request headers --------------------------------------------------------------------------

MODEL_HEADER = "x-ai-eg-model"
ORIGINAL_PATH_HEADER = "x-ai-eg-original-path"
# The client's own credential headers: never forwarded to a provider, never logged.
CLIENT_AUTH_HEADERS = ("authorization", "x-api-key", "api-key")
# Every header with this prefix is the gateway's (credential overrides among them): stripped before
# every attempt unless set for it, never logged.
OVERRIDE_HEADER_PREFIX = "x-aigw-"
# The request header a credentialOverride.fromRequestHeaders reads when it names none, by the kind
# of the translator's Auth (the `kind` oneof of aigw.translator.v1.Auth). AWS's is a prefix.
OVERRIDE_HEADER_DEFAULTS = {
    "api_key": "x-aigw-api-key",
    "anthropic_api_key": "x-aigw-anthropic-api-key",
    "azure_api_key": "x-aigw-azure-api-key",
    "azure_credentials": "x-aigw-azure-access-token",
    "gcp_credentials": "x-aigw-gcp-access-token",
    "aws_credentials": "x-aigw-aws-",
}
# Client headers that choose what a provider key bills (an OpenAI organization or project, a Google
# quota and billing project) or carry other credentials: the translator strips them before every
# attempt unless the backend's BackendSecurityPolicy lets them pass (annotation
# PASS_CLIENT_HEADERS_ANNOTATION, a comma-separated list of these names; the client's Authorization,
# x-api-key, api-key and override headers never pass).
PROVIDER_SCOPED_HEADERS = (
    "openai-organization",
    "openai-project",
    "cookie",
    "proxy-authorization",
    "x-goog-api-key",
    "x-goog-user-project",
)
PASS_CLIENT_HEADERS_ANNOTATION = "aigw.run/pass-client-headers"
# Prefixes of client headers that sign or steer an AWS or Google request (x-amz-security-token,
# x-amzn-bedrock-service-tier: premium pricing, -guardrailidentifier, -projectidentifier...;
# x-goog-iam-authorization-token, x-goog-request-params): stripped before every attempt, but for
# the names of PROVIDER_SCOPED_HEADERS under them (x-goog-api-key, x-goog-user-project) that the
# backend's policy passes.
PROVIDER_SCOPED_PREFIXES = ("x-amz-", "x-amzn-bedrock-", "x-goog-")

# Request content types Envoy reads the model from (json_to_metadata compares them whole); a JSON
# body with another content type reaches the translator, which finds its model, slower.
JSON_CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "application/json;charset=utf-8",
    "application/json; charset=UTF-8",
    "application/json;charset=UTF-8",
)

# --- Attributes -------------------------------------------------------------------------------

# Attributes the upstream-level filter asks Envoy for; the translator reads them back by the same
# strings.
UPSTREAM_HOST_METADATA_ATTRIBUTE = "xds.upstream_host_metadata"
CLUSTER_METADATA_ATTRIBUTE = "xds.cluster_metadata"
ROUTE_METADATA_ATTRIBUTE = "xds.route_metadata"
UPSTREAM_ATTRIBUTES = (
    UPSTREAM_HOST_METADATA_ATTRIBUTE,
    CLUSTER_METADATA_ATTRIBUTE,
    ROUTE_METADATA_ATTRIBUTE,
)

# --- ext_proc stream metadata -----------------------------------------------------------------

# gRPC metadata on every ext_proc stream saying which of the two ext_proc filters opened it. The
# translator trusts only this marker (never the shape of the first message): a stream without it,
# or with an unknown value, is refused, so a misconfigured upstream filter cannot fall back to the
# router phase (which strips no credentials).
PHASE_METADATA_KEY = "x-aigw-phase"
ROUTER_PHASE = "router"
UPSTREAM_PHASE = "upstream"
# ... and the stream of Envoy's ext_authz asking the translator whether a request carries a client
# key of a SecurityPolicy's apiKeyAuth: the policies it may be of ("<ns>/<name>", comma-separated,
# in the check's context extensions), and "1" when a request with none passes too (the route the
# router phase may route it to checks again).
CLIENT_KEYS_PHASE = "client-keys"
CLIENT_KEY_POLICIES = "policies"
CLIENT_KEY_OPTIONAL = "optional"
# What the answer leaves in ext_authz's metadata for a policy whose key a request carries: this, then
# the policy's name -> the key's client id.
CLIENT_KEY_METADATA_PREFIX = "aigw.client_key/"
# gRPC metadata a route adds to the router phase's stream when the whole translation happens there, on
# one stream (every backend of the route's rule is translated the same way): the backend whose
# translation applies. Without it, the router phase leaves the request to the per-attempt phase.
ROUTE_BACKEND_METADATA_KEY = "x-aigw-route-backend"
# gRPC metadata a route adds to the router phase's stream when its rule has a streamIdleTimeout
# (milliseconds, Envoy's per-try idle timeout): the translator ends a stream whose backend has been
# silent for nearly that long itself, with an error event in the client's schema, before Envoy's
# timer fires and can only reset the client's stream.
STREAM_IDLE_TIMEOUT_METADATA_KEY = "x-aigw-stream-idle-timeout-ms"
# gRPC metadata a route adds to the router phase's stream when budgets apply to its requests: the ids
# (TranslatorConfig.rate_limits), comma-separated. The router phase admits or refuses the request
# against them and charges them when the response ends.
RATE_LIMITS_METADATA_KEY = "x-aigw-rate-limits"
# gRPC metadata a route translated per attempt adds beside RATE_LIMITS_METADATA_KEY: the rule's first
# backend, whose route's costs a request is charged by when its client leaves before any response
# (the router phase learns the answering backend only from the response).
FIRST_BACKEND_METADATA_KEY = "x-aigw-first-backend"
# The request attribute the router phase asks Envoy for when a budget selects clients by address.
SOURCE_ADDRESS_ATTRIBUTE = "source.address"
# The response attribute the router phase asks for, and the details of Envoy's own refusals of a
# SecurityPolicy's checks (a filter before the router phase, or its verification after it): in the
# client's shape already, passed on as they are (and no provider rejected the gateway's key).
RESPONSE_DETAILS_ATTRIBUTE = "response.code_details"
CLIENT_CHECK_REFUSALS = ("jwt_authn_access_denied", "ext_authz_denied", "ext_authz_error", "rbac_access_denied")
# Route metadata (in INTERNAL_METADATA_NAMESPACE) of a route Envoy serves alone (no translator on it).
NATIVE_ROUTE_KEY = "native"

# gRPC metadata a route adds to the router phase's stream when its rule's backends have QuotaPolicy
# budgets and several priorities: the backend names of each priority, highest first (names joined by
# ",", priorities by ";"). The router phase reads their quotas and, when the highest priorities' are
# spent, sets PRIORITY_FLOOR_HEADER to the name of the first backend of the first priority left
# (bound to the rule: a request that routes again to another rule matches none of its floors); the
# routes matching it send the request to a cluster of the remaining priorities (a refusal per
# attempt cannot fail over in Envoy 1.40).
PRIORITY_BACKENDS_METADATA_KEY = "x-aigw-priority-backends"
PRIORITY_FLOOR_HEADER = "x-aigw-priority-floor"
# On a per-attempt phase's refusal (a quota spent, its store down): the router phase, which sees it
# on its way to the client, takes the request's local rate-limit charges back (a refused request
# spends no local room) and removes the header. On Envoy's refusal of a SecurityPolicy's check on a
# route Envoy serves alone: its provider-errors script passes it on as it is and removes the header.
REFUSED_HERE_HEADER = "x-aigw-refused-here"

# Route scopes: a listener with many rules has its routes split by the model they match into
# ROUTE_SCOPES route configurations, so that an edit resends one scope's routes rather than all of
# them. A request's scope is the bucket of its model (route_scope): Envoy sets ROUTE_SCOPE_HEADER
# once the body's model is read (a Lua filter), and the router phase sets it again with the model
# header. ROUTE_SCOPE_LISTENER_HEADER (set by the same Lua filter) names the listener: Envoy gives
# every listener of a node every scope, and a scope's key holds both.
ROUTE_SCOPE_HEADER = "x-aigw-route-scope"
ROUTE_SCOPE_LISTENER_HEADER = "x-aigw-route-scope-listener"
ROUTE_SCOPES = 128
# From how many rules matching a model by name a listener's routes come in scopes (the default of
# `--route-scopes-from`): below, the route configuration an edit resends is small, and matching a
# request against all of it costs Envoy less than the Lua filter does (docs/performance.md).
DEFAULT_ROUTE_SCOPES_FROM = 200

# gRPC metadata on every ext_proc stream naming the fleet ("<namespace>/<gateway>") whose
# configuration applies; one translator process can serve several Gateways.
FLEET_METADATA_KEY = "x-aigw-fleet"

# --- xDS --------------------------------------------------------------------------------------

# Node metadata: the fleet a node asks for (a string "<namespace>/<gateway>"), and, in CSDS answers,
# the fleet the control plane mapped the node to and its stream's mode ("sotw" or "delta"), and why
# its fleet is withheld (its nodes answered nothing until it is fixed), when it is.
NODE_FLEET_KEY = "aigw.fleet"
NODE_MODE_KEY = "aigw.mode"
NODE_WITHHELD_KEY = "aigw.withheld"

# The translator configuration travels over xDS (delta ADS) as its own resource type, one resource
# per fleet (named "<namespace>/<gateway>"), all served to nodes of this pseudo-fleet.
TRANSLATOR_CONFIG_TYPE_URL = "type.googleapis.com/aigw.translator.v1.TranslatorConfig"
TRANSLATORS_FLEET = "aigw:translators"
# A fleet's configuration may come in parts (TranslatorConfig.parts): its backends and route costs
# in TRANSLATOR_CONFIG_PARTS more resources, "<fleet>#<i>", so that an edit of one route sends one
# part to every translator of the fleet, not the whole (megabytes with thousands of routes).
TRANSLATOR_CONFIG_PARTS = 64
# What a translator that assembles a configuration from its parts puts in its node's client_features;
# one that does not (older than the parts) is sent each configuration whole
# (aigw_xds.xds.translator_wholes).
TRANSLATOR_CONFIG_PARTS_FEATURE = "aigw.translator.config_parts"


def translator_config_part(fleet: str, index: int) -> str:
    """The name of a part of a fleet's translator configuration."""
    return f"{fleet}#{index}"


def translator_config_fleet(name: str) -> str:
    """The fleet a translator configuration resource (whole, or a part) belongs to."""
    return name.partition("#")[0]


# --- Limits -----------------------------------------------------------------------------------

# gRPC message limit of the xDS streams, both ends (Envoy's requests outgrow gRPC's 4 MiB default at
# scale).
XDS_MAX_MESSAGE_BYTES = 32 * 1024 * 1024
# Request/response buffer (Envoy AI Gateway's default): per-connection buffer of listeners and
# clusters unless a ClientTrafficPolicy says otherwise.
BUFFER_LIMIT_BYTES = 50 * 1024 * 1024
# A buffered body travels to the translator in one ext_proc message (and comes back in one when it is
# rewritten): the limit is well above BUFFER_LIMIT_BYTES, so a body Envoy accepted is never refused
# by the translator as a 500.
TRANSLATOR_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# Client paths whose API is Anthropic's or Cohere's (a segment of the path, under any root prefix:
# /anthropic/v1/messages); every other path speaks OpenAI's. The translator shapes its errors by
# them, and Envoy its own replies when the translator cannot answer.
ANTHROPIC_PATH_PREFIX = "/anthropic"
COHERE_PATH_PREFIX = "/cohere"

# Python's recursion limit in both halves: room for code that walks user data one frame or two per
# level, as deep as libyaml (1,000 levels) and orjson (1,024) read it.
RECURSION_LIMIT = 2500

# --- Defaults ---------------------------------------------------------------------------------

# The path prefix of an OpenAI or Anthropic schema that names none.
DEFAULT_SCHEMA_PREFIX = "v1"
# A route rule's request timeout when it names none.
DEFAULT_REQUEST_TIMEOUT_S = 60.0
# The api-version sent on classic Azure OpenAI paths when neither the AIServiceBackend's
# schema.version nor the client's request names one (the newest GA version Azure documents; the
# control plane warns about an AzureOpenAI schema without a version).
AZURE_DEFAULT_API_VERSION = "2024-10-21"


def schema_prefix(prefix: str) -> str:
    """A schema's path prefix without slashes at either end: DEFAULT_SCHEMA_PREFIX when it names none,
    "" when it is "/"."""
    return prefix.strip("/") if prefix else DEFAULT_SCHEMA_PREFIX


def root_prefix(prefix: str) -> str:
    """The Gateway's root path prefix as a path: "" or "/<...>" without a trailing slash."""
    root = prefix.rstrip("/")
    return "/" + root if root and not root.startswith("/") else root


# How many of a model's bytes its route scope reads (then its length): a client's long model name
# costs Envoy's Lua no more than this.
ROUTE_SCOPE_BYTES = 256


def route_scope(model: str) -> str:
    """The route scope of requests for `model` (ROUTE_SCOPE_HEADER's value): a hash of its first
    ROUTE_SCOPE_BYTES UTF-8 bytes and its length, which Envoy's Lua computes alike (integers below
    2**53 in its numbers: exact)."""
    data = model.encode()
    h = 0
    for byte in data[:ROUTE_SCOPE_BYTES]:
        h = (h * 31 + byte) % 1_000_003
    h = (h * 31 + len(data)) % 1_000_003
    return str(h % ROUTE_SCOPES)
