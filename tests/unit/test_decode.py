"""Decoding YAML into resource models: precise errors, warnings for kinds we do not serve."""

from __future__ import annotations

import sys

import pytest

from aigw_xds.api.decode import YAMLSyntaxError, decode_document, decode_text, split_documents
from aigw_xds.api.kinds import parse_duration, parse_quantity
from aigw_xds.compile import compile_resources
from aigw_xds.diagnostics import Origin
from aigw_xds.keys import ResourceKey
from tests.allocations import held
from tests.resource_text import backend, gateway, resources, route


def test_valid_set_has_no_diagnostics():
    rs = resources(gateway() + route("r", {"m": "b"}) + backend("b", 9000))
    assert rs.diagnostics == ()
    assert {k.kind for k in rs.items} == {"GatewayClass", "Gateway", "AIGatewayRoute", "AIServiceBackend", "Backend"}


def test_invalid_yaml_names_line_and_column():
    with pytest.raises(YAMLSyntaxError, match=r"^invalid YAML at line 3, column \d+"):
        decode_text("a: 1\nb: [1, 2\nc: 3\n", "bad.yaml")


def test_an_unclosed_quote_is_located_where_it_opens():
    """libyaml finds an unclosed quote at the next document marker, or at the end of the file; the
    message leads with where the quoted scalar began (the user's mistake: new users looked there
    only once it said so, and then looked at the end of the file first)."""
    text = 'kind: Backend\nmetadata:\n  name: "oops\n---\nkind: Backend\n'
    expected = (
        r"^invalid YAML at line 3, column 9: a quoted string is not closed "
        r"\(found unexpected document indicator at line 4, column 1\)$"
    )
    with pytest.raises(YAMLSyntaxError, match=expected):
        decode_text(text, "quote.yaml")
    with pytest.raises(
        YAMLSyntaxError, match=r"^invalid YAML at line 3, column 9: .* end of stream at line 4, column 1\)$"
    ):
        decode_text(text.split("---")[0], "quote.yaml")


def test_an_undefined_alias_is_named():
    """libyaml says only "found undefined alias"; the message adds which one, in both flow and block style."""
    with pytest.raises(YAMLSyntaxError, match=r"^invalid YAML at line 3, column 8: found undefined alias 'nope'$"):
        decode_text("a: &x 1\n---\nb: {c: *nope}\n", "alias.yaml")
    with pytest.raises(YAMLSyntaxError, match=r"^invalid YAML at line 2, column 6: found undefined alias 'x-1'$"):
        decode_text("a:\n  k: *x-1\n", "alias.yaml")


def test_duplicate_yaml_keys_are_an_error():
    with pytest.raises(YAMLSyntaxError, match=r"^invalid YAML at line 4, column 5: duplicate key 'weight'"):
        decode_text("spec:\n  rules:\n  - weight: 1\n    weight: 100\n", "dup.yaml")
    # Merge keys are not duplicates, and explicit keys may override merged ones.
    text = "kind: X\napiVersion: v1\nmetadata: {name: a}\nbase: &b {p: 1}\nnew: {<<: *b, p: 2}\n"
    [doc] = decode_text(text, "m.yaml")
    assert doc.key is not None


@pytest.mark.parametrize(
    "text",
    [
        "kind: X\nspec: {a: [1, 2.5, true, null, '3', 0x10, 1_000]}\nwhen: 2024-01-02T03:04:05Z\nday: 2024-01-02\n",
        "anchored: &a {p: [1, 2]}\nalias: *a\nscalar: &s word\nagain: *s\n",
        "base: &b {p: 1, q: 2}\nmerged: {<<: *b, p: 3}\n",
        "set: !!set {a, b}\nbytes: !!binary aGVsbG8=\npairs: !!omap [{a: 1}, {b: 2}]\n",
        "1: one\n2.5: float key\ntrue: yes\n~: null key\n'quoted': 'y'\nempty:\n",
        "- a\n- [b, {c: d}]\n---\n- second document\n---\n",
        # Every kind of scalar the resolver tells apart (a quoted one is always a string).
        "[~, null, Null, NULL, '', yes, No, on, OFF, true, False, y, n, 0x1F, 0o17, 017, -1_000, +5, 1:20,"
        " .5, -.inf, .NaN, 6.8e+3, 2024-01-02, 2024-01-02 03:04:05.5 +01:00, '1', \"true\", b12, model-7,"
        " 10.0.0.1, OpenAI, '~', default, Yes please, nothing, 1.2.3]\n",
    ],
)
def test_plain_construction_matches_pyyaml(text):
    """Documents are built directly where they are plain and by PyYAML's general construction where
    they are not: either way what comes out is PyYAML's own result."""
    import yaml

    from aigw_xds.api.decode import split_documents

    expected = [d for d in yaml.load_all(text, Loader=yaml.SafeLoader) if d is not None]
    assert [d for _, d in split_documents(text)] == expected


def test_merge_keys_follow_yaml_an_own_key_then_the_earlier_merged_mapping_wins():
    """YAML's merge key: the mapping's own keys win, then earlier merged mappings over later ones
    (PyYAML 6.0.4's general construction gets a list of merged mappings wrong: it would give x: 1
    for `c`); an alias is the anchored object itself."""
    from aigw_xds.api.decode import split_documents

    text = (
        "a: &a {x: 1, k: a}\nb: &b {<<: *a, x: 2}\nc: {<<: [*b, *a]}\nd: {<<: [*a, *b], y: 3}\n"
        "e: {x: 9, <<: *b}\nf: *b\ng: {<<: *b, <<: {x: 7, z: 1}}\n"
    )
    # A set sends the whole document down PyYAML's general path, which must merge the same way.
    for document in (text, text + "s: !!set {q}\n"):
        [(_, doc)] = split_documents(document)
        doc.pop("s", None)
        assert doc["b"] == {"x": 2, "k": "a"}
        assert doc["c"] == {"x": 2, "k": "a"}
        assert doc["d"] == {"x": 1, "k": "a", "y": 3}
        assert doc["e"] == {"x": 9, "k": "a"}
        assert doc["f"] is doc["b"]
        assert doc["g"] == {"x": 2, "k": "a", "z": 1}  # two merge keys: the earlier wins
    with pytest.raises(YAMLSyntaxError, match="expected a mapping or list of mappings for merging"):
        split_documents("a: {<<: 1}\n")
    [(_, recursive)] = split_documents("a: &r [1, *r]\n")  # the general path builds what refers to itself
    assert recursive["a"][1] is recursive["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!int abc\n", r"line 1, column 4: 'abc' is not a valid int"),
        ("a:\n  b: !!bool maybe\n", r"line 2, column 6: 'maybe' is not a valid bool"),
        ("a: [1, !!timestamp 2024-13-45]\n", r"line 1, column 8: '2024-13-45' is not a valid timestamp"),
        ("a: !!float x\ns: !!set {q}\n", r"line 1, column 4: 'x' is not a valid float"),
    ],
)
def test_a_value_its_tag_cannot_read_is_a_yaml_error_at_its_place(text, message):
    with pytest.raises(YAMLSyntaxError, match=message):
        decode_text(text, "tags.yaml")


def test_duplicate_keys_are_found_in_nested_and_sequence_mappings():
    with pytest.raises(YAMLSyntaxError, match=r"line 3, column 12: duplicate key 'b'"):
        decode_text("x:\n  - {a: 1}\n  - {b: 1, b: 2}\n", "dup.yaml")
    with pytest.raises(YAMLSyntaxError, match=r"duplicate key 'k'"):
        decode_text("a: &x {k: 1}\nb: *x\nc: {k: 1, k: 2}\n", "dup.yaml")  # the general path checks too


def test_missing_required_field_names_document_resource_and_field():
    rs = resources(
        """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: x, namespace: ns}
spec:
  backendRef: {name: x, kind: Backend, group: gateway.envoyproxy.io}
""",
        file="conf.yaml",
    )
    [diag] = rs.errors
    assert str(diag) == "error: conf.yaml#1: AIServiceBackend ns/x spec.schema: Field required"
    assert rs.bad_keys == {diag.resource}


@pytest.mark.parametrize(
    ("kind_and_spec", "errors"),
    [
        (  # in a list's item, in a model that ignores unknown fields
            "kind: Backend\nspec:\n  endpoints: [{fqdn: {hostnme: api.example.com, port: 443}}]\n",
            [("spec.endpoints[0].fqdn.hostname", "Field required (written 'hostnme'?)")],
        ),
        (  # nothing close: no guess
            "kind: Backend\nspec:\n  endpoints: [{fqdn: {port: 443}}]\n",
            [("spec.endpoints[0].fqdn.hostname", "Field required")],
        ),
        (  # a strict model: the misspelt key is an error of its own, which says it once
            "kind: AIServiceBackend\nspec:\n  schma: {name: OpenAI}\n"
            "  backendRef: {name: x, kind: Backend, group: gateway.envoyproxy.io}\n",
            [("spec.schema", "Field required"), ("spec.schma", "unknown field (did you mean schema?)")],
        ),
    ],
)
def test_a_missing_required_field_names_the_key_written_for_it(kind_and_spec, errors):
    strict = "AIServiceBackend" in kind_and_spec
    group = "aigateway.envoyproxy.io/v1beta1" if strict else "gateway.envoyproxy.io/v1alpha1"
    rs = resources(f"apiVersion: {group}\nmetadata: {{name: x, namespace: ns}}\n{kind_and_spec}", file="conf.yaml")
    assert [(d.field, d.message) for d in rs.errors] == errors


def test_wrong_type_and_unknown_field_in_strict_kind():
    rs = resources(
        gateway()
        + """
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
    - backendRefs: [{name: b, weight: heavy}]
      matchs: []
"""
    )
    fields = sorted(d.field for d in rs.errors)
    assert fields == ["spec.rules[0].backendRefs[0].weight", "spec.rules[0].matchs"]
    assert any("unknown field" in d.message for d in rs.errors)


@pytest.mark.parametrize(
    ("written", "field", "message"),
    [
        ("      backendRef: [{name: b}]", "spec.rules[0].backendRef", "unknown field (did you mean backendRefs?)"),
        ("      backendRefs: [{nam: b}]", "spec.rules[0].backendRefs[0].nam", "unknown field (did you mean name?)"),
        ("      timeouts: {requst: 5s}", "spec.rules[0].timeouts.requst", "unknown field (did you mean request?)"),
        ("      colour: blue", "spec.rules[0].colour", "unknown field"),  # nothing close: no guess
    ],
)
def test_a_misspelt_field_is_named_with_the_field_meant(written: str, field: str, message: str):
    """An unknown field close to one the resource has names it (a new user's `backendRef` read
    only "unknown field"), at any depth of the resource; a name close to none gets no guess."""
    text = f"""
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
    - matches: []
{written}
"""
    decoded = decode_document(split_documents(text)[0][1], Origin("r.yaml", 1))
    assert [(d.field, d.message) for d in decoded.diagnostics if d.field == field] == [(field, message)]


LENIENT_TYPOS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namspace: team-a
  deletionTimestamp: "2026-01-01T00:00:00Z"
spec:
  gatewayClassName: aigw
  infrastructure: {labels: {a: b}}
  listeners:
    - {name: http, protocol: HTTP, port: 8080, hostnam: api.example.com}
  adresses: [{type: IPAddress, value: 10.0.0.1}]
"""


def test_a_field_a_lenient_kind_ignores_is_a_warning_when_it_looks_misspelt():
    """From a new-user trial: Gateway API and Envoy Gateway kinds ignore fields they do not read
    (their full schemas are larger), so `namspace` put the Gateway in the default namespace and
    `hostnam` made the listener match every host, without a word. A field close to one the model
    reads is now a warning naming it; the schema's other fields (`infrastructure`, and
    `deletionTimestamp`, close to creationTimestamp) are not."""
    decoded = decode_document(split_documents(LENIENT_TYPOS)[0][1], Origin("gw.yaml", 1))
    assert decoded.resource is not None  # a warning: the document is used
    assert sorted((d.field, d.message, d.is_error) for d in decoded.diagnostics) == [
        ("metadata.namspace", "unknown field, ignored (did you mean namespace?)", False),
        ("spec.adresses", "unknown field, ignored (did you mean addresses?)", False),
        ("spec.listeners[0].hostnam", "unknown field, ignored (did you mean hostname?)", False),
    ]
    # In the strict kinds' parts that are lenient (metadata, references) too.
    route = """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: r, namepsace: x}
spec:
  parentRefs: [{name: gw, sectionNme: http}]
  rules: [{matches: []}]
"""
    decoded = decode_document(split_documents(route)[0][1], Origin("r.yaml", 1))
    assert sorted(d.field for d in decoded.diagnostics) == ["metadata.namepsace", "spec.parentRefs[0].sectionNme"]
    # Read from the Kubernetes API (which dropped unknown fields itself): not checked.
    from_api = decode_document(split_documents(LENIENT_TYPOS)[0][1], Origin("kubernetes:x"))
    assert from_api.diagnostics == ()


def test_unknown_kinds_are_skipped_and_an_unknown_api_version_is_an_error():
    rs = resources(
        """
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
apiVersion: aigateway.envoyproxy.io/v9
kind: AIServiceBackend
metadata: {name: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata: {name: p}
"""
    )
    assert len(rs.diagnostics) == 4
    # An unknown apiVersion of a kind we serve is a typo to fix, not a kind to skip.
    [apiversion] = rs.errors
    assert "unknown apiVersion aigateway.envoyproxy.io/v9" in apiversion.message
    assert apiversion.field == "apiVersion"
    assert [d.severity for d in rs.diagnostics if d is not apiversion] == ["warning"] * 3
    assert "unknown kind Widget" in rs.diagnostics[0].message
    assert rs.items == {}


@pytest.mark.parametrize(
    ("kind", "api_version", "error"),
    [
        ("AIGatewayRout", "aigateway.envoyproxy.io/v1beta1", True),
        ("AIServiceBackends", "aigateway.envoyproxy.io/v1beta1", True),
        ("AIGatewayRout", "example.com/v1", False),  # another group's: not ours to judge
        ("ModelCatalog", "aigateway.envoyproxy.io/v1beta1", False),  # close to none: a newer release's
        ("TCPRoute", "gateway.networking.k8s.io/v1alpha2", False),  # close to MCPRoute, of another group
        ("BackendLBPolicy", "gateway.networking.k8s.io/v1alpha2", False),  # a real kind, not BackendTLSPolicy
        ("InferencePoolImport", "inference.networking.x-k8s.io/v1alpha1", False),
        ("Gatway", "gateway.networking.k8s.io/v1", True),
    ],
)
def test_a_misspelt_kind_of_a_group_aigw_xds_reads_is_an_error_naming_the_kind_meant(kind, api_version, error):
    rs = resources(f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: r, namespace: default}}\nspec: {{}}\n")
    [found] = rs.diagnostics
    assert (found.severity == "error") is error
    if error:
        assert found.field == "kind" and "did you mean" in found.message


def test_a_number_written_as_a_string_is_an_error_as_the_api_server_makes_it():
    """`port: "8080"` was quietly taken for 8080 in a file, where kubectl apply is refused ("must be
    of type integer"): what validates here and what a cluster takes must not differ."""
    text = (
        gateway().replace("port: 8080", 'port: "8080"')
        + route("r", {"m": "a"}).replace("weight: 1", 'weight: "1"')
        + backend("a", 9001)
    )
    found = {(d.resource.kind, d.field): d.message for d in resources(text).errors if d.resource}
    assert found == {
        ("Gateway", "spec.listeners[0].port"): "Input should be a valid integer, not the string '8080' "
        "(written in quotes?)",
        ("AIGatewayRoute", "spec.rules[0].backendRefs[0].weight"): "Input should be a valid integer, not the "
        "string '1' (written in quotes?)",
    }


def test_a_scalar_yaml_read_as_another_type_says_so():
    """An Azure version written bare is a date to YAML, and `priority: one` was never quoted: the
    hint says what YAML did, and asks about quotes only where quotes made the string (a new user's
    review saw "(written in quotes?)" for `one`)."""
    text = (
        gateway()
        + route("r", {"m": "a"}).replace("weight: 1", "weight: one")
        + backend("a", 9001).replace("name: OpenAI", "name: AzureOpenAI, version: 2024-10-21")
    )
    found = {(d.resource.kind, d.field): d.message for d in resources(text).errors if d.resource}
    assert found == {
        ("AIGatewayRoute", "spec.rules[0].backendRefs[0].weight"): "Input should be a valid integer, not the string "
        "'one'",
        ("AIServiceBackend", "spec.schema.version"): "Input should be a valid string: YAML read 2024-10-21 as a date "
        "(quote it)",
    }


def test_duplicate_names_are_an_error_and_neither_copy_is_used():
    rs = resources(backend("b", 1) + backend("b", 2))
    dup = [d for d in rs.errors if "defined twice" in d.message]
    assert len(dup) == 2  # AIServiceBackend and Backend
    # Neither is blamed as the later one: the one written last may sort first (a platform team's
    # trial saw the file it did not touch named).
    assert "defined twice (also at test.yaml#1): rename or remove one" in dup[0].message
    assert not any(k.name == "b" for k in rs.items)
    # What refers to it is told it is invalid, not sent looking for a missing one.
    text = gateway() + route("r", {"m": "b"}) + backend("b", 1) + backend("b", 2)
    errors = [d.message for d in compile_resources(resources(text)).errors]
    assert "AIServiceBackend default/b is invalid (its own errors say why)" in errors
    assert not [m for m in errors if "not found" in m]


def test_a_gatewayclass_defined_twice_is_named_without_a_namespace():
    """A GatewayClass has none: "GatewayClass default/aigw" sent a reader looking for a namespace,
    and the Gateway then called the class "not found", where two copies of it were."""
    gateway_class = gateway().split("---")[0]
    result = compile_resources(resources(gateway() + "---" + gateway_class))
    messages = [d.message for d in result.diagnostics if d.resource and d.resource.kind in ("GatewayClass", "Gateway")]
    assert [str(d.resource) for d in result.errors] == ["GatewayClass aigw"]
    assert "GatewayClass aigw is invalid (its own errors say why); compiling anyway" in messages
    assert not [m for m in messages if "not found" in m or "default/aigw" in m]


def test_defaults_follow_envoy_ai_gateway():
    rs = resources(gateway() + route("r", {"m": "b"}) + backend("b", 9000))
    ref = rs.get("AIGatewayRoute", "default", "r").resource.spec.rules[0].backendRefs[0]
    assert ref.priority == 0 and ref.weight == 1


def test_bsp_type_must_match_its_field():
    rs = resources(
        """
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: p}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: b}]
  type: APIKey
  anthropicAPIKey: {secretRef: {name: s}}
"""
    )
    assert [d.message for d in rs.errors] == ["type APIKey needs the field apiKey"]


def test_secret_data_must_be_base64_and_values_never_print():
    rs = resources(
        """
apiVersion: v1
kind: Secret
metadata: {name: s}
data: {apiKey: "not base64!"}
"""
    )
    assert rs.errors[0].field == "data"
    ok = resources("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {apiKey: c2stc2VjcmV0}\n")
    secret = ok.get("Secret", "default", "s").resource
    assert secret.value("apiKey") == "sk-secret"
    assert "sk-secret" not in repr(secret) and "c2stc2VjcmV0" not in str(secret)


def test_v1alpha1_ai_gateway_kinds_are_accepted():
    rs = resources(backend("b", 1).replace("aigateway.envoyproxy.io/v1beta1", "aigateway.envoyproxy.io/v1alpha1"))
    assert rs.errors == [] and rs.get("AIServiceBackend", "default", "b") is not None


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2m", 120)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "60", "1x", "s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_quantities():
    assert parse_quantity("50Mi") == 50 * 1024 * 1024
    assert parse_quantity("32768") == 32768
    with pytest.raises(ValueError):
        parse_quantity("lots")


def test_a_file_read_again_decodes_only_the_documents_that_changed(tmp_path):
    """decode_file with the file's earlier decoding: an unchanged document is the very Decoded it
    was (not built or validated again), a changed one is decoded anew; a document moved to another
    index, a Secret (whose values may come from the environment) and a file with YAML directives
    are always decoded again. Then the file source: the untouched routes of an edited file are the
    same Loaded objects in the new resource set, so what was compiled from them is reused."""
    from aigw_xds.api.decode import decode_file
    from aigw_xds.sources.files import FileSource

    secret = (
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, annotations: {substitution.aigw.run/env/apiKey: KEY}}\n"
    )
    text = route("a", {"m1": "b"}) + route("b", {"m2": "b"}) + backend("b", 9000) + secret
    first = decode_file(text, "f.yaml", {"KEY": "one"})
    edited = decode_file(text.replace("m2", "m2-new"), "f.yaml", {"KEY": "two"}, earlier=first)
    assert edited == decode_file(text.replace("m2", "m2-new"), "f.yaml", {"KEY": "two"})
    assert [e is f for e, f in zip(edited.documents, first.documents, strict=True)] == [True, False, True, True, False]
    assert edited.documents[4].resource.value("apiKey") == "two"
    moved = decode_file(backend("c", 9001) + text, "f.yaml", {"KEY": "one"}, earlier=first)
    assert not any(m is f for m in moved.documents for f in first.documents)
    directive = "%YAML 1.1\n" + text.lstrip()
    with_directive = decode_file(directive, "f.yaml", {"KEY": "one"})
    again = decode_file(directive, "f.yaml", {"KEY": "one"}, earlier=with_directive)
    assert again == with_directive
    assert not any(a is b for a, b in zip(again.documents, with_directive.documents, strict=True))

    def write(model: str) -> None:
        (tmp_path / "config.yaml").write_text(
            gateway() + route("a", {"m1": "b"}) + route("b", {model: "b"}) + backend("b", 9000)
        )

    write("m2")
    source = FileSource(tmp_path)
    before = source.load()
    write("m3")
    after = source.load()
    assert before.items.keys() == after.items.keys()
    changed = {key for key in after.items if after.items[key] is not before.items[key]}
    assert changed == {ResourceKey("AIGatewayRoute", "default", "b")}


def test_the_file_source_reads_again_only_files_whose_stat_changed(tmp_path, monkeypatch):
    """A file whose inode, size and times are those of its last good read, last changed well before
    that read, is not read again. A same-size rewrite (even with its modification time set back) is
    read: its inode change time moved. A file changed within RACY_NS of its read is always read."""
    import os
    import time
    from pathlib import Path

    from aigw_xds.sources import files

    reads: list[str] = []
    real_read = files.read_regular

    def counted(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
        reads.append(path.name)
        return real_read(path, limit)

    monkeypatch.setattr(files, "read_regular", counted)
    (tmp_path / "a.yaml").write_text(route("a", {"m1": "b"}))
    (tmp_path / "b.yaml").write_text(route("b", {"m2": "b"}))
    source = files.FileSource(tmp_path)
    source.load()
    source.load()
    assert reads == ["a.yaml", "b.yaml", "a.yaml", "b.yaml"]  # just written: racy, read again
    later = time.time_ns() + 10 * files.RACY_NS
    monkeypatch.setattr(files.time, "time_ns", lambda: later)  # now both were changed long ago
    reads.clear()
    source.load()
    source.load()
    assert reads == ["a.yaml", "b.yaml"]  # read once more (still racy at that read), then not
    stat = (tmp_path / "a.yaml").stat()
    time.sleep(0.05)  # past any filesystem clock tick, so the rewrite's inode change time differs
    (tmp_path / "a.yaml").write_text(route("a", {"m9": "b"}))  # the same size
    os.utime(tmp_path / "a.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    reads.clear()
    resources = source.load()
    assert reads == ["a.yaml"]
    assert "m9" in resources.items[ResourceKey("AIGatewayRoute", "default", "a")].resource.model_dump_json()


@pytest.mark.parametrize("start", ["\ufeff", "# c\r", "# c\u2028"])
def test_a_directive_after_a_bom_or_another_line_break_is_read_as_the_whole_file_reads_it(start):
    """libyaml starts a line after a BOM, a lone CR or LS too: a directive there applies, and the file
    reads as one stream does (found by review: the pieces refused it)."""
    from aigw_xds.api.decode import decode_document, decode_file, split_documents
    from aigw_xds.diagnostics import Origin

    text = (
        start
        + "%YAML 1.1\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n"
        + ("metadata: {name: aigw}\nspec: {controllerName: x}\n")
    )
    stream = [decode_document(doc, Origin("d.yaml", index)) for index, doc in split_documents(text)]
    decoded = decode_file(text, "d.yaml")
    assert list(decoded.documents) == stream and stream[0].resource is not None
    assert list(decode_file(text, "d.yaml", earlier=decoded).documents) == stream


def test_a_document_read_again_is_what_decoding_it_afresh_gives():
    """Random edits of a multi-document file (values, block scalars whose trailing lines count,
    comments, anchors, documents added, removed and reordered, empty documents, end markers, marker
    lines with comments, a first document without a marker): decoding with the earlier decoding
    always equals decoding from scratch, and both equal decoding the file as one YAML stream (the
    pieces it is cut into parse alone as they do in the file)."""
    import random

    from aigw_xds.api.decode import decode_document, decode_file, split_documents
    from aigw_xds.diagnostics import Origin

    pieces = [
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s%d}\nstringData:\n  apiKey: |+\n    k%d\n\n",
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\nmetadata: {name: b%d}\n"
        "spec:\n  schema: {name: OpenAI}\n  backendRef: &r {name: b%d, kind: Backend, group: gateway.envoyproxy.io}\n",
        "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nspec:  # c\n"
        "  endpoints: [{ip: {address: 10.0.0.%d, port: 80}}]\nmetadata:\n  name: b%d\n"
        "  annotations:\n    note: |+\n      kept\n",
        "kind: Unknown\napiVersion: x/v1\nmetadata: {name: u%d}\nnote: >+\n  %d\n\n",
        "- not a mapping %d %d\n",
        "%.0s%.0s",  # an empty document
        "kind: Unknown\napiVersion: x/v1\nmetadata: {name: k%d}\n---x: %d\n",  # not a marker: a key
        "# a comment %d %d\n",
        "kind: Unknown\napiVersion: x/v1\nmetadata: {name: e%d}\nnote: %d\n...\n",  # an end marker
    ]
    rng = random.Random(13)
    docs = [rng.choice(pieces) % (i, i) for i in range(6)]
    earlier = None
    for _ in range(200):
        op = rng.randrange(5)
        i = rng.randrange(len(docs))
        if op == 0:
            docs[i] = rng.choice(pieces) % (rng.randrange(4), rng.randrange(4))
        elif op == 1:
            docs[i] += rng.choice(["\n", "# comment\n", "\n\n"])
        elif op == 2 and len(docs) > 1:
            docs.pop(i)
        elif op == 3:
            docs.insert(i, rng.choice(pieces) % (rng.randrange(4), rng.randrange(4)))
        else:
            j = rng.randrange(len(docs))
            docs[i], docs[j] = docs[j], docs[i]
        markers = [rng.choice(["---\n", "--- # a marker's comment\n", "---  \n"]) for _ in docs]
        text = "".join(m + d for m, d in zip(markers, docs, strict=True))
        if rng.random() < 0.2 and docs[0]:
            text = text.split("\n", 1)[1]  # the first document without a marker
        env = {"unused": str(rng.random())}
        again = decode_file(text, "r.yaml", env, earlier=earlier)
        assert again == decode_file(text, "r.yaml", env)
        stream = [decode_document(doc, Origin("r.yaml", index), env) for index, doc in split_documents(text)]
        assert list(again.documents) == stream
        earlier = again


def test_models_given_the_same_fields_share_one_set_of_them():
    """Pydantic keeps a set of the fields given per model instance (26 MB of 126,000 models at
    10,000 routes): models given the same fields share one, each still says which, and a copy
    with changes does not change it for the others."""
    from aigw_xds.api.base import ObjectMeta, ParentReference

    a, b = ObjectMeta(name="a"), ObjectMeta.model_validate({"name": "b"})
    c = ObjectMeta(name="c", namespace="team")
    assert a.model_fields_set is b.model_fields_set
    assert a.model_fields_set == {"name"} and c.model_fields_set == {"name", "namespace"}
    assert ParentReference(name="gw").model_fields_set == {"name"}
    assert a.model_dump(exclude_unset=True) == {"name": "a"}
    changed = a.model_copy(update={"namespace": "team"})
    assert changed.model_fields_set == {"name", "namespace"} and b.model_fields_set == {"name"}
    with pytest.raises(ValueError, match="frozen"):
        a.namespace = "x"  # type: ignore[misc]
    assert b.model_fields_set == {"name"}

    from pydantic import ConfigDict

    class Assignable(ObjectMeta):  # not frozen: pydantic adds to its set on assignment, so it keeps its own
        model_config = ConfigDict(frozen=False)

    one, two = Assignable(name="one"), Assignable(name="two")
    one.namespace = "team"
    assert one.model_fields_set == {"name", "namespace"} and two.model_fields_set == {"name"}
    assert a.model_fields_set == {"name"}


def test_a_document_nested_deeper_than_the_recursion_limit_allows_is_decoded_not_a_crash():
    """The fast construction recurses per level: a document nested deeper than Python's recursion
    limit lets it (at the default limit, about 450 levels) takes PyYAML's iterative construction,
    as deep as libyaml reads (1,000 levels). It used to end the reload with a RecursionError."""

    text = gateway() + "  extra: " + "[" * 900 + "]" * 900 + "\n"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # Python's default (the processes raise it): the fast path cannot build 900 levels
    try:
        [_, decoded] = decode_text(text, "deep.yaml")
    finally:
        sys.setrecursionlimit(limit)
    assert decoded.key is not None and decoded.key.kind == "Gateway" and decoded.diagnostics == ()


def test_decoded_models_are_compact_copies_equal_to_what_pydantic_validates():
    """What the decoder keeps is, model by model down to the nested ones, a copy whose dictionary
    shares its keys with its class's: much less memory than pydantic's own (21 MB less at 10,000
    routes), equal to what pydantic validates, as frozen, with the same fields given."""
    from aigw_xds.api.registry import MODELS

    costs = "  llmRequestCosts:\n    - {metadataKey: t, type: TotalToken}\n"
    text = route("r", {"m": [("b1", 0, 1), ("b2", 1, 3)]}, extra=costs)
    [(_, doc)] = split_documents(text)
    model = MODELS["AIGatewayRoute"][1]
    decoded = decode_document(doc, Origin("r.yaml", 1))
    assert decoded.resource is not None and not decoded.diagnostics
    plain = model.model_validate(doc)
    assert decoded.resource == plain and decoded.resource.model_fields_set == plain.model_fields_set
    assert decoded.resource.spec.rules[0].backendRefs[1] == plain.spec.rules[0].backendRefs[1]
    with pytest.raises(ValueError, match="frozen"):
        decoded.resource.spec = plain.spec  # type: ignore[misc]
    # Held per route, the same documents (strings shared: only the models differ).
    kept, compact = held(lambda: [decode_document(doc, Origin("r.yaml", 1)).resource for _ in range(300)])
    own, pydantic_s = held(lambda: [model.model_validate(doc) for _ in range(300)])
    assert compact < 0.7 * pydantic_s, (compact / 300, pydantic_s / 300)


def test_empty_collections_of_decoded_models_are_one_object_that_refuses_changes():
    """Every empty list and dict of the decoded models is one object (each of their own took 72-80
    bytes: 5 MB at 10,000 routes); a change to it is an error, not a change to every resource.
    Serialized, the models are what pydantic's own are; copied or pickled, their empty fields are
    the shared objects again."""
    import copy
    import pickle

    import yaml

    from aigw_xds.api.registry import MODELS

    [(_, doc)] = split_documents(route("r", {"m": [("b1", 0, 1)]}))
    [(_, other)] = split_documents(route("s", {"n": [("b2", 0, 1)]}))
    one, two = (decode_document(d, Origin("r.yaml", 1)).resource for d in (doc, other))
    plain = MODELS["AIGatewayRoute"][1].model_validate(doc)
    assert one is not None and two is not None
    assert one.metadata.labels == {} and one.spec.hostnames == []
    assert one.metadata.labels is two.metadata.annotations and one.spec.hostnames is two.spec.targetRefs
    with pytest.raises(TypeError, match="not changed"):
        one.metadata.labels["team"] = "a"
    with pytest.raises(TypeError, match="not changed"):
        two.spec.hostnames.append("example.com")
    assert one.metadata.labels == {} and two.spec.hostnames == []
    assert one == plain and one.model_dump() == plain.model_dump()
    assert one.model_dump_json() == plain.model_dump_json()
    assert yaml.safe_dump(one.model_dump()) == yaml.safe_dump(plain.model_dump())
    for twin in (copy.deepcopy(one), pickle.loads(pickle.dumps(one)), one.model_copy(deep=True)):
        assert twin == one and twin.metadata.labels is one.metadata.labels and twin.spec.hostnames is two.spec.hostnames


def test_models_built_by_calling_their_class_are_pydantic_s_own(recwarn):
    """A model the compiler builds by calling its class (a default) is not copied: pydantic does
    not take another instance from __init__, and warns when a validator gives one."""
    from aigw_xds.api.base import ObjectMeta

    meta = ObjectMeta(name="a", labels={"k": "v"})
    assert meta.name == "a" and meta.labels == {"k": "v"}
    assert not [w for w in recwarn if "custom validator" in str(w.message)]


def test_names_the_api_server_would_refuse_are_errors_and_the_others_still_load():
    """Files are held to the names Kubernetes accepts: a Gateway named gw#0 would otherwise take
    the names of fleet gw's translator parts (fleet#part), and its credentials the other's grantees."""
    rs = resources(
        gateway()
        + "---"
        + gateway(name="gw#0").split("---", 1)[1]
        + route("r", {"m": "b"})
        + backend("b", 9000)
        + """
---
apiVersion: v1
kind: Secret
metadata: {name: Key_1, namespace: Team.A}
stringData: {apiKey: x}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: listeners}
spec:
  gatewayClassName: aigw
  listeners: [{name: HTTP_1, protocol: HTTP, port: 8081}]
""",
        file="conf.yaml",
    )
    subdomain = (
        "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (a DNS-1123 subdomain)"
    )
    assert [str(d) for d in rs.errors] == [
        f"error: conf.yaml#3: Gateway default/gw#0 metadata.name: 'gw#0' is not a Kubernetes object name: {subdomain}",
        f"error: conf.yaml#7: Secret Team.A/Key_1 metadata.name: 'Key_1' is not a Kubernetes object name: {subdomain}",
        "error: conf.yaml#7: Secret Team.A/Key_1 metadata.namespace: 'Team.A' is not a Kubernetes namespace: at most "
        "63 lowercase letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)",
        f"error: conf.yaml#8: Gateway default/listeners spec.listeners[0].name: 'HTTP_1' is not a Gateway API listener "
        f"name: {subdomain}",
    ]
    assert {str(k) for k in rs.items} == {
        "GatewayClass aigw",
        "Gateway default/gw",
        "AIGatewayRoute default/r",
        "AIServiceBackend default/b",
        "Backend default/b",
    }


def test_an_empty_namespace_is_namespace_default_as_kubectl_takes_it():
    rs = resources(backend("b", 9000).replace("namespace: default", 'namespace: ""'))
    assert rs.diagnostics == ()
    assert rs.get("Backend", "default", "b").resource.metadata.namespace == "default"


def test_a_service_name_must_be_a_dns_1035_label_as_the_api_server_wants():
    service = (
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {}, namespace: default}}\nspec: {{ports: [{{port: 80}}]}}\n"
    )
    rs = resources("---\n".join(service.format(name) for name in ("1svc", "a.b", "svc-a")), file="s.yaml")
    assert [(str(d.resource), d.field) for d in rs.errors] == [
        ("Service default/1svc", "metadata.name"),
        ("Service default/a.b", "metadata.name"),
    ]
    assert "(a DNS-1035 label)" in rs.errors[0].message
    assert {str(k) for k in rs.items} == {"Service default/svc-a"}


def test_a_misspelt_top_level_field_or_a_value_in_the_wrong_case_is_named():
    """From a new-user trial: `apiversion:` read "apiVersion is missing", `metdata:` "metadata.name is
    missing", and schema `openai` listed the schemas without saying which one was meant."""
    backend_spec = "spec: {schema: {name: SCHEMA}, backendRef: {name: a, kind: Backend, group: gateway.envoyproxy.io}}"

    def said(text: str) -> list[str]:
        return [d.message for d in decode_document(split_documents(text)[0][1], Origin("a.yaml", 1)).diagnostics]

    api = "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIServiceBackend\n"
    assert said(
        api.replace("apiVersion", "apiversion") + "metadata: {name: a}\n" + backend_spec.replace("SCHEMA", "OpenAI")
    ) == ["apiVersion is missing (written 'apiversion'?)"]
    assert said(api + "metdata: {name: a}\n" + backend_spec.replace("SCHEMA", "OpenAI")) == [
        "AIServiceBackend: metadata.name is missing (written 'metdata'?)"
    ]
    [wrong_case] = said(api + "metadata: {name: a}\n" + backend_spec.replace("SCHEMA", "openai"))
    assert wrong_case.endswith("(did you mean OpenAI?)"), wrong_case
    # A value close to one (a new user wrote unit: Minutes); none for one close to nothing.
    [misspelt] = said(api + "metadata: {name: a}\n" + backend_spec.replace("SCHEMA", "Antrhopic"))
    assert misspelt.endswith("(did you mean Anthropic?)"), misspelt
    [far] = said(api + "metadata: {name: a}\n" + backend_spec.replace("SCHEMA", "Mistral"))
    assert "did you mean" not in far, far
