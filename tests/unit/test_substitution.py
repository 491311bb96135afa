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


def test_a_file_value_that_is_not_a_regular_file_is_an_error_not_a_wait(tmp_path, monkeypatch):
    """A Secret's file that is a FIFO (no writer ever comes) or has no end (/dev/zero) would hold the
    load (the first one runs on the event loop) forever: that value is unresolved, named, and the load goes on."""
    import os

    from aigw_xds.sources import files
    from aigw_xds.sources.files import FileSource

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "big").write_bytes(b"x" * 2048)
    monkeypatch.setattr(files, "SECRET_FILE_LIMIT_BYTES", 1024)
    files_only = SECRET.replace("substitution.aigw.run/env/apiKey: MY_KEY", "substitution.aigw.run/file/big: big")
    (tmp_path / "secrets.yaml").write_text(
        files_only.replace("key.txt", "pipe")
        + "---\n"
        + files_only.replace("name: s", "name: zero").replace("key.txt", "/dev/zero")
    )
    resources = FileSource(tmp_path).load()
    pipe = resources.get("Secret", "default", "s").resource
    zero = resources.get("Secret", "default", "zero").resource
    assert pipe.unresolved == {
        "other": "cannot read pipe: not a regular file",
        "big": "cannot read big: larger than 1024 bytes",
    }
    assert zero.unresolved == {
        "other": "cannot read /dev/zero: not a regular file",
        "big": "cannot read big: larger than 1024 bytes",
    }


def test_read_regular_reads_a_file_whole_and_refuses_what_has_no_end(tmp_path):
    import errno
    import os

    import pytest

    from aigw_xds.sources.files import read_regular

    (tmp_path / "f").write_bytes(b"abc" * 1000)
    data, st = read_regular(tmp_path / "f", 3000)
    assert data == b"abc" * 1000 and st.st_size == 3000
    with pytest.raises(OSError) as too_large:
        read_regular(tmp_path / "f", 2999)
    assert too_large.value.errno == errno.EFBIG
    os.mkfifo(tmp_path / "fifo")
    for path in (tmp_path / "fifo", tmp_path, "/dev/zero"):
        with pytest.raises(OSError) as refused:
            read_regular(path, 1 << 20)
        assert refused.value.errno == errno.EINVAL, path


def test_a_file_value_keeps_its_lines_and_one_not_utf8_is_named(tmp_path):
    from aigw_xds.sources.files import FileSource

    (tmp_path / "pem").write_bytes(b"-----BEGIN KEY-----\r\nabc\r\n-----END KEY-----\r\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00key")
    (tmp_path / "secrets.yaml").write_text(
        SECRET.replace("key.txt", "pem").replace(
            "substitution.aigw.run/env/apiKey: MY_KEY", "substitution.aigw.run/file/bin: binary"
        )
    )
    secret = FileSource(tmp_path).load().get("Secret", "default", "s").resource
    assert secret.value("other") == "-----BEGIN KEY-----\nabc\n-----END KEY-----"
    assert secret.unresolved == {"bin": "cannot read binary: not UTF-8 text"}
