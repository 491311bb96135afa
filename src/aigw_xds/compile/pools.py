"""InferencePool (Gateway API Inference Extension) -> what a rule sending to it needs: the pool's
endpoint picker (its Service resolved to the picker's endpoints) and the translator's Backend for
the pool (the OpenAI schema its model servers speak, and the BackendSecurityPolicy that targets it).

The gateway does not know the pool's pods: for each request Envoy asks the picker, which watches
them, and connects where it answers (as Envoy AI Gateway does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aigw_contract as contract
from aigw.translator.v1 import config_pb2

from ..api import kinds
from ..resources import Loaded
from . import ir
from .backends import CORE_GROUP, service_reach
from .context import CompileContext
from .security import backend_auth

INFERENCE_GROUP = "inference.networking.k8s.io"
# The picker's own Envoy cluster: this, then "<ns>/<pool>".
PICKER_CLUSTER_PREFIX = "aigw-epp/"
# What a pool's model servers speak.
POOL_SCHEMA = config_pb2.Schema(name="OpenAI", prefix=contract.DEFAULT_SCHEMA_PREFIX)


@dataclass(frozen=True)
class Pool:
    """What an InferencePool resolves to, the same for every backendRef naming it."""

    picker: ir.EndpointPicker
    # What every backendRef's Backend entry holds of it, copied into each entry (never changed itself).
    backend: config_pb2.Backend


def resolve_pool(ctx: CompileContext, pool_loaded: Loaded[Any]) -> Pool | None:
    """The pool's picker and Backend; None when its picker cannot be reached (an error reported, and
    the pool's ResolvedRefs=False)."""
    pool = _resolved(ctx, pool_loaded)
    if pool is not None:
        ctx.status.set(pool_loaded.key, "ResolvedRefs", True, "ResolvedRefs")
    else:
        problem = next((d.detail for d in reversed(ctx.diagnostics) if d.resource == pool_loaded.key), "")
        ctx.status.set(pool_loaded.key, "ResolvedRefs", False, "InvalidExtensionRef", problem)
    return pool


def _resolved(ctx: CompileContext, pool_loaded: Loaded[Any]) -> Pool | None:
    pool: kinds.InferencePool = pool_loaded.resource
    ref = pool.spec.endpointPickerRef
    if ref.kind != "Service" or ref.group not in (CORE_GROUP, "core"):
        ctx.error(
            f"endpointPickerRef names a {ref.group or 'core'}/{ref.kind}: the endpoint picker is reached as a core "
            "Service",
            pool_loaded,
            "spec.endpointPickerRef.kind",
        )
        return None
    if ref.failureMode == "FailOpen":
        ctx.warn(
            "failureMode FailOpen is served as FailClose: the gateway does not know the pool's pods, so a request "
            "its endpoint picker did not place gets a 503 (as in Envoy AI Gateway)",
            pool_loaded,
            "spec.endpointPickerRef.failureMode",
        )
    namespace = pool_loaded.key.namespace
    service = ctx.lookup("Service", namespace, ref.name)
    if service is None:
        ctx.error(ctx.absent("Service", namespace, ref.name), pool_loaded, "spec.endpointPickerRef.name")
        return None
    if service.resource.spec.type == "ExternalName":
        ctx.error(
            f"Service {service.key.ref} is of type ExternalName: an endpoint picker is reached at its Service's "
            "endpoints (the Inference Extension allows no ExternalName Service)",
            pool_loaded,
            "spec.endpointPickerRef.name",
        )
        return None
    assert ref.port is not None  # the model requires it for a Service
    reached = service_reach(ctx, service, ref.port.number, pool_loaded, "spec.endpointPickerRef", "an endpoint picker")
    if reached is None:
        return None
    key = pool_loaded.key.ref
    picker = ir.EndpointPicker(key, PICKER_CLUSTER_PREFIX + key, reached.endpoints, reached.upstream_host)
    backend = config_pb2.Backend(service_backend=key, schema=POOL_SCHEMA, auth=backend_auth(ctx, pool_loaded))
    return Pool(picker, backend)
