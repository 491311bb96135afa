"""Launching a real Envoy with a static bootstrap that wires both translator phases.

The bootstrap mirrors what the control plane is expected to emit:
- HCM: router-level ext_proc (request headers SEND, body BUFFERED; response headers SEND, body
  BUFFERED; allow_mode_override; metadata receiving AND forwarding namespace io.envoy.ai_gateway so
  the response path sees the `backend_name` the upstream phase wrote), then the router;
- routes on the exact x-ai-eg-model header, with retry on 5xx/retriable codes and
  previous_priorities so a failing priority-0 backend fails over to priority 1;
- per-backend-pool clusters whose endpoints carry aigateway.envoy.io/per_route_rule_backend_name,
  with upstream HTTP filters [ext_proc (request headers SEND, body BUFFERED, response SKIP/NONE,
  request_attributes = contract.UPSTREAM_ATTRIBUTES), header_mutation (content-length from
  dynamic metadata, add-if-absent), upstream_codec].
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from aigw_translator import contract

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

ACCESS_LOG_FORMAT = {
    "status": "%RESPONSE_CODE%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "model": "%REQ(X-AI-EG-MODEL)%",
    "aigw": "%DYNAMIC_METADATA(io.envoy.ai_gateway)%",
    "upstream": "%UPSTREAM_HOST%",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def router_ext_proc(translator_cluster: str = contract.TRANSLATOR_CLUSTER_NAME) -> dict[str, Any]:
    return {
        "@type": EXT_PROC_TYPE,
        "grpc_service": {"envoy_grpc": {"cluster_name": translator_cluster}, "timeout": "30s"},
        "failure_mode_allow": False,
        "message_timeout": "10s",
        "allow_mode_override": True,
        "processing_mode": {
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "request_trailer_mode": "SKIP",
            "response_header_mode": "SEND",
            "response_body_mode": "BUFFERED",
            "response_trailer_mode": "SKIP",
        },
        "metadata_options": {
            "receiving_namespaces": {"untyped": [contract.METADATA_NAMESPACE]},
            "forwarding_namespaces": {"untyped": [contract.METADATA_NAMESPACE]},
        },
    }


def upstream_ext_proc(translator_cluster: str = contract.TRANSLATOR_CLUSTER_NAME) -> dict[str, Any]:
    return {
        "@type": EXT_PROC_TYPE,
        "grpc_service": {"envoy_grpc": {"cluster_name": translator_cluster}, "timeout": "30s"},
        "failure_mode_allow": False,
        "message_timeout": "10s",
        "allow_mode_override": True,
        "request_attributes": list(contract.UPSTREAM_ATTRIBUTES),
        # Lets the translator set :authority (backend.upstream_host); Envoy drops it otherwise.
        "mutation_rules": {"allow_all_routing": True},
        "processing_mode": {
            "request_header_mode": "SEND",
            "request_body_mode": "BUFFERED",
            "request_trailer_mode": "SKIP",
            "response_header_mode": "SKIP",
            "response_body_mode": "NONE",
            "response_trailer_mode": "SKIP",
        },
        "metadata_options": {
            "receiving_namespaces": {"untyped": [contract.METADATA_NAMESPACE]},
            "forwarding_namespaces": {"untyped": [contract.METADATA_NAMESPACE]},
        },
    }


def upstream_http_filters() -> list[dict[str, Any]]:
    content_length = f"%DYNAMIC_METADATA({contract.METADATA_NAMESPACE}:{contract.CONTENT_LENGTH_KEY})%"
    return [
        {"name": contract.EXT_PROC_FILTER_NAME, "typed_config": upstream_ext_proc()},
        {
            "name": "envoy.filters.http.header_mutation",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {
                    "request_mutations": [
                        {
                            "append": {
                                "append_action": "ADD_IF_ABSENT",
                                "header": {"key": "content-length", "value": content_length},
                            }
                        }
                    ]
                },
            },
        },
        {
            "name": "envoy.filters.http.upstream_codec",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
            },
        },
    ]


@dataclass
class Endpoint:
    port: int
    backend_name: str
    priority: int = 0
    host: str = "127.0.0.1"


@dataclass
class Route:
    model: str
    cluster: str
    route_name: str = "default/route"


@dataclass
class Cluster:
    name: str
    endpoints: list[Endpoint] = field(default_factory=list)


def _cluster(c: Cluster) -> dict[str, Any]:
    by_priority: dict[int, list[Endpoint]] = {}
    for ep in c.endpoints:
        by_priority.setdefault(ep.priority, []).append(ep)
    return {
        "name": c.name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_KEY: {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": upstream_http_filters(),
            }
        },
        "load_assignment": {
            "cluster_name": c.name,
            "endpoints": [
                {
                    "priority": prio,
                    "lb_endpoints": [
                        {
                            "endpoint": {"address": {"socket_address": {"address": e.host, "port_value": e.port}}},
                            "metadata": {
                                "filter_metadata": {
                                    contract.INTERNAL_METADATA_NAMESPACE: {
                                        contract.BACKEND_NAME_KEY: e.backend_name,
                                        contract.UPSTREAM_HOST_KEY: e.host,
                                    }
                                }
                            },
                        }
                        for e in eps
                    ],
                }
                for prio, eps in sorted(by_priority.items())
            ],
        },
    }


def build_bootstrap(
    *,
    listen_port: int,
    admin_port: int,
    translator_ports: list[int],
    routes: list[Route],
    clusters: list[Cluster],
    access_log_path: str,
    buffer_limit_bytes: int = 52428800,
) -> dict[str, Any]:
    retry_policy = {
        "retry_on": "5xx,gateway-error,reset,connect-failure,retriable-status-codes",
        "num_retries": 3,
        "retriable_status_codes": [429, 500, 503],
        "retry_priority": {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3"
                ".PreviousPrioritiesConfig",
                "update_frequency": 1,
            },
        },
    }
    route_entries = [
        {
            "match": {"prefix": "/", "headers": [{"name": contract.MODEL_HEADER, "string_match": {"exact": r.model}}]},
            "metadata": {
                "filter_metadata": {contract.INTERNAL_METADATA_NAMESPACE: {contract.ROUTE_NAME_KEY: r.route_name}}
            },
            "route": {"cluster": r.cluster, "timeout": "0s"},
        }
        for r in routes
    ]
    route_entries.append(
        {
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body": {"inline_string": '{"error":{"message":"no route for model","type":"not_found_error"}}'},
            },
        }
    )
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "aigw",
        "access_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": access_log_path,
                    "log_format": {"json_format": ACCESS_LOG_FORMAT},
                },
            }
        ],
        "route_config": {
            "name": "aigw",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "retry_policy": retry_policy, "routes": route_entries}],
        },
        "http_filters": [
            {"name": contract.EXT_PROC_FILTER_NAME, "typed_config": router_ext_proc()},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    translator_cluster = {
        "name": contract.TRANSLATOR_CLUSTER_NAME,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_KEY: {"@type": HTTP_OPTIONS_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}
        },
        "load_assignment": {
            "cluster_name": contract.TRANSLATOR_CLUSTER_NAME,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                        for port in translator_ports
                    ]
                }
            ],
        },
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "aigw",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "per_connection_buffer_limit_bytes": buffer_limit_bytes,
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [translator_cluster, *(_cluster(c) for c in clusters)],
        },
    }


class Envoy:
    """An Envoy subprocess. Started with Popen from the (long-lived) test process."""

    def __init__(self, bootstrap: dict[str, Any], admin_port: int, listen_port: int, workdir: Path) -> None:
        self.bootstrap = bootstrap
        self.admin_port = admin_port
        self.listen_port = listen_port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "envoy.log"

    async def start(self, timeout: float = 30.0) -> None:
        config = self.workdir / "bootstrap.json"
        config.write_text(json.dumps(self.bootstrap))
        binary = shutil.which("envoy")
        assert binary, "envoy not on PATH (activate the venv)"
        self.proc = subprocess.Popen(
            [
                binary,
                "-c",
                str(config),
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "--file-flush-interval-msec",
                "20",
                "-l",
                "warning",
            ],
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"envoy exited: {self.log_path.read_text()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{self.admin_port}/ready") as resp:
                        if resp.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError("envoy did not become ready")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class AccessLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Polls until `count` entries were written (Envoy flushes access logs asynchronously)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            entries = self.entries()
            if len(entries) >= count or asyncio.get_running_loop().time() > deadline:
                return entries
            await asyncio.sleep(0.02)


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="aigw-e2e-"))
