"""The incremental compile against the full one: over random sequences of edits to a directory of
YAML files (read by the real FileSource, as `run` and `serve` read them), compiling with the
control plane's memo must give exactly what a compile from scratch gives: the same Gateway IR
(rules, translator configuration), the same failed fleets, status conditions and diagnostics.

The edits cover what routes read: their own spec, backends, Backends, security policies and their
Secrets, traffic policies (on routes and on the Gateway), quota policies, the GatewayConfig (global
costs, forward proxy), ReferenceGrants for a route in another namespace, the Gateway itself (its
listeners' hostnames), an InferencePool (its endpoint picker's Service and EndpointSlice),
deletions that leave references dangling, and documents made invalid (their last good version
stays, stale)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import aigw_contract as contract
from aigw_xds.compile import compile_resources
from aigw_xds.compile import incremental as shared_pieces
from aigw_xds.compile.compiler import CompileResult
from aigw_xds.compile.incremental import CompileMemo
from aigw_xds.compile.ir import whole_translator_config
from aigw_xds.keys import ResourceKey
from aigw_xds.resources import ResourceSet
from aigw_xds.sources.files import FileSource
from tests.resource_text import backend, inference_pool

BACKENDS = [f"b{i}" for i in range(5)]
ROUTES = [f"r{i}" for i in range(8)]


def gateway_doc(rng: random.Random) -> str:
    hostname = rng.choice(["", "hostname: api.example.com, "])
    config = rng.choice(["", ", annotations: {aigateway.envoyproxy.io/gateway-config: cfg}"])
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: aigw}}
spec: {{controllerName: aigw-xds.io/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default{config}}}
spec:
  gatewayClassName: aigw
  listeners:
    - {{name: http, {hostname}protocol: HTTP, port: 8080, allowedRoutes: {{namespaces: {{from: All}}}}}}
"""


def gateway_config_doc(rng: random.Random) -> str:
    """The GatewayConfig the Gateway may name: its global costs and its forward proxy are part of
    every route's context."""
    key, kind = rng.choice([("fleet_tokens", "TotalToken"), ("input_tokens", "InputToken")])
    proxy = rng.choice(
        ["", "  forwardProxy: {address: '10.0.0.9:3128'}\n", "  forwardProxy: {address: '10.0.0.8:3128'}\n"]
    )
    return f"""apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: GatewayConfig
metadata: {{name: cfg, namespace: default}}
spec:
  globalLLMRequestCosts: [{{metadataKey: {key}, type: {kind}}}]
{proxy}"""


def backend_doc(rng: random.Random, name: str) -> str:
    schema = rng.choice(["OpenAI", "Anthropic", "AzureOpenAI"])
    text = backend(name, rng.choice([8000, 8001]), schema, address=f"127.0.0.{rng.randrange(1, 4)}")
    if rng.random() < 0.1:  # its backendRef names a Backend that does not exist
        text = text.replace(f"backendRef: {{name: {name},", f"backendRef: {{name: gone-{name},", 1)
    return text


def policy_doc(rng: random.Random, name: str) -> str:
    secret = rng.choice([name, BACKENDS[0]])  # its own key, or another backend's
    return f"""apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {name}}}]
  type: APIKey
  apiKey:
    secretRef: {{name: {secret}-key}}
"""


def secret_doc(rng: random.Random, name: str) -> str:
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: {name}-key, namespace: default}}
stringData: {{apiKey: sk-{rng.randrange(3)}}}
"""


def route_doc(rng: random.Random, name: str) -> str:
    namespace = rng.choice(["default", "default", "team"])
    hostnames = rng.choice(["", "  hostnames: [api.example.com]\n"])
    rules = []
    for _ in range(rng.randrange(1, 3)):
        refs = ", ".join(
            f"{{name: {b}, namespace: default, priority: {p}}}" for p, b in enumerate(rng.sample(BACKENDS, 2))
        )
        if namespace == "default" and rng.random() < 0.25:
            refs = "{group: inference.networking.k8s.io, kind: InferencePool, name: llama, namespace: default}"
        model = rng.choice(["gpt-a", "gpt-b", "claude", f"{name}-model"])
        rules.append(
            f"    - matches: [{{headers: [{{type: Exact, name: x-ai-eg-model, value: {model}}}]}}]\n"
            f"      backendRefs: [{refs}]\n"
        )
    return (
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  parentRefs: [{{name: gw, namespace: default}}]\n{hostnames}  rules:\n" + "".join(rules)
    )


def traffic_doc(rng: random.Random) -> str:
    target = rng.choice(
        [
            "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}",
            f"{{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: {rng.choice(ROUTES)}}}",
        ]
    )
    # A response cost named by the GatewayConfig's global costs, or not (then an error or a warning).
    key = rng.choice(["", "fleet_tokens", "input_tokens"])
    cost = (
        f"\n          cost: {{request: {{from: Number, number: 0}}, response: {{from: Metadata, metadata: "
        f"{{namespace: io.envoy.ai_gateway, key: {key}}}}}}}"
        if key
        else ""
    )
    return f"""apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {{name: limits, namespace: default}}
spec:
  targetRefs: [{target}]
  timeout: {{http: {{requestTimeout: {rng.choice(["30s", "60s"])}}}}}
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{{headers: [{{name: x-tenant, type: Distinct}}]}}]
          limit: {{requests: {rng.choice([10, 20])}, unit: Minute}}{cost}
"""


def quota_doc(rng: random.Random) -> str:
    return f"""apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: QuotaPolicy
metadata: {{name: quota, namespace: default}}
spec:
  targetRefs: [{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {rng.choice(BACKENDS)}}}]
  serviceQuota:
    quota: {{limit: {rng.choice([1000, 2000])}, duration: 1h}}
"""


GRANT = """apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-team, namespace: default}
spec:
  from: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, namespace: team}]
  to: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend}]
"""


def pool_doc(rng: random.Random) -> str:
    """The pool `llama`, its picker's Service and EndpointSlice (the picker's port, whether its
    endpoint is ready and the pool's failure mode vary)."""
    text = inference_pool("llama", rng.choice([9002, 9003]), failure_mode=rng.choice(["", "FailOpen"]))
    if rng.random() < 0.3:
        text = text.replace("endpoints: [{addresses: [127.0.0.1]}]", "endpoints: []")
    return text


def initial_files(rng: random.Random) -> dict[str, str]:
    files = {"gateway.yaml": gateway_doc(rng), "grant.yaml": GRANT, "config.yaml": gateway_config_doc(rng)}
    for b in BACKENDS:
        files[f"backend-{b}.yaml"] = backend_doc(rng, b)
        files[f"policy-{b}.yaml"] = policy_doc(rng, b)
        files[f"secret-{b}.yaml"] = secret_doc(rng, b)
    for r in ROUTES:
        files[f"route-{r}.yaml"] = route_doc(rng, r)
    files["pool.yaml"] = pool_doc(rng)
    return files


def edit(rng: random.Random, files: dict[str, str]) -> str:
    """One random edit; returns what it did (for the failure message). What an edit broke is
    often put right by a later one, so that most steps serve a configuration."""
    missing = [
        (key, name) for name in BACKENDS for key in (f"secret-{name}.yaml", f"backend-{name}.yaml") if key not in files
    ]
    if "grant.yaml" not in files:
        missing.append(("grant.yaml", ""))
    if "gateway.yaml" not in files:
        missing.append(("gateway.yaml", ""))
    if "pool.yaml" not in files:
        missing.append(("pool.yaml", ""))
    broken = [k for k, text in files.items() if "bogusField" in text or "name: gone-" in text]
    if (missing or broken) and rng.random() < 0.6:
        if missing:
            key, name = rng.choice(missing)
            if key in ("grant.yaml", "gateway.yaml", "pool.yaml"):
                files[key] = {"grant.yaml": lambda _: GRANT, "gateway.yaml": gateway_doc, "pool.yaml": pool_doc}[key](
                    rng
                )
            else:
                files[key] = (secret_doc if "secret" in key else backend_doc)(rng, name)
            return f"{key} restored"
        key = rng.choice(broken)
        files[key] = files[key].replace("\n  bogusField: 1", "").replace("name: gone-", "name: ")
        return f"{key} fixed"
    roll = rng.random()
    rewrites = (  # (cumulative probability, file prefix, names, document)
        (0.35, "route", ROUTES, route_doc),
        (0.45, "backend", BACKENDS, backend_doc),
        (0.52, "secret", BACKENDS, secret_doc),
        (0.57, "policy", BACKENDS, policy_doc),
    )
    for upto, prefix, names, document in rewrites:
        if roll < upto:
            name = rng.choice(names)
            files[f"{prefix}-{name}.yaml"] = document(rng, name)
            return f"{prefix}-{name}.yaml rewritten"
    if roll < 0.65:
        doc = rng.choice(["traffic.yaml", "quota.yaml", "grant.yaml", "pool.yaml", "pool.yaml"])
        if doc in files and (doc != "pool.yaml" or rng.random() < 0.4):
            del files[doc]
            return f"{doc} deleted"
        files[doc] = {"traffic.yaml": traffic_doc, "quota.yaml": quota_doc, "pool.yaml": pool_doc}.get(
            doc, lambda _: GRANT
        )(rng)
        return f"{doc} added"
    if roll < 0.7:
        choice = rng.random()
        if choice < 0.15:
            del files["gateway.yaml"]  # its units are forgotten; restored by a later edit
            return "gateway deleted"
        if choice < 0.5:
            files["config.yaml"] = gateway_config_doc(rng)  # the routes' context changes, not the Gateway
            return "gateway config rewritten"
        files["gateway.yaml"] = gateway_doc(rng)
        return "gateway rewritten"
    if roll < 0.8:  # something a route needs goes away, or comes back
        name = rng.choice(BACKENDS)
        key = rng.choice([f"secret-{name}.yaml", f"backend-{name}.yaml"])
        if key in files:
            del files[key]
            return f"{key} deleted"
        files[key] = (secret_doc if key.startswith("secret") else backend_doc)(rng, name)
        return f"{key} restored"
    if roll < 0.9:  # an invalid document: its last good version stays in use, stale; or it is fixed
        broken = [k for k, text in files.items() if "bogusField" in text]
        if broken:
            key = rng.choice(broken)
            files[key] = files[key].replace("\n  bogusField: 1", "")
            return f"{key} fixed"
        name = rng.choice(ROUTES + BACKENDS)
        key = f"route-{name}.yaml" if name in ROUTES else f"backend-{name}.yaml"
        if key not in files:
            return "nothing"
        files[key] = files[key].replace("spec:", "spec:\n  bogusField: 1", 1)
        return f"{key} made invalid"
    name = rng.choice(ROUTES)
    key = f"route-{name}.yaml"
    if key in files:
        del files[key]
        return f"{key} deleted"
    files[key] = route_doc(rng, name)
    return f"{key} added"


def write(directory: Path, files: dict[str, str]) -> None:
    for path in directory.glob("*.yaml"):
        if path.name not in files:
            path.unlink()
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def translators(result: CompileResult) -> dict[str, bytes]:
    """The Gateways' translator configurations (GatewayIR equality leaves them out); what the build
    reads of one (translator_core) is the configuration served without its backends and models."""
    for gateway in result.gateways.values():
        served = whole_translator_config(gateway.translator_served)  # a copy of its own: changed here
        del served.backends[:]
        del served.models[:]
        assert served == gateway.translator_core
    return {name: gateway.translator.SerializeToString(deterministic=True) for name, gateway in result.gateways.items()}


@pytest.mark.parametrize("seed", range(25))
def test_incremental_compile_equals_a_full_compile(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also against a compile that resolves every backendRef's AIServiceBackend where it is named
    (incremental.shared bypassed): resolving it once per Gateway changes nothing either. The memo
    merges route units in runs of one, two and three on average (CompileMemo.run_length), so runs
    begin and end everywhere an edit can fall."""

    def direct(ctx: Any, key: Any, compute: Callable[[Any], Any]) -> Any:
        return compute(ctx)

    rng = random.Random(seed)
    files = initial_files(rng)
    source, memo = FileSource(tmp_path), CompileMemo(run_length=1 + seed % 3)
    monkeypatch.setattr(shared_pieces, "_LISTED", 1 + seed % 4)  # the index's lists turn into sets
    history: list[str] = ["initial"]
    reused = served = layouts_patched = 0
    for _ in range(30):
        write(tmp_path, files)
        resources = source.load()
        incremental = compile_resources(resources, memo=memo, seal_secret=b"s")
        full = compile_resources(resources, seal_secret=b"s")
        with monkeypatch.context() as patched:
            patched.setattr(shared_pieces, "shared", direct)
            unshared = compile_resources(resources, seal_secret=b"s")
        where = " -> ".join(history[-5:])
        assert (unshared.gateways, unshared.failed, unshared.statuses, unshared.diagnostics) == (
            full.gateways,
            full.failed,
            full.statuses,
            full.diagnostics,
        ), where
        assert incremental.gateways == full.gateways, where
        assert translators(incremental) == translators(full), where
        assert incremental.failed == full.failed, where
        assert incremental.statuses == full.statuses, where
        assert incremental.diagnostics == full.diagnostics, where
        # It holds units for the Gateways and routes there are, nothing that is gone.
        gateways = {loaded.key for loaded in resources.of_kind("Gateway")}
        routes = {loaded.key for loaded in resources.of_kind("AIGatewayRoute")}
        assert memo.units.keys() <= gateways, where
        assert all(units.keys() <= routes for units in memo.units.values()), where
        assert indexed(memo) == expected_index(memo), where
        reused += memo.reused
        layouts_patched += memo.patched
        served += "default/gw" in full.gateways
        history.append(edit(rng, files))
    assert reused > 0  # the memo was used, not bypassed
    assert layouts_patched > 0  # and edits that added or removed no route patched the last layout
    assert served >= 5  # and the sequence is not all broken configurations


def indexed(memo: CompileMemo) -> dict[Any, set[Any]]:
    """The memo's index, each token's units as a set (it keeps one unit's key alone, a few in a list)."""
    out: dict[Any, set[Any]] = {}
    for token, users in memo._index.items():
        assert users, token
        if isinstance(users, list):
            assert len(users) == len(set(users)) > 1, token
        out[token] = {users} if isinstance(users, tuple) else set(users)
    return out


def expected_index(memo: CompileMemo) -> dict[Any, set[Any]]:
    """Per token, the units that read it (and each unit its own route's key), as the memo's units say."""
    out: dict[Any, set[Any]] = {}
    for gateway, units in memo.units.items():
        for route, unit in units.items():
            for token in (*unit.tokens, ("key", route)):
                out.setdefault(token, set()).add((gateway, route))
    return out


def compiled_both_ways(resources: ResourceSet, memo: CompileMemo) -> CompileResult:
    """The set compiled with the memo and without: the same Gateways, diagnostics and translator
    configurations. Returns the compile without the memo."""
    incremental = compile_resources(resources, memo=memo, seal_secret=b"s")
    full = compile_resources(resources, seal_secret=b"s")
    assert (incremental.gateways, incremental.diagnostics) == (full.gateways, full.diagnostics)
    assert translators(incremental) == translators(full)
    return full


def test_a_route_unit_is_compiled_again_when_only_its_gateway_context_changed(tmp_path: Path) -> None:
    """The GatewayConfig's global costs are part of every route's context (context_key): a rate limit
    whose response cost they define is valid, and once they stop defining it, is not; the routes
    themselves read nothing that changed."""
    rng = random.Random(0)
    files = initial_files(rng)
    files["gateway.yaml"] = gateway_doc(rng).replace(
        "namespace: default}", "namespace: default, annotations: {aigateway.envoyproxy.io/gateway-config: cfg}}"
    )
    files["traffic.yaml"] = traffic_doc(random.Random(3))
    assert "key: fleet_tokens" in files["traffic.yaml"]  # the seed's choice
    source, memo = FileSource(tmp_path), CompileMemo()
    outcomes = []
    for key, kind in (("fleet_tokens", "TotalToken"), ("input_tokens", "InputToken")):
        files["config.yaml"] = gateway_config_doc(rng).replace("input_tokens", key).replace("fleet_tokens", key)
        files["config.yaml"] = files["config.yaml"].replace("InputToken", kind).replace("TotalToken", kind)
        write(tmp_path, files)
        full = compiled_both_ways(source.load(), memo)
        outcomes.append(any("fleet_tokens" in d.message for d in full.diagnostics))
    assert outcomes == [False, True]  # the second compile reported the cost it no longer defines


def test_a_compile_that_failed_midway_leaves_nothing_the_next_one_patches_wrongly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compile that raised (a bug of ours) saw an edit but laid nothing out: the next compile must
    not patch the layout from before it with only its own edit."""
    from aigw_xds.compile import gateways

    files = initial_files(random.Random(0))  # a configuration that serves
    source, memo = FileSource(tmp_path), CompileMemo()
    write(tmp_path, files)
    assert "default/gw" in compile_resources(source.load(), memo=memo, seal_secret=b"s").gateways

    def rename_models(route: str) -> None:  # the same route, other models
        files[f"route-{route}.yaml"] = files[f"route-{route}.yaml"].replace("value: ", "value: renamed-")

    rename_models(ROUTES[0])
    write(tmp_path, files)
    with monkeypatch.context() as broken:
        broken.setattr(gateways, "client_traffic", lambda *_: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            compile_resources(source.load(), memo=memo, seal_secret=b"s")
    rename_models(ROUTES[1])
    write(tmp_path, files)
    full = compiled_both_ways(source.load(), memo)
    assert b"renamed-" in translators(full)["default/gw"]


@pytest.mark.parametrize("seed", range(25))
def test_models_are_listed_in_the_routes_order_whether_served_in_parts_or_whole(tmp_path: Path, seed: int) -> None:
    """Served in parts, a configuration carries each route's models in that route's part, and the
    translator lists and merges them when it puts the parts together (make_whole); served whole (a
    QuotaPolicy marks the backends) the compile does the same. Either way /v1/models lists each
    model once, by route (namespace, then name) and rule, for every host if a route naming it has
    no hostnames and its listener none either: routes of two namespaces name the same models, some
    for one host, some for all."""
    rng = random.Random(seed)
    files = {name: text.replace("name: gone-", "name: ") for name, text in initial_files(rng).items()}
    write(tmp_path, files)
    in_parts = compile_resources(FileSource(tmp_path).load(), seal_secret=b"s")
    targets = ", ".join(f"{{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: {b}}}" for b in BACKENDS)
    files["quota.yaml"] = (
        "apiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: QuotaPolicy\n"
        "metadata: {name: quota, namespace: default}\n"
        f"spec:\n  targetRefs: [{targets}]\n  serviceQuota:\n    quota: {{limit: 1000, duration: 1h}}\n"
    )
    write(tmp_path, files)
    whole = compile_resources(FileSource(tmp_path).load(), seal_secret=b"s")
    assert len(in_parts.gateways["default/gw"].translator_served) == 1 + contract.TRANSLATOR_CONFIG_PARTS
    assert len(whole.gateways["default/gw"].translator_served) == 1

    expected: dict[str, list[str]] = {}  # read from the routes' YAML
    routes = [yaml.safe_load(files[f"route-{r}.yaml"]) for r in ROUTES]
    # A route naming no hostname is listed on its listener's, if it has one (reached there alone).
    [listener] = next(d for d in yaml.safe_load_all(files["gateway.yaml"]) if d["kind"] == "Gateway")["spec"][
        "listeners"
    ]
    for route in sorted(routes, key=lambda r: (r["metadata"]["namespace"], r["metadata"]["name"])):
        hosts = route["spec"].get("hostnames", []) or ([listener["hostname"]] if "hostname" in listener else [])
        for rule in route["spec"]["rules"]:
            model = rule["matches"][0]["headers"][0]["value"]
            expected[model] = hosts if expected.get(model, hosts) and hosts else []
    for result in (in_parts, whole):
        listed = result.gateways["default/gw"].translator.models
        assert [(m.id, list(m.hosts)) for m in listed] == list(expected.items())


def test_an_edited_route_makes_only_its_part_of_the_translator_configuration_anew(tmp_path: Path) -> None:
    """Of the 64 parts of a translator configuration, a route's edit makes its own part anew; the
    others are the very objects the last compile made (a run of routes spans many parts: they used
    to be made again, 2.8 MB at 10,000 routes, and found equal). Adding a route makes anew the
    parts its run's routes are in, and the result is a full compile's."""
    from tests.resource_text import gateway, route

    def write_routes(models: dict[int, str]) -> None:
        text = "".join(route(f"r{i}", {model: "b"}) for i, model in models.items())
        (tmp_path / "routes.yaml").write_text(text)

    (tmp_path / "gateway.yaml").write_text(gateway() + backend("b", 9000))
    models = {i: f"m{i}" for i in range(300)}
    write_routes(models)
    source, memo = FileSource(tmp_path), CompileMemo()
    before = compile_resources(source.load(), memo=memo, seal_secret=b"s").gateways["default/gw"].translator_served
    models[150] = "edited"
    write_routes(models)
    resources = source.load()
    after = compile_resources(resources, memo=memo, seal_secret=b"s").gateways["default/gw"].translator_served
    assert after == compile_resources(resources, seal_secret=b"s").gateways["default/gw"].translator_served
    remade = [at for at, (was, now) in enumerate(zip(before[1:], after[1:], strict=True)) if was is not now]
    assert remade == [shared_pieces.translator_part(ResourceKey("AIGatewayRoute", "default", "r150"))]
    assert b"edited" in after[1 + remade[0]].packed and b"edited" not in before[1 + remade[0]].packed

    models[300] = "added"
    write_routes(models)
    resources = source.load()
    added = compile_resources(resources, memo=memo, seal_secret=b"s").gateways["default/gw"].translator_served
    assert added == compile_resources(resources, seal_secret=b"s").gateways["default/gw"].translator_served
    assert sum(was is not now for was, now in zip(after[1:], added[1:], strict=True)) >= 1
