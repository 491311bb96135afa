"""Small YAML builders for tests: a Gateway with routes to loopback backends."""

from __future__ import annotations

import functools
import json
import textwrap

from aigw_xds.api.decode import decode_text
from aigw_xds.resources import ResourceSet, build_resource_set


def resources(text: str, file: str = "test.yaml") -> ResourceSet:
    return build_resource_set(decode_text(textwrap.dedent(text), file))


def gateway(
    name: str = "gw",
    namespace: str = "default",
    port: int | str = 8080,
    extra_listeners: str = "",
    config: str | None = None,
) -> str:
    """A GatewayClass and a Gateway with one HTTP listener; `config` names a GatewayConfig."""
    annotations = f", annotations: {{aigateway.envoyproxy.io/gateway-config: {config}}}" if config else ""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: aigw}}
spec: {{controllerName: gateway.envoyproxy.io/gatewayclass-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {namespace}{annotations}}}
spec:
  gatewayClassName: aigw
  listeners:
    - {{name: http, protocol: HTTP, port: {port}}}
{extra_listeners}
"""


def route(
    name: str,
    models: dict[str, str | list[tuple[str, int, int]]],
    gateway_name: str = "gw",
    namespace: str = "default",
    extra: str = "",
) -> str:
    """models: model -> backend name, or model -> [(backend, priority, weight), ...]."""
    rules = []
    for model, backends in models.items():
        if isinstance(backends, str):
            backends = [(backends, 0, 1)]
        refs = "\n".join(f"        - {{name: {b}, priority: {p}, weight: {w}}}" for b, p, w in backends)
        rules.append(
            f"""    - matches:
        - headers:
            - {{type: Exact, name: x-ai-eg-model, value: {model}}}
      backendRefs:
{refs}"""
        )
    rules_text = "\n".join(rules)
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs:
    - {{name: {gateway_name}, kind: Gateway, group: gateway.networking.k8s.io}}
{extra}  rules:
{rules_text}
"""


def security_policy(target: str, body: str, name: str = "auth", namespace: str = "default", created: str = "") -> str:
    """A SecurityPolicy of `target` (its targetRefs, targetRef or targetSelectors, flow YAML) and
    `body` (the rest of its spec, YAML, indented here)."""
    stamp = f", creationTimestamp: '{created}'" if created else ""
    spec = "\n".join("  " + line for line in body.strip("\n").splitlines())
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {{name: {name}, namespace: {namespace}{stamp}}}
spec:
  {target}
{spec}
"""


def any_model_route(name: str, backend_ref: str, gateway_name: str = "gw") -> str:
    """An AIGatewayRoute of one rule without matches (it takes any model), `backend_ref` a
    backendRef's fields in flow YAML ("name: x" and more)."""
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: {gateway_name}, kind: Gateway, group: gateway.networking.k8s.io}}]
  rules:
    - backendRefs: [{{{backend_ref}}}]
"""


def backend(
    name: str, port: int, schema: str = "OpenAI", namespace: str = "default", address: str = "127.0.0.1"
) -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  schema: {{name: {schema}}}
  backendRef: {{name: {name}, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  endpoints:
    - ip: {{address: {address}, port: {port}}}
"""


def api_key(backend_name: str, key: str = "sk-test", namespace: str = "default") -> str:
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {backend_name}-key, namespace: {namespace}}}
spec:
  targetRefs:
    - {{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {backend_name}}}
  type: APIKey
  apiKey:
    secretRef: {{name: {backend_name}-key}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {backend_name}-key, namespace: {namespace}}}
stringData: {{apiKey: {key}}}
"""


def pool_route(name: str, model: str, pool: str, namespace: str = "default", pool_namespace: str = "") -> str:
    """An AIGatewayRoute sending `model` to the InferencePool `pool`."""
    where = f", namespace: {pool_namespace}" if pool_namespace else ""
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]
      backendRefs: [{{group: inference.networking.k8s.io, kind: InferencePool, name: {pool}{where}}}]
"""


def inference_pool(
    name: str, picker_port: int | None, namespace: str = "default", picker: str = "", failure_mode: str = ""
) -> str:
    """An InferencePool whose endpoint picker is the Service `<name>-epp` (port 9002); with
    `picker_port`, that Service and its EndpointSlice: one ready endpoint, 127.0.0.1:picker_port."""
    picker = picker or f"{name}-epp"
    mode = f", failureMode: {failure_mode}" if failure_mode else ""
    text = f"""
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  targetPorts: [{{number: 8000}}]
  selector: {{matchLabels: {{app: {name}}}}}
  endpointPickerRef: {{name: {picker}, port: {{number: 9002}}{mode}}}
"""
    if picker_port is None:
        return text
    return (
        text
        + f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {picker}, namespace: {namespace}}}
spec:
  selector: {{app: {picker}}}
  ports: [{{name: grpc, port: 9002, targetPort: 9002}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {picker}-x1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {picker}}}
addressType: IPv4
ports: [{{name: grpc, port: {picker_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""
    )


def client_traffic_policy(
    spec: str, name: str = "ctp", gateway_name: str = "gw", namespace: str = "default", section: str | None = None
) -> str:
    """A ClientTrafficPolicy on the Gateway (or its listener `section`), `spec` (YAML, one line)
    besides its target."""
    section_name = f", sectionName: {section}" if section else ""
    return f"""
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: {gateway_name}{section_name}}}]
  {spec}
"""


@functools.cache
def key_pair() -> tuple[str, str]:
    """A real certificate (a test CA's, for localhost and gw.example.com) and its private key, PEM:
    compile checks that a listener's Secret holds a pair Envoy can load."""
    from tests.e2e.harness.certs import CertificateAuthority

    leaf = CertificateAuthority().issue("gateway", dns=("localhost", "gw.example.com"))
    return leaf.cert, leaf.key


def tls_secret(name: str = "cert", namespace: str = "default") -> str:
    """A kubernetes.io/tls Secret holding key_pair()."""
    cert, key = key_pair()
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
stringData: {{tls.crt: {json.dumps(cert)}, tls.key: {json.dumps(key)}}}
"""
