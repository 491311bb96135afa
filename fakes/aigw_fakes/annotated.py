"""The fakes `aigw-xds run` starts: a Backend annotated `aigw-xds.dev/fake-provider:
openai|anthropic|azure|bedrock|cohere|vertex|mcp` on a loopback IP endpoint is served by that bundled fake, so an
example runs without a provider account. The fake checks the key the gateway will send that Backend (the
one its BackendSecurityPolicy's Secret holds), read here from the resources, not from compile.

A `bedrock` fake verifies SigV4 signatures for the region of the Backend's AWSCredentials policy
(default us-east-1) with the keys of that policy's credentials file (its Secret's `credentials`
key, the policy's profile) when it has one, otherwise with the fixed test keys
`bedrock.TEST_ACCESS_KEY_ID` / `bedrock.TEST_SECRET_ACCESS_KEY` (AKIDEXAMPLE / AWS's documentation
example secret): export them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the gateway's default
credential chain.

A `vertex` fake accepts the access tokens of a fake Google token endpoint (google_auth), started
on the loopback `token_uri` of the service-account key that the Backend's GCPCredentials policy
holds, accepting that key (examples/with_fakes.py writes such a key into the policy's Secret); it
checks the policy's project and region in the request path.

An `mcp` fake (an MCP server) checks the key of the MCPRoute backendRef that names its Backend
(kind Backend, group gateway.envoyproxy.io, the route's namespace): its `securityPolicy.apiKey`
(a Secret's `apiKey`, or `inline`) where that puts it (`header`, `queryParam`, or
`Authorization: Bearer`); no such backendRef, or one without a key: any request.

An InferencePool annotated `endpoint-picker` gets a fake endpoint picker (endpoint_picker: the
Inference Extension's protocol, picking in turn) where its picker Service's EndpointSlice says (a
loopback address), and an OpenAI fake (no key) at each "ip:port" of its `aigw-xds.dev/fake-pods`
annotation (comma-separated loopback addresses): the pool's pods, among which the picker picks.

`start_annotated` is the one entry point; it imports the fakes (the `fakes` extra's packages
among their needs) only when the configuration asks for one.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from aigw_xds.keys import ResourceKey
    from aigw_xds.resources import ResourceSet

    from .common import InThread

FAKE_PROVIDER_ANNOTATION = "aigw-xds.dev/fake-provider"
# The pods of an InferencePool whose endpoint picker is a fake.
FAKE_PODS_ANNOTATION = "aigw-xds.dev/fake-pods"
# The fakes the annotation can name.
PROVIDER_NAMES = ("openai", "anthropic", "azure", "bedrock", "cohere", "vertex", "mcp", "endpoint-picker")
# The fixed keys of a bedrock fake without a credentials file (the same as bedrock.TEST_*, which
# needs aiohttp to import).
TEST_ACCESS_KEY_ID = "AKIDEXAMPLE"
TEST_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
# The group of the Backends an MCPRoute backendRef names (kind Backend).
EG_GROUP = "gateway.envoyproxy.io"
EXTRA = "pip install 'aigw-xds[fakes]'"


class FakesError(RuntimeError):
    """A problem the user can fix; its message is one line."""


class AWSKeys(NamedTuple):
    """What a bedrock fake checks signatures with."""

    region: str = "us-east-1"
    access_key_id: str = TEST_ACCESS_KEY_ID
    secret_access_key: str = TEST_SECRET_ACCESS_KEY
    session_token: str | None = None


class GCPPolicy(NamedTuple):
    """What a vertex fake checks: the project and region of the Backend's GCPCredentials policy, and
    the service-account key (JSON) its token endpoint accepts."""

    project: str | None = None
    region: str | None = None
    key_json: str = ""


class MCPEndpoint(NamedTuple):
    """Where an mcp fake serves (the backendRef's path) and looks for its key (the backendRef's
    apiKey `header` or `queryParam`; neither: Authorization: Bearer)."""

    header: str | None = None
    query_param: str | None = None
    path: str = "/mcp"


class FakeSpec(NamedTuple):
    provider: str
    host: str
    port: int
    api_key: str  # "" when no BackendSecurityPolicy (mcp: MCPRoute backendRef) gives the Backend a key
    backend: str  # where the annotation is, for messages
    aws: AWSKeys | None = None  # bedrock only
    gcp: GCPPolicy | None = None  # vertex only
    endpoint: int = 0  # which of the Backend's endpoints it listens on
    key: ResourceKey | None = None  # the Backend's
    mcp: MCPEndpoint | None = None  # mcp only
    pods: tuple[str, ...] = ()  # endpoint-picker only: the pool's pods ("ip:port")
    server_name: str = ""  # endpoint-picker only: the name Envoy asks it for (its Service's)


@dataclass
class RunningFakes:
    """The fakes one `start_annotated` started; `stop()` stops them all (errors are swallowed)."""

    fakes: list[InThread] = field(default_factory=list)
    # What they were started for: the configuration's fake_providers, as `serves` compares them.
    specs: tuple[FakeSpec, ...] = ()

    def serves(self, resources: ResourceSet) -> bool:
        """Whether these are the fakes `resources` ask for (the same providers, addresses and keys;
        where the annotations are written does not count)."""
        return [s._replace(backend="") for s in fake_providers(resources)] == [
            s._replace(backend="") for s in self.specs
        ]

    def stop(self) -> None:
        for fake in self.fakes:
            with contextlib.suppress(Exception):
                fake.stop_thread()
        self.fakes.clear()


def fake_providers(resources: ResourceSet) -> list[FakeSpec]:
    """What every Backend that asks for a bundled fake provider asks for."""
    out = []
    for loaded in resources.of_kind("Backend"):
        provider = loaded.resource.metadata.annotations.get(FAKE_PROVIDER_ANNOTATION)
        if not provider:
            continue
        for index, endpoint in enumerate(loaded.resource.spec.endpoints):
            if endpoint.ip is None or not endpoint.ip.address.startswith("127."):
                raise FakesError(f"{loaded.origin}: {loaded.key}: a fake provider needs a loopback ip endpoint")
            mcp = None
            if provider == "mcp":
                key, mcp = _mcp_key_for(resources, loaded.key)
            else:
                key = _api_key_for(resources, loaded.key.name)
            aws = _aws_keys_for(resources, loaded.key.name) if provider == "bedrock" else None
            gcp = _gcp_policy_for(resources, loaded.key.name) if provider == "vertex" else None
            where = f"{loaded.origin}: {loaded.key}"
            spec = FakeSpec(
                provider, endpoint.ip.address, endpoint.ip.port, key, where, aws, gcp, index, loaded.key, mcp
            )
            out.append(spec)
    out.extend(_fake_pickers(resources))
    return out


def _fake_pickers(resources: ResourceSet) -> list[FakeSpec]:
    """What every InferencePool annotated `endpoint-picker` asks for: its picker where its picker
    Service's EndpointSlice says, picking among its fake pods."""
    out = []
    for loaded in resources.of_kind("InferencePool"):
        annotations = loaded.resource.metadata.annotations
        if annotations.get(FAKE_PROVIDER_ANNOTATION) != "endpoint-picker":
            continue
        where = f"{loaded.origin}: {loaded.key}"
        service = loaded.resource.spec.endpointPickerRef.name
        slices = resources.with_label("EndpointSlice", "kubernetes.io/service-name", loaded.key.namespace, service)
        found = [
            (endpoint.addresses[0], port.port)
            for s in slices
            for port in (s.resource.ports or ())[:1]
            for endpoint in (s.resource.endpoints or ())[:1]
        ]
        if not found or not found[0][0].startswith("127."):
            raise FakesError(
                f"{where}: a fake endpoint picker listens where its Service {service}'s EndpointSlice says, which must "
                "be a loopback address"
            )
        pods = tuple(p.strip() for p in annotations.get(FAKE_PODS_ANNOTATION, "").split(",") if p.strip())
        if not pods or not all(p.startswith("127.") and p.rpartition(":")[2].isdigit() for p in pods):
            raise FakesError(f"{where}: {FAKE_PODS_ANNOTATION} must list the pool's fake pods as loopback ip:port, ...")
        host, port = found[0]
        server_name = f"{service}.{loaded.key.namespace}.svc"
        out.append(
            FakeSpec("endpoint-picker", host, port, "", where, key=loaded.key, pods=pods, server_name=server_name)
        )
    return out


def _api_key_for(resources: ResourceSet, backend_name: str) -> str:
    """The key the gateway will send to that backend (the fake checks it), if any."""
    for bsp in resources.of_kind("BackendSecurityPolicy"):
        spec = bsp.resource.spec
        holder = spec.apiKey or spec.anthropicAPIKey or spec.azureAPIKey
        if holder is None:
            continue
        for ref in spec.targetRefs:
            service = resources.get("AIServiceBackend", bsp.key.namespace, ref.name)
            if service is not None and service.resource.spec.backendRef.name == backend_name:
                secret = resources.get("Secret", holder.secretRef.namespace or bsp.key.namespace, holder.secretRef.name)
                if secret is not None:
                    return secret.resource.value("apiKey") or ""
    return ""


def _mcp_key_for(resources: ResourceSet, backend: ResourceKey) -> tuple[str, MCPEndpoint]:
    """The key the gateway will send that MCP server (the first MCPRoute backendRef naming the
    Backend gives it; "" when none does), where it travels and the path the server is asked at."""
    for route in resources.of_kind("MCPRoute"):
        if route.key.namespace != backend.namespace:
            continue
        for ref in route.resource.spec.backendRefs:
            if (ref.group, ref.kind, ref.name) != (EG_GROUP, "Backend", backend.name):
                continue
            if ref.namespace not in (None, backend.namespace):
                continue
            api_key = ref.securityPolicy.apiKey if ref.securityPolicy is not None else None
            if api_key is None:
                return "", MCPEndpoint(path=ref.path)
            value = api_key.inline
            if api_key.secretRef is not None:
                ref_ns = api_key.secretRef.namespace or route.key.namespace
                secret = resources.get("Secret", ref_ns, api_key.secretRef.name)
                value = secret.resource.value("apiKey") if secret is not None else None
            return value or "", MCPEndpoint(api_key.header, api_key.queryParam, ref.path)
    return "", MCPEndpoint()


def _aws_keys_for(resources: ResourceSet, backend_name: str) -> AWSKeys:
    """The region and keys the gateway will sign that backend's requests with, as far as the
    resources say (a credentials file); the test keys otherwise."""
    for bsp in resources.of_kind("BackendSecurityPolicy"):
        creds = bsp.resource.spec.awsCredentials
        if creds is None or not _targets(resources, bsp, backend_name):
            continue
        keys = AWSKeys(region=creds.region)
        file = creds.credentialsFile
        if file is None:
            return keys
        secret = resources.get("Secret", file.secretRef.namespace or bsp.key.namespace, file.secretRef.name)
        text = secret.resource.value("credentials") if secret is not None else None
        return _profile_keys(keys, text or "", file.profile)
    return AWSKeys()


def _gcp_policy_for(resources: ResourceSet, backend_name: str) -> GCPPolicy:
    """The project, region and service-account key of that backend's GCPCredentials policy."""
    for bsp in resources.of_kind("BackendSecurityPolicy"):
        creds = bsp.resource.spec.gcpCredentials
        if creds is None or not _targets(resources, bsp, backend_name):
            continue
        key_json = ""
        if creds.credentialsFile is not None:
            ref = creds.credentialsFile.secretRef
            secret = resources.get("Secret", ref.namespace or bsp.key.namespace, ref.name)
            key_json = (secret.resource.value("service_account.json") if secret is not None else None) or ""
        return GCPPolicy(creds.projectName, creds.region, key_json)
    return GCPPolicy()


def _targets(resources: ResourceSet, bsp: Any, backend_name: str) -> bool:
    for ref in bsp.resource.spec.targetRefs:
        service = resources.get("AIServiceBackend", bsp.key.namespace, ref.name)
        if service is not None and service.resource.spec.backendRef.name == backend_name:
            return True
    return False


def _profile_keys(keys: AWSKeys, text: str, profile: str) -> AWSKeys:
    """Keys from an AWS shared credentials file's profile (unchanged when it has none)."""
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text)
    except configparser.Error:
        return keys
    if not parser.has_option(profile, "aws_access_key_id") or not parser.has_option(profile, "aws_secret_access_key"):
        return keys
    section = parser[profile]
    return keys._replace(
        access_key_id=section["aws_access_key_id"],
        secret_access_key=section["aws_secret_access_key"],
        session_token=section.get("aws_session_token"),
    )


def _classes(first: FakeSpec) -> dict[str, Any]:
    try:
        from .anthropic import AnthropicFake
        from .azure_openai import AzureOpenAIFake
        from .bedrock import BedrockFake
        from .cohere import CohereFake
        from .endpoint_picker import FakeEndpointPicker
        from .google_auth import GoogleAuthFake
        from .mcp import McpFake
        from .openai import OpenAIFake
        from .vertex import VertexFake
    except ImportError as exc:
        raise FakesError(
            f"{first.backend} asks for the fake {first.provider} provider ({FAKE_PROVIDER_ANNOTATION}), "
            f"which needs the fakes extra ({exc.name or exc} is missing): {EXTRA}"
        ) from exc
    return {
        "openai": OpenAIFake,
        "anthropic": AnthropicFake,
        "azure": AzureOpenAIFake,
        "bedrock": BedrockFake,
        "cohere": CohereFake,
        "vertex": VertexFake,
        "mcp": McpFake,
        "google-auth": GoogleAuthFake,
        "endpoint-picker": FakeEndpointPicker,
    }


def _google_auth_for(classes: dict[str, Any], spec: FakeSpec, running: RunningFakes) -> Any:
    """The fake token endpoint at the loopback token_uri of the policy's key (one per port),
    started, accepting that key."""
    gcp = spec.gcp or GCPPolicy()
    wrong = FakesError(
        f"{spec.backend}: a fake vertex provider needs its GCPCredentials policy to hold a service-account key "
        "(Secret key service_account.json) whose token_uri is http on a loopback address; examples/with_fakes.py "
        "writes one"
    )
    try:
        key = json.loads(gcp.key_json)
        url = urllib.parse.urlsplit(key["token_uri"])
        host, port = url.hostname or "", url.port
    except (ValueError, KeyError, TypeError, AttributeError):
        raise wrong from None
    if url.scheme != "http" or not host.startswith("127.") or not port:
        raise wrong
    found = next((f for f in running.fakes if isinstance(f, classes["google-auth"]) and f.port == port), None)
    if found is None:
        found = classes["google-auth"](host=host, port=port, name="fake-google-auth")
        try:
            found.start_in_thread()
        except OSError as exc:
            raise FakesError(f"cannot start the fake Google token endpoint on {host}:{port}: {exc}") from exc
        running.fakes.append(found)
    try:
        found.add_service_account(key)
    except (ValueError, KeyError, TypeError):
        raise FakesError(f"{spec.backend}: the policy's service-account key has no usable private key") from None
    return found


def _make(classes: dict[str, Any], spec: FakeSpec, running: RunningFakes) -> InThread:
    name = f"fake-{spec.provider}"
    if spec.provider == "endpoint-picker":
        for pod in spec.pods:  # started here: the picker is started by the caller, which reports its port
            host, _, port = pod.rpartition(":")
            try:
                running.fakes.append(
                    classes["openai"](api_key=None, host=host, port=int(port), name=f"pod-{pod}").start_in_thread()
                )
            except OSError as exc:
                raise FakesError(f"{spec.backend}: cannot start the fake pod {pod}: {exc}") from exc
        return classes["endpoint-picker"](
            spec.pods, host=spec.host, port=spec.port, name=name, server_name=spec.server_name
        )
    if spec.provider == "vertex":
        gcp = spec.gcp or GCPPolicy()
        tokens = _google_auth_for(classes, spec, running)
        return classes["vertex"](
            token_validator=tokens, project=gcp.project, region=gcp.region, host=spec.host, port=spec.port, name=name
        )
    if spec.provider == "bedrock":
        aws = spec.aws or AWSKeys()
        return classes["bedrock"](
            aws.access_key_id, aws.secret_access_key, aws.region, aws.session_token,
            host=spec.host, port=spec.port, name=name,
        )  # fmt: skip
    if spec.provider == "mcp":
        place = spec.mcp or MCPEndpoint()
        return classes["mcp"](
            api_key=spec.api_key or None, key_header=place.header, key_query_param=place.query_param,
            path=place.path, host=spec.host, port=spec.port, name=name,
        )  # fmt: skip
    return classes[spec.provider](api_key=spec.api_key or None, host=spec.host, port=spec.port, name=name)


def start_annotated(resources: ResourceSet) -> RunningFakes:
    """Start (each in a background thread) the fake of every annotated Backend."""
    specs = fake_providers(resources)
    running = RunningFakes(specs=tuple(specs))
    if not specs:
        return running
    for spec in specs:
        if spec.provider not in PROVIDER_NAMES:
            raise FakesError(f"unknown fake provider {spec.provider!r} (one of: {', '.join(PROVIDER_NAMES)})")
    classes = _classes(specs[0])
    try:
        for spec in specs:
            fake = _make(classes, spec, running)
            try:
                fake.start_in_thread()
            except OSError as exc:
                taken = exc.errno == errno.EADDRINUSE
                why = "address already in use (stop what listens there, or choose another port)" if taken else exc
                place = "" if spec.provider == "endpoint-picker" else f" spec.endpoints[{spec.endpoint}].ip.port"
                raise FakesError(
                    f"{spec.backend}{place}: cannot start the fake {spec.provider} provider on "
                    f"{spec.host}:{spec.port}: {why}"
                ) from exc
            running.fakes.append(fake)
    except BaseException:
        running.stop()
        raise
    return running
