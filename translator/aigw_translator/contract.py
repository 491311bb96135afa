"""Names shared by the control plane (which emits the Envoy config) and the translator (which reads
what Envoy sends). One place, so the two sides cannot drift apart.

Values follow Envoy AI Gateway where it has one, so the same access-log formats and rate-limit
descriptors keep working.
"""

# The ext_proc filter, at both levels (HCM and cluster upstream filters).
EXT_PROC_FILTER_NAME = "envoy.filters.http.ext_proc/aigateway"
# Cluster (in every fleet's CDS) that points at the translator.
TRANSLATOR_CLUSTER_NAME = "aigw-translator"

# Dynamic metadata the translator writes (usage, costs, backend, content length).
METADATA_NAMESPACE = "io.envoy.ai_gateway"
# Metadata the control plane stamps on endpoints, clusters and routes.
INTERNAL_METADATA_NAMESPACE = "aigateway.envoy.io"
BACKEND_NAME_KEY = "per_route_rule_backend_name"
UPSTREAM_HOST_KEY = "upstream_host"
ROUTE_NAME_KEY = "aigw_route_name"

# Keys inside METADATA_NAMESPACE.
CONTENT_LENGTH_KEY = "content_length"
BACKEND_NAME_METADATA_KEY = "backend_name"
MODEL_NAME_OVERRIDE_KEY = "model_name_override"
ROUTE_NAME_METADATA_KEY = "route_name"
RESPONSE_MODEL_KEY = "response_model"
AI_SERVICE_BACKEND_KEY = "ai_service_backend_name"

# Request headers.
MODEL_HEADER = "x-ai-eg-model"
ORIGINAL_PATH_HEADER = "x-ai-eg-original-path"
# Client headers that choose what a provider key bills (an OpenAI organization or project) or carry
# other credentials: the translator strips them before every attempt unless the backend's
# BackendSecurityPolicy lets them pass (annotation PASS_CLIENT_HEADERS_ANNOTATION, a comma-separated
# list of these names; the client's Authorization, x-api-key, api-key and override headers never
# pass).
PROVIDER_SCOPED_HEADERS = ("openai-organization", "openai-project", "cookie", "proxy-authorization", "x-goog-api-key")
PASS_CLIENT_HEADERS_ANNOTATION = "aigw.run/pass-client-headers"

# The api-version sent on classic Azure OpenAI paths when neither the AIServiceBackend's
# schema.version nor the client's request names one (the newest GA version Azure documents; the
# control plane warns about an AzureOpenAI schema without a version).
AZURE_DEFAULT_API_VERSION = "2024-10-21"

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

# gRPC metadata on every ext_proc stream saying which of the two ext_proc filters opened it. The
# translator trusts only this marker (never the shape of the first message): a stream without it,
# or with an unknown value, is refused, so a misconfigured upstream filter cannot fall back to the
# router phase (which strips no credentials).
PHASE_METADATA_KEY = "x-aigw-phase"
ROUTER_PHASE = "router"
UPSTREAM_PHASE = "upstream"

# gRPC metadata on every ext_proc stream naming the fleet ("<namespace>/<gateway>") whose
# configuration applies; one translator process can serve several Gateways.
FLEET_METADATA_KEY = "x-aigw-fleet"

# The translator configuration travels over xDS (delta ADS) as its own resource type, one resource
# per fleet (named "<namespace>/<gateway>"), all served to nodes of this pseudo-fleet.
TRANSLATOR_CONFIG_TYPE_URL = "type.googleapis.com/aigw.translator.v1.TranslatorConfig"
TRANSLATORS_FLEET = "aigw:translators"
