"""AWS SigV4 for Bedrock: credentials from a policy's credentials file (or the default chain), the
region, and what is signed. The fake Bedrock (aigw_fakes.bedrock) recomputes the signatures end to
end; these tests pin the pieces."""

from __future__ import annotations

import re

import pytest

from aigw.translator.v1 import config_pb2
from aigw_translator import aws

FILE = """
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = secret-default

[team]
aws_access_key_id = AKIDTEAM
aws_secret_access_key = secret-team
aws_session_token = token-team
"""
HOST = "bedrock-runtime.eu-west-1.amazonaws.com"
PATH = "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"


def _policy(profile: str = "", region: str = "", text: str = FILE) -> config_pb2.AWSCredentials:
    return config_pb2.AWSCredentials(credentials_file=text, profile=profile, region=region)


@pytest.mark.parametrize(
    ("region", "host", "expected"),
    [
        ("us-east-1", HOST, "us-east-1"),
        ("", HOST, "eu-west-1"),
        ("", "bedrock-runtime-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
        ("", "127.0.0.1", ""),
    ],
)
def test_region_is_the_policys_else_the_hosts(region: str, host: str, expected: str) -> None:
    assert aws.region_of(_policy(region=region), host) == expected


def test_a_profile_of_the_credentials_file_signs_host_and_date_only() -> None:
    headers = aws.sign("b", _policy(), HOST, PATH, b'{"messages":[]}')
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIDDEFAULT/(\d{8})/eu-west-1/bedrock/aws4_request, "
        r"SignedHeaders=host;x-amz-date, Signature=([0-9a-f]{64})",
        headers["authorization"],
    )
    assert match is not None, headers["authorization"]
    assert headers["x-amz-date"].startswith(match.group(1))
    assert "x-amz-security-token" not in headers


def test_temporary_credentials_carry_their_token() -> None:
    headers = aws.sign("b", _policy(profile="team"), HOST, PATH, b"{}")
    assert "Credential=AKIDTEAM/" in headers["authorization"]
    assert headers["x-amz-security-token"] == "token-team"


def test_the_signature_covers_body_and_path() -> None:
    signature = lambda path, body: aws.sign("b", _policy(), HOST, path, body)["authorization"]  # noqa: E731
    one = signature(PATH, b"{}")
    assert signature(PATH, b'{"x":1}') != one
    assert signature(PATH.replace("converse", "converse-stream"), b"{}") != one


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (_policy(profile="nobody"), "profile 'nobody'"),
        (_policy(text="not an ini file ["), "profile 'default'"),
        (_policy(region="", text=FILE), None),
    ],
)
def test_missing_credentials_or_region_are_a_clear_503(policy: config_pb2.AWSCredentials, reason: str | None) -> None:
    host = HOST if reason else "10.0.0.1"  # no region in this host, none in the policy
    with pytest.raises(aws.CredentialsUnavailable) as err:
        aws.sign("default/bedrock", policy, host, PATH, b"{}")
    assert err.value.status == 503 and err.value.backend == "default/bedrock"
    assert (reason or "no region") in err.value.reason


def test_default_chain_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-env")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-env")
    monkeypatch.setattr(aws, "_chain", [])
    headers = aws.sign("b", config_pb2.AWSCredentials(region="us-west-2"), "127.0.0.1", PATH, b"{}")
    assert "Credential=AKIDENV/" in headers["authorization"] and "/us-west-2/bedrock/" in headers["authorization"]
    assert headers["x-amz-security-token"] == "token-env"


def test_an_outage_is_logged_once_and_its_end_once(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(aws.log, "error", lambda event, **kw: events.append((event, kw["backend"])))
    monkeypatch.setattr(aws.log, "info", lambda event, **kw: events.append((event, kw["backend"])))
    missing = _policy(profile="nobody")
    for _ in range(3):
        with pytest.raises(aws.CredentialsUnavailable):
            aws.sign("default/outage", missing, HOST, PATH, b"{}")
    aws.sign("default/outage", _policy(), HOST, PATH, b"{}")
    aws.sign("default/outage", _policy(), HOST, PATH, b"{}")
    assert events == [
        ("aws_credentials_unavailable", "default/outage"),
        ("aws_credentials_available", "default/outage"),
    ]


def test_temporary_credentials_are_refreshed_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Role or STS credentials: a background thread lets botocore refresh them before a request has to."""
    import threading

    refreshed = threading.Event()

    class _Refreshable:
        refresh_needed = staticmethod(lambda: False)

        def get_frozen_credentials(self) -> object:
            if threading.current_thread().name == "aws-credentials":
                refreshed.set()
            from botocore.credentials import ReadOnlyCredentials

            return ReadOnlyCredentials("AKIDROLE", "secret-role", "token-role")

    class _Session:
        def get_credentials(self) -> _Refreshable:
            return _Refreshable()

    monkeypatch.setattr(aws, "Session", _Session)
    monkeypatch.setattr(aws, "_chain", [])
    monkeypatch.setattr(aws, "REFRESH_CHECK_S", 0.01)
    headers = aws.sign("ns/role", config_pb2.AWSCredentials(region="us-east-1"), HOST, PATH, b"{}")
    assert headers["x-amz-security-token"] == "token-role"
    assert refreshed.wait(timeout=5)
