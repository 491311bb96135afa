"""QuotaPolicy (aigateway.envoyproxy.io/v1alpha1) -> budgets of the AIServiceBackends it targets (pure).

Every backend reference of every rule that points at a targeted AIServiceBackend lists the policy's
budgets in Backend.quota_ids; the router phase skips the priorities whose quotas are spent (build.py
routes on x-aigw-priority-floor), the per-attempt phase checks them against the backend Envoy picked
(its refusal is a 429 to the client: Envoy 1.40 sends an upstream filter's local reply straight to
the client, so that one cannot fail over) and the router phase charges them when
the response ends, with the policy's cost expression (CEL over the usage, default total_tokens).
Budgets are admitted with cost 0, as Envoy AI Gateway does.

Every backend the policy targets has budgets of its own ("quota/<ns>/<policy>/<backend>/..."), as in
Envoy AI Gateway, whose rate limit descriptors start with the backend's name.

- serviceQuota: one budget for every request the backend answers (".../<backend>/service").
- perModelQuotas[]: the budgets of the requests whose model sent to the backend is modelName (the
  reference's modelNameOverride; a reference without one sends the client's model, which the
  translator compares: RateLimit.model). Its bucketRules are tried in order, and the first whose
  client selectors (headers) all match is the request's bucket (".../<backend>/model/<model>/bucket/<i>");
  the defaultBucket (".../<backend>/model/<model>/default") counts the requests no bucket rule matched. The
  budgets of one model form one RateLimit.bucket_group, in that order.

Windows: Envoy AI Gateway's 1s/1m/1h/1d and any "<n>s|m|h|d|w" or "<n>mo" (calendar months; its
open #2469 asks for weeks and months).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aigw.translator.v1 import config_pb2
from aigw_contract.costs import failing_usage, validate_cost_expression

from ..api import kinds
from ..api.base import LocalObjectReference
from ..diagnostics import Diagnostic, error, warning
from ..keys import ResourceKey
from ..resources import Loaded, ResourceSet, ResourceView
from .budgets import add_budgets, duration_window, id_order, selector_conditions
from .context import CompileContext
from .costs import FAILS_FOR
from .references import AIGW_GROUP, absent
from .status import StatusBook

KIND = "QuotaPolicy"
TARGET_KIND = "AIServiceBackend"
DEFAULT_COST_EXPRESSION = "total_tokens"


def has_quota_policies(ctx: CompileContext) -> bool:
    """Whether there is any QuotaPolicy (else the quota pass over every backend is not made)."""
    return next(iter(ctx.resources.of_kind(KIND)), None) is not None


def apply_quota_policies(
    ctx: CompileContext, translator: config_pb2.TranslatorConfig, pools: frozenset[str] = frozenset()
) -> bool:
    """Adds the budgets of every QuotaPolicy that targets a backend of the fleet (`translator`'s
    backends), and their ids to each Backend.quota_ids; says whether any backend changed. A policy
    with an invalid cost expression (reported once for the whole set by check_quota_policies) adds
    none: its error fails the Gateway (compile_resources), which is not served without them.
    `pools`: the backends that are InferencePools (named like an AIServiceBackend of their name,
    which no QuotaPolicy of its makes theirs)."""
    changed = False
    for backend in translator.backends:
        if backend.name in pools:
            continue
        namespace, _, name = backend.service_backend.partition("/")
        budgets: list[config_pb2.RateLimit] = []
        for loaded in _targeting(ctx.resources, ResourceKey(TARGET_KIND, namespace, name)):
            ctx.use(loaded)
            if any(d.is_error for d in quota_problems(loaded)):  # a warning's policy applies
                continue
            budgets.extend(_budgets(loaded, name, backend.model_name_override))
        if budgets:
            add_budgets(translator, budgets)
            ids = {b.id for b in budgets} | set(backend.quota_ids)
            del backend.quota_ids[:]
            backend.quota_ids.extend(sorted(ids, key=id_order))
            changed = True
    return changed


def _targeting(resources: ResourceView, target: ResourceKey) -> Iterator[Loaded[Any]]:
    """QuotaPolicies with a valid target naming the AIServiceBackend."""
    for loaded in resources.policies_for(KIND, target):
        if any(_is_backend_ref(ref) and ref.name == target.name for ref in loaded.resource.spec.targetRefs):
            yield loaded


def _is_backend_ref(ref: LocalObjectReference) -> bool:
    return ref.kind == TARGET_KIND and ref.group in (AIGW_GROUP, "")


def _budgets(loaded: Loaded[Any], backend: str, model_override: str) -> list[config_pb2.RateLimit]:
    """The budgets of one targeted AIServiceBackend (`backend`, its name): each backend a policy
    targets counts apart, as in Envoy AI Gateway (whose descriptors start with the backend's name)."""
    spec: kinds.QuotaPolicySpec = loaded.resource.spec
    prefix = f"quota/{loaded.key.ref}/{backend}"
    source = f"{KIND} {loaded.key.ref}"
    out: list[config_pb2.RateLimit] = []
    if spec.serviceQuota is not None:
        out.append(
            _budget(
                f"{prefix}/service",
                f"{source} spec.serviceQuota",
                spec.serviceQuota.quota,
                spec.serviceQuota.costExpression or DEFAULT_COST_EXPRESSION,
            )
        )
    models = set()
    for index, per_model in enumerate(spec.perModelQuotas):
        if (model_override and model_override != per_model.modelName) or per_model.modelName in models:
            continue  # (a model's second entry is ignored: quota_problems warns)
        models.add(per_model.modelName)
        model = per_model.modelName
        group = f"{prefix}/model/{model}"
        quota = per_model.quota
        path = f"{source} spec.perModelQuotas[{index}].quota"
        buckets = []
        for b, rule in enumerate(quota.bucketRules):
            budget = _budget(f"{group}/bucket/{b}", f"{path}.bucketRules[{b}]", rule.quota, quota.costExpression)
            budget.conditions.extend(selector_conditions(rule.clientSelectors))
            budget.shadow = bool(rule.shadowMode)
            buckets.append(budget)
        if quota.defaultBucket is not None:
            buckets.append(
                _budget(f"{group}/default", f"{path}.defaultBucket", quota.defaultBucket, quota.costExpression)
            )
        for budget in buckets:
            budget.model = model
            budget.bucket_group = group
        out.extend(buckets)
    return out


def _budget(budget_id: str, source: str, quota: kinds.Quota, cost_expression: str) -> config_pb2.RateLimit:
    return config_pb2.RateLimit(
        id=budget_id,
        source=source,
        limit=quota.limit,
        window=duration_window(quota.duration),
        request_cost=0,
        response_cost_cel=cost_expression,
    )


def quota_problems(loaded: Loaded[Any]) -> list[Diagnostic]:
    """A model given two quotas (a warning: the first applies), cost expressions
    that do not compile in the translator's CEL environment (errors), and those that fail for some
    usage a response can report (warnings: the policy applies)."""
    spec: kinds.QuotaPolicySpec = loaded.resource.spec
    expressions = []
    if spec.serviceQuota is not None and spec.serviceQuota.costExpression is not None:
        expressions.append(("spec.serviceQuota.costExpression", spec.serviceQuota.costExpression))
    for index, per_model in enumerate(spec.perModelQuotas):
        expressions.append((f"spec.perModelQuotas[{index}].quota.costExpression", per_model.quota.costExpression))
    out = []
    first_of: dict[str, int] = {}
    for index, per_model in enumerate(spec.perModelQuotas):
        first = first_of.setdefault(per_model.modelName, index)
        if first != index:
            message = (
                f"ignored: model {per_model.modelName} has a quota already (spec.perModelQuotas[{first}]), one entry "
                "a model: put its other limits in that quota's bucketRules"
            )
            out.append(warning(message, loaded.origin, loaded.key, f"spec.perModelQuotas[{index}].modelName"))
    for path, expression in expressions:
        problem = validate_cost_expression(expression)
        if problem:
            out.append(error(f"invalid CEL expression: {problem}", loaded.origin, loaded.key, path))
        elif (failing := failing_usage(expression)) is not None:
            out.append(warning(f"{FAILS_FOR} {failing}", loaded.origin, loaded.key, path))
    return out


def check_quota_policies(resources: ResourceSet, status: StatusBook) -> list[Diagnostic]:
    """Every QuotaPolicy's targets and cost expressions, checked once for the whole set: a target
    that is not an existing AIServiceBackend is an error on the policy (it applies to the others),
    an invalid expression one that fails every Gateway the policy applies to (compile_resources);
    and its Accepted condition."""
    out: list[Diagnostic] = []
    for loaded in resources.of_kind(KIND):
        spec: kinds.QuotaPolicySpec = loaded.resource.spec
        problems: list[Diagnostic] = []
        for index, ref in enumerate(spec.targetRefs):
            path = f"spec.targetRefs[{index}]"
            if ref.kind != TARGET_KIND:
                message, field_path = f"targets are AIServiceBackends, not {ref.kind}", f"{path}.kind"
            elif ref.group not in (AIGW_GROUP, ""):
                message, field_path = (
                    f"the group of an AIServiceBackend is {AIGW_GROUP}, not {ref.group}",
                    f"{path}.group",
                )
            elif resources.get(TARGET_KIND, loaded.key.namespace, ref.name) is None:
                message, field_path = absent(resources, TARGET_KIND, loaded.key.namespace, ref.name), f"{path}.name"
            else:
                continue
            problems.append(error(message, loaded.origin, loaded.key, field_path))
        found = quota_problems(loaded)
        problems.extend(d for d in found if d.is_error)
        out.extend(problems)
        out.extend(d for d in found if not d.is_error)
        if problems:
            reason = "TargetNotFound" if problems[0].field.endswith(".name") else "Invalid"
            status.set(loaded.key, "Accepted", False, reason, problems[0].detail)
        else:
            status.set(loaded.key, "Accepted", True, "Accepted")
    return out
