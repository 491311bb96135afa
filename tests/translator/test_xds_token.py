"""`aigw-xds translator --xds-token-file`: the ServiceAccount token sent to the control plane (the
authorization it gets: tests/e2e/test_translator_sidecar.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw_translator.__main__ import main
from aigw_translator.xds_client import XdsConfigClient


def test_the_token_is_read_afresh_for_each_connect(tmp_path: Path):
    """Projected ServiceAccount tokens are rewritten by the kubelet (hourly): a reconnect sends the
    current one."""
    token = tmp_path / "token"
    token.write_text("first-token\n")
    client = XdsConfigClient("127.0.0.1:1", lambda _c: None, token_file=str(token))
    assert client._metadata() == (("authorization", "Bearer first-token"),)
    token.write_text("rotated-token")
    assert client._metadata() == (("authorization", "Bearer rotated-token"),)
    assert XdsConfigClient("127.0.0.1:1", lambda _c: None)._metadata() == ()


def test_an_empty_or_missing_token_file_is_an_error_the_loop_retries(tmp_path: Path):
    (tmp_path / "token").write_text("\n")
    with pytest.raises(OSError, match="empty"):
        XdsConfigClient("127.0.0.1:1", lambda _c: None, token_file=str(tmp_path / "token"))._metadata()
    with pytest.raises(OSError):
        XdsConfigClient("127.0.0.1:1", lambda _c: None, token_file=str(tmp_path / "absent"))._metadata()


def test_a_token_file_needs_xds(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    assert main(["--config", str(tmp_path / "config.json"), "--xds-token-file", "/var/run/token"]) == 1
    assert "--xds-token-file needs --xds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("xds", "tls", "warned"),
    [
        ("192.0.2.123:18000", (), True),
        ("aigw-xds.aigw-system.svc:18000", (), True),
        ("192.0.2.123:18000", ("--xds-ca", "/ca.crt"), False),
        ("127.0.0.1:18000", (), False),
        ("[::1]:18000", (), False),
        ("localhost:18000", (), False),
    ],
)
def test_a_token_over_plaintext_to_another_host_is_warned(
    xds: str, tls: tuple[str, ...], warned: bool, capsys: pytest.CaptureFixture[str]
):
    """One warning line at start (the command stops here at the bad --fleet that follows)."""
    argv = ["--xds", xds, *tls, "--xds-token-file", "/var/run/secrets/tokens/aigw-xds", "--fleet", "a/b/c"]
    assert main(argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("aigw_translator: error: --fleet")
    warnings = [line for line in err if "warning: --xds-token-file over plaintext" in line]
    assert len(warnings) == int(warned)
    if warned:
        assert f"to {xds}" in warnings[0] and "--xds-ca" in warnings[0]
