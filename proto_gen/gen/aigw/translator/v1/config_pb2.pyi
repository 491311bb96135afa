from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TranslatorConfig(_message.Message):
    __slots__ = ("name", "backends", "models", "global_costs", "route_costs", "root_prefix", "seal_key", "rate_limits", "parts", "route_models", "mcp_routes", "mcp_session_key", "client_key_policies")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_COSTS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_COSTS_FIELD_NUMBER: _ClassVar[int]
    ROOT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    SEAL_KEY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_MODELS_FIELD_NUMBER: _ClassVar[int]
    MCP_ROUTES_FIELD_NUMBER: _ClassVar[int]
    MCP_SESSION_KEY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEY_POLICIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    global_costs: _containers.RepeatedCompositeFieldContainer[LLMRequestCost]
    route_costs: _containers.RepeatedCompositeFieldContainer[RouteCosts]
    root_prefix: str
    seal_key: bytes
    rate_limits: _containers.RepeatedCompositeFieldContainer[RateLimit]
    parts: int
    route_models: _containers.RepeatedCompositeFieldContainer[RouteModels]
    mcp_routes: _containers.RepeatedCompositeFieldContainer[MCPRoute]
    mcp_session_key: bytes
    client_key_policies: _containers.RepeatedCompositeFieldContainer[PolicyClientKeys]
    def __init__(self, name: _Optional[str] = ..., backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., global_costs: _Optional[_Iterable[_Union[LLMRequestCost, _Mapping]]] = ..., route_costs: _Optional[_Iterable[_Union[RouteCosts, _Mapping]]] = ..., root_prefix: _Optional[str] = ..., seal_key: _Optional[bytes] = ..., rate_limits: _Optional[_Iterable[_Union[RateLimit, _Mapping]]] = ..., parts: _Optional[int] = ..., route_models: _Optional[_Iterable[_Union[RouteModels, _Mapping]]] = ..., mcp_routes: _Optional[_Iterable[_Union[MCPRoute, _Mapping]]] = ..., mcp_session_key: _Optional[bytes] = ..., client_key_policies: _Optional[_Iterable[_Union[PolicyClientKeys, _Mapping]]] = ...) -> None: ...

class PolicyClientKeys(_message.Message):
    __slots__ = ("policy", "keys")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    policy: str
    keys: MCPClientKeys
    def __init__(self, policy: _Optional[str] = ..., keys: _Optional[_Union[MCPClientKeys, _Mapping]] = ...) -> None: ...

class MCPRoute(_message.Message):
    __slots__ = ("name", "backends", "oauth", "client_keys", "authorization", "backend_selector")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    OAUTH_FIELD_NUMBER: _ClassVar[int]
    CLIENT_KEYS_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    backends: _containers.RepeatedCompositeFieldContainer[MCPBackend]
    oauth: MCPOAuth
    client_keys: MCPClientKeys
    authorization: MCPAuthorization
    backend_selector: MCPAuthorization
    def __init__(self, name: _Optional[str] = ..., backends: _Optional[_Iterable[_Union[MCPBackend, _Mapping]]] = ..., oauth: _Optional[_Union[MCPOAuth, _Mapping]] = ..., client_keys: _Optional[_Union[MCPClientKeys, _Mapping]] = ..., authorization: _Optional[_Union[MCPAuthorization, _Mapping]] = ..., backend_selector: _Optional[_Union[MCPAuthorization, _Mapping]] = ...) -> None: ...

class MCPOAuth(_message.Message):
    __slots__ = ("resource_metadata_url", "claim_headers")
    RESOURCE_METADATA_URL_FIELD_NUMBER: _ClassVar[int]
    CLAIM_HEADERS_FIELD_NUMBER: _ClassVar[int]
    resource_metadata_url: str
    claim_headers: _containers.RepeatedCompositeFieldContainer[MCPClaimHeader]
    def __init__(self, resource_metadata_url: _Optional[str] = ..., claim_headers: _Optional[_Iterable[_Union[MCPClaimHeader, _Mapping]]] = ...) -> None: ...

class MCPClaimHeader(_message.Message):
    __slots__ = ("claim", "header")
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    claim: str
    header: str
    def __init__(self, claim: _Optional[str] = ..., header: _Optional[str] = ...) -> None: ...

class MCPClientKeys(_message.Message):
    __slots__ = ("keys", "sources", "client_id_header", "sanitize", "basic_users")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_HEADER_FIELD_NUMBER: _ClassVar[int]
    SANITIZE_FIELD_NUMBER: _ClassVar[int]
    BASIC_USERS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[MCPClientKey]
    sources: _containers.RepeatedCompositeFieldContainer[MCPKeySource]
    client_id_header: str
    sanitize: bool
    basic_users: _containers.RepeatedCompositeFieldContainer[MCPBasicUser]
    def __init__(self, keys: _Optional[_Iterable[_Union[MCPClientKey, _Mapping]]] = ..., sources: _Optional[_Iterable[_Union[MCPKeySource, _Mapping]]] = ..., client_id_header: _Optional[str] = ..., sanitize: _Optional[bool] = ..., basic_users: _Optional[_Iterable[_Union[MCPBasicUser, _Mapping]]] = ...) -> None: ...

class MCPBasicUser(_message.Message):
    __slots__ = ("name", "password_sha1")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_SHA1_FIELD_NUMBER: _ClassVar[int]
    name: str
    password_sha1: bytes
    def __init__(self, name: _Optional[str] = ..., password_sha1: _Optional[bytes] = ...) -> None: ...

class MCPClientKey(_message.Message):
    __slots__ = ("client_id", "key")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    key: str
    def __init__(self, client_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class MCPKeySource(_message.Message):
    __slots__ = ("header", "query_param", "cookie")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAM_FIELD_NUMBER: _ClassVar[int]
    COOKIE_FIELD_NUMBER: _ClassVar[int]
    header: str
    query_param: str
    cookie: str
    def __init__(self, header: _Optional[str] = ..., query_param: _Optional[str] = ..., cookie: _Optional[str] = ...) -> None: ...

class MCPAuthorization(_message.Message):
    __slots__ = ("rules", "default_allow")
    RULES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ALLOW_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[MCPAuthorizationRule]
    default_allow: bool
    def __init__(self, rules: _Optional[_Iterable[_Union[MCPAuthorizationRule, _Mapping]]] = ..., default_allow: _Optional[bool] = ...) -> None: ...

class MCPAuthorizationRule(_message.Message):
    __slots__ = ("scopes", "claims", "tools", "cel", "deny")
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    CEL_FIELD_NUMBER: _ClassVar[int]
    DENY_FIELD_NUMBER: _ClassVar[int]
    scopes: _containers.RepeatedScalarFieldContainer[str]
    claims: _containers.RepeatedCompositeFieldContainer[MCPClaimMatch]
    tools: _containers.RepeatedCompositeFieldContainer[MCPToolRef]
    cel: str
    deny: bool
    def __init__(self, scopes: _Optional[_Iterable[str]] = ..., claims: _Optional[_Iterable[_Union[MCPClaimMatch, _Mapping]]] = ..., tools: _Optional[_Iterable[_Union[MCPToolRef, _Mapping]]] = ..., cel: _Optional[str] = ..., deny: _Optional[bool] = ...) -> None: ...

class MCPClaimMatch(_message.Message):
    __slots__ = ("name", "array", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARRAY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    array: bool
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., array: _Optional[bool] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class MCPToolRef(_message.Message):
    __slots__ = ("backend", "tool")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    backend: str
    tool: str
    def __init__(self, backend: _Optional[str] = ..., tool: _Optional[str] = ...) -> None: ...

class MCPBackend(_message.Message):
    __slots__ = ("name", "url", "unix_socket", "tls", "tool_selector", "api_key", "forward_headers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    UNIX_SOCKET_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    FORWARD_HEADERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    unix_socket: str
    tls: MCPBackendTLS
    tool_selector: MCPToolSelector
    api_key: MCPAPIKey
    forward_headers: _containers.RepeatedCompositeFieldContainer[MCPForwardHeader]
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., unix_socket: _Optional[str] = ..., tls: _Optional[_Union[MCPBackendTLS, _Mapping]] = ..., tool_selector: _Optional[_Union[MCPToolSelector, _Mapping]] = ..., api_key: _Optional[_Union[MCPAPIKey, _Mapping]] = ..., forward_headers: _Optional[_Iterable[_Union[MCPForwardHeader, _Mapping]]] = ...) -> None: ...

class MCPBackendTLS(_message.Message):
    __slots__ = ("sni", "ca_pem")
    SNI_FIELD_NUMBER: _ClassVar[int]
    CA_PEM_FIELD_NUMBER: _ClassVar[int]
    sni: str
    ca_pem: str
    def __init__(self, sni: _Optional[str] = ..., ca_pem: _Optional[str] = ...) -> None: ...

class MCPToolSelector(_message.Message):
    __slots__ = ("include", "include_regex", "exclude", "exclude_regex")
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_REGEX_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_REGEX_FIELD_NUMBER: _ClassVar[int]
    include: _containers.RepeatedScalarFieldContainer[str]
    include_regex: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    exclude_regex: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, include: _Optional[_Iterable[str]] = ..., include_regex: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ..., exclude_regex: _Optional[_Iterable[str]] = ...) -> None: ...

class MCPAPIKey(_message.Message):
    __slots__ = ("key", "header", "query_param")
    KEY_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    QUERY_PARAM_FIELD_NUMBER: _ClassVar[int]
    key: str
    header: str
    query_param: str
    def __init__(self, key: _Optional[str] = ..., header: _Optional[str] = ..., query_param: _Optional[str] = ...) -> None: ...

class MCPForwardHeader(_message.Message):
    __slots__ = ("name", "backend_header")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_HEADER_FIELD_NUMBER: _ClassVar[int]
    name: str
    backend_header: str
    def __init__(self, name: _Optional[str] = ..., backend_header: _Optional[str] = ...) -> None: ...

class RouteModels(_message.Message):
    __slots__ = ("namespace", "name", "models")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("name", "service_backend", "route_name", "schema", "model_name_override", "header_mutation", "body_mutation", "auth", "upstream_host", "quota_ids", "rate_limit_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_BACKEND_FIELD_NUMBER: _ClassVar[int]
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    HEADER_MUTATION_FIELD_NUMBER: _ClassVar[int]
    BODY_MUTATION_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_HOST_FIELD_NUMBER: _ClassVar[int]
    QUOTA_IDS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    service_backend: str
    route_name: str
    schema: Schema
    model_name_override: str
    header_mutation: HeaderMutation
    body_mutation: BodyMutation
    auth: Auth
    upstream_host: str
    quota_ids: _containers.RepeatedScalarFieldContainer[str]
    rate_limit_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., service_backend: _Optional[str] = ..., route_name: _Optional[str] = ..., schema: _Optional[_Union[Schema, _Mapping]] = ..., model_name_override: _Optional[str] = ..., header_mutation: _Optional[_Union[HeaderMutation, _Mapping]] = ..., body_mutation: _Optional[_Union[BodyMutation, _Mapping]] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ..., upstream_host: _Optional[str] = ..., quota_ids: _Optional[_Iterable[str]] = ..., rate_limit_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("name", "version", "prefix")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    prefix: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class HeaderMutation(_message.Message):
    __slots__ = ("set", "remove")
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    set: _containers.RepeatedCompositeFieldContainer[HeaderValue]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, set: _Optional[_Iterable[_Union[HeaderValue, _Mapping]]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class HeaderValue(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class BodyMutation(_message.Message):
    __slots__ = ("set", "remove")
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    set: _containers.RepeatedCompositeFieldContainer[BodyField]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, set: _Optional[_Iterable[_Union[BodyField, _Mapping]]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class BodyField(_message.Message):
    __slots__ = ("path", "value")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    path: str
    value: str
    def __init__(self, path: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Auth(_message.Message):
    __slots__ = ("api_key", "anthropic_api_key", "azure_api_key", "aws_credentials", "gcp_credentials", "azure_credentials", "credential_override", "pass_client_headers")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    ANTHROPIC_API_KEY_FIELD_NUMBER: _ClassVar[int]
    AZURE_API_KEY_FIELD_NUMBER: _ClassVar[int]
    AWS_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    GCP_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    AZURE_CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    PASS_CLIENT_HEADERS_FIELD_NUMBER: _ClassVar[int]
    api_key: APIKey
    anthropic_api_key: APIKey
    azure_api_key: APIKey
    aws_credentials: AWSCredentials
    gcp_credentials: GCPCredentials
    azure_credentials: AzureCredentials
    credential_override: CredentialOverride
    pass_client_headers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, api_key: _Optional[_Union[APIKey, _Mapping]] = ..., anthropic_api_key: _Optional[_Union[APIKey, _Mapping]] = ..., azure_api_key: _Optional[_Union[APIKey, _Mapping]] = ..., aws_credentials: _Optional[_Union[AWSCredentials, _Mapping]] = ..., gcp_credentials: _Optional[_Union[GCPCredentials, _Mapping]] = ..., azure_credentials: _Optional[_Union[AzureCredentials, _Mapping]] = ..., credential_override: _Optional[_Union[CredentialOverride, _Mapping]] = ..., pass_client_headers: _Optional[_Iterable[str]] = ...) -> None: ...

class APIKey(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class AWSCredentials(_message.Message):
    __slots__ = ("region", "credentials_file", "profile", "oidc", "role_arn", "policy")
    REGION_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FILE_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    OIDC_FIELD_NUMBER: _ClassVar[int]
    ROLE_ARN_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    region: str
    credentials_file: str
    profile: str
    oidc: OIDCToken
    role_arn: str
    policy: str
    def __init__(self, region: _Optional[str] = ..., credentials_file: _Optional[str] = ..., profile: _Optional[str] = ..., oidc: _Optional[_Union[OIDCToken, _Mapping]] = ..., role_arn: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...

class GCPCredentials(_message.Message):
    __slots__ = ("project_name", "region", "service_account_json", "workload_identity_federation", "policy")
    PROJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_JSON_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_IDENTITY_FEDERATION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    project_name: str
    region: str
    service_account_json: str
    workload_identity_federation: WorkloadIdentityFederation
    policy: str
    def __init__(self, project_name: _Optional[str] = ..., region: _Optional[str] = ..., service_account_json: _Optional[str] = ..., workload_identity_federation: _Optional[_Union[WorkloadIdentityFederation, _Mapping]] = ..., policy: _Optional[str] = ...) -> None: ...

class WorkloadIdentityFederation(_message.Message):
    __slots__ = ("project_id", "pool", "provider", "service_account", "oidc")
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    OIDC_FIELD_NUMBER: _ClassVar[int]
    project_id: str
    pool: str
    provider: str
    service_account: str
    oidc: OIDCToken
    def __init__(self, project_id: _Optional[str] = ..., pool: _Optional[str] = ..., provider: _Optional[str] = ..., service_account: _Optional[str] = ..., oidc: _Optional[_Union[OIDCToken, _Mapping]] = ...) -> None: ...

class AzureCredentials(_message.Message):
    __slots__ = ("client_id", "tenant_id", "client_secret", "oidc", "policy")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    OIDC_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    tenant_id: str
    client_secret: str
    oidc: OIDCToken
    policy: str
    def __init__(self, client_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., client_secret: _Optional[str] = ..., oidc: _Optional[_Union[OIDCToken, _Mapping]] = ..., policy: _Optional[str] = ...) -> None: ...

class OIDCToken(_message.Message):
    __slots__ = ("issuer", "token_endpoint", "client_id", "client_secret", "scopes", "audience", "grant_type")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    GRANT_TYPE_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    token_endpoint: str
    client_id: str
    client_secret: str
    scopes: _containers.RepeatedScalarFieldContainer[str]
    audience: str
    grant_type: str
    def __init__(self, issuer: _Optional[str] = ..., token_endpoint: _Optional[str] = ..., client_id: _Optional[str] = ..., client_secret: _Optional[str] = ..., scopes: _Optional[_Iterable[str]] = ..., audience: _Optional[str] = ..., grant_type: _Optional[str] = ...) -> None: ...

class CredentialOverride(_message.Message):
    __slots__ = ("from_request_headers", "from_dynamic_metadata", "fallback_to_configured")
    FROM_REQUEST_HEADERS_FIELD_NUMBER: _ClassVar[int]
    FROM_DYNAMIC_METADATA_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_TO_CONFIGURED_FIELD_NUMBER: _ClassVar[int]
    from_request_headers: FromRequestHeaders
    from_dynamic_metadata: FromDynamicMetadata
    fallback_to_configured: bool
    def __init__(self, from_request_headers: _Optional[_Union[FromRequestHeaders, _Mapping]] = ..., from_dynamic_metadata: _Optional[_Union[FromDynamicMetadata, _Mapping]] = ..., fallback_to_configured: _Optional[bool] = ...) -> None: ...

class FromRequestHeaders(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: str
    def __init__(self, header: _Optional[str] = ...) -> None: ...

class FromDynamicMetadata(_message.Message):
    __slots__ = ("namespace", "key")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    key: str
    def __init__(self, namespace: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("id", "owned_by", "created", "hosts")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    owned_by: str
    created: int
    hosts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., owned_by: _Optional[str] = ..., created: _Optional[int] = ..., hosts: _Optional[_Iterable[str]] = ...) -> None: ...

class LLMRequestCost(_message.Message):
    __slots__ = ("metadata_key", "type", "cel")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[LLMRequestCost.Type]
        INPUT_TOKEN: _ClassVar[LLMRequestCost.Type]
        OUTPUT_TOKEN: _ClassVar[LLMRequestCost.Type]
        TOTAL_TOKEN: _ClassVar[LLMRequestCost.Type]
        CACHED_INPUT_TOKEN: _ClassVar[LLMRequestCost.Type]
        CACHE_CREATION_INPUT_TOKEN: _ClassVar[LLMRequestCost.Type]
        REASONING_TOKEN: _ClassVar[LLMRequestCost.Type]
        CEL: _ClassVar[LLMRequestCost.Type]
    TYPE_UNSPECIFIED: LLMRequestCost.Type
    INPUT_TOKEN: LLMRequestCost.Type
    OUTPUT_TOKEN: LLMRequestCost.Type
    TOTAL_TOKEN: LLMRequestCost.Type
    CACHED_INPUT_TOKEN: LLMRequestCost.Type
    CACHE_CREATION_INPUT_TOKEN: LLMRequestCost.Type
    REASONING_TOKEN: LLMRequestCost.Type
    CEL: LLMRequestCost.Type
    METADATA_KEY_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CEL_FIELD_NUMBER: _ClassVar[int]
    metadata_key: str
    type: LLMRequestCost.Type
    cel: str
    def __init__(self, metadata_key: _Optional[str] = ..., type: _Optional[_Union[LLMRequestCost.Type, str]] = ..., cel: _Optional[str] = ...) -> None: ...

class RouteCosts(_message.Message):
    __slots__ = ("route_name", "costs")
    ROUTE_NAME_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    route_name: str
    costs: _containers.RepeatedCompositeFieldContainer[LLMRequestCost]
    def __init__(self, route_name: _Optional[str] = ..., costs: _Optional[_Iterable[_Union[LLMRequestCost, _Mapping]]] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("id", "source", "conditions", "limit", "window", "request_cost", "response_cost_key", "response_cost_cel", "shadow", "model", "bucket_group", "local", "unless", "headers_off")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_COST_KEY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_COST_CEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BUCKET_GROUP_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    UNLESS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_OFF_FIELD_NUMBER: _ClassVar[int]
    id: str
    source: str
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    limit: int
    window: Window
    request_cost: int
    response_cost_key: str
    response_cost_cel: str
    shadow: bool
    model: str
    bucket_group: str
    local: bool
    unless: _containers.RepeatedScalarFieldContainer[str]
    headers_off: bool
    def __init__(self, id: _Optional[str] = ..., source: _Optional[str] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., limit: _Optional[int] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., request_cost: _Optional[int] = ..., response_cost_key: _Optional[str] = ..., response_cost_cel: _Optional[str] = ..., shadow: _Optional[bool] = ..., model: _Optional[str] = ..., bucket_group: _Optional[str] = ..., local: _Optional[bool] = ..., unless: _Optional[_Iterable[str]] = ..., headers_off: _Optional[bool] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("seconds", "months")
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    MONTHS_FIELD_NUMBER: _ClassVar[int]
    seconds: int
    months: int
    def __init__(self, seconds: _Optional[int] = ..., months: _Optional[int] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("header", "source", "method", "path", "query")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    header: HeaderCondition
    source: SourceCondition
    method: MethodCondition
    path: PathCondition
    query: HeaderCondition
    def __init__(self, header: _Optional[_Union[HeaderCondition, _Mapping]] = ..., source: _Optional[_Union[SourceCondition, _Mapping]] = ..., method: _Optional[_Union[MethodCondition, _Mapping]] = ..., path: _Optional[_Union[PathCondition, _Mapping]] = ..., query: _Optional[_Union[HeaderCondition, _Mapping]] = ...) -> None: ...

class HeaderCondition(_message.Message):
    __slots__ = ("name", "match", "value", "invert")
    class Match(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MATCH_UNSPECIFIED: _ClassVar[HeaderCondition.Match]
        EXACT: _ClassVar[HeaderCondition.Match]
        REGULAR_EXPRESSION: _ClassVar[HeaderCondition.Match]
        DISTINCT: _ClassVar[HeaderCondition.Match]
    MATCH_UNSPECIFIED: HeaderCondition.Match
    EXACT: HeaderCondition.Match
    REGULAR_EXPRESSION: HeaderCondition.Match
    DISTINCT: HeaderCondition.Match
    NAME_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    name: str
    match: HeaderCondition.Match
    value: str
    invert: bool
    def __init__(self, name: _Optional[str] = ..., match: _Optional[_Union[HeaderCondition.Match, str]] = ..., value: _Optional[str] = ..., invert: _Optional[bool] = ...) -> None: ...

class SourceCondition(_message.Message):
    __slots__ = ("cidr", "distinct", "invert")
    CIDR_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    cidr: str
    distinct: bool
    invert: bool
    def __init__(self, cidr: _Optional[str] = ..., distinct: _Optional[bool] = ..., invert: _Optional[bool] = ...) -> None: ...

class MethodCondition(_message.Message):
    __slots__ = ("methods", "invert")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    invert: bool
    def __init__(self, methods: _Optional[_Iterable[str]] = ..., invert: _Optional[bool] = ...) -> None: ...

class PathCondition(_message.Message):
    __slots__ = ("match", "value", "invert")
    class Match(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MATCH_UNSPECIFIED: _ClassVar[PathCondition.Match]
        EXACT: _ClassVar[PathCondition.Match]
        PATH_PREFIX: _ClassVar[PathCondition.Match]
        REGULAR_EXPRESSION: _ClassVar[PathCondition.Match]
    MATCH_UNSPECIFIED: PathCondition.Match
    EXACT: PathCondition.Match
    PATH_PREFIX: PathCondition.Match
    REGULAR_EXPRESSION: PathCondition.Match
    MATCH_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    match: PathCondition.Match
    value: str
    invert: bool
    def __init__(self, match: _Optional[_Union[PathCondition.Match, str]] = ..., value: _Optional[str] = ..., invert: _Optional[bool] = ...) -> None: ...
