"""A translator configuration served in parts (TranslatorConfig.parts) made whole, and the merge
of a model named by several routes, which the control plane's compile and this assembly share so
that GET /v1/models lists the same whichever way the configuration travelled."""

from __future__ import annotations

from aigw.translator.v1 import config_pb2


def merge_model(models: dict[str, config_pb2.Model], model: config_pb2.Model) -> None:
    """Lists a model on /v1/models once: the first route naming it says who owns it and when it
    was created; its hosts are every naming route's hostnames, or all hosts if any of them has
    none. Never changes a Model it is given or holds (a merge puts a merged copy in its place):
    route units and runs of them share theirs."""
    existing = models.get(model.id)
    if existing is None:
        models[model.id] = model
        return
    merged = config_pb2.Model()
    merged.CopyFrom(existing)
    if existing.hosts and model.hosts:
        merged.hosts.extend(h for h in model.hosts if h not in existing.hosts)
    else:
        del merged.hosts[:]
    models[model.id] = merged


def make_whole(merged: config_pb2.TranslatorConfig) -> None:
    """A configuration served in parts, its head merged with each part in turn (protobuf merge),
    made the whole configuration in place: the routes' models (route_models) become `models`, by
    route namespace and name (the order the compile lists routes in) and merged, and `parts` is
    cleared. A whole configuration is left as it is."""
    merged.ClearField("parts")
    if not merged.route_models:
        return
    models: dict[str, config_pb2.Model] = {}
    for route in sorted(merged.route_models, key=lambda r: (r.namespace, r.name)):
        for model in route.models:
            merge_model(models, model)
    merged.models.extend(models.values())
    merged.ClearField("route_models")
