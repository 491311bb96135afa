"""Secret values from environment variables and files (substitution.aigw.run annotations)."""

from __future__ import annotations

from aigw_xds.api.decode import decode_text
from aigw_xds.compile import compile_resources
from aigw_xds.resources import build_resource_set
from tests.resource_text import api_key, backend, gateway, route

SECRET = """
apiVersion: v1
kind: Secret
metadata:
  name: s
  annotations:
    substitution.aigw.run/env/apiKey: MY_KEY
    substitution.aigw.run/file/other: key.txt
stringData: {apiKey: placeholder}
"""


def test_env_and_file_values_are_filled_in():
    [decoded] = decode_text(SECRET, "s.yaml", {"MY_KEY": "sk-from-env"}, lambda path: {"key.txt": "from-file\n"}[path])
    secret = decoded.resource
    assert secret.value("apiKey") == "sk-from-env" and secret.value("other") == "from-file"
    assert secret.unresolved == {}


def test_missing_variable_fails_only_the_gateway_that_needs_it_naming_the_variable():
    text = (
        gateway()
        + route("r", {"m": "b"})
        + backend("b", 1)
        + api_key("b").replace(
            "metadata: {name: b-key, namespace: default}\nstringData",
            "metadata: {name: b-key, namespace: default, annotations: "
            "{substitution.aigw.run/env/apiKey: OPENAI_API_KEY}}\nstringData",
        )
    )
    result = compile_resources(build_resource_set(decode_text(text, "t.yaml", env={})))
    [err] = result.errors
    assert "environment variable OPENAI_API_KEY is not set" in err.message
    assert err.field == "stringData.apiKey"
    ok = compile_resources(build_resource_set(decode_text(text, "t.yaml", env={"OPENAI_API_KEY": "sk-1"})))
    assert ok.errors == [] and ok.gateways["default/gw"].translator.backends[0].auth.api_key.key == "sk-1"
