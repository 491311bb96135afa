"""AWS SigV4 for Bedrock: credentials from a policy's credentials file (or the default chain), the
region, and what is signed. The fake Bedrock (aigw_fakes.bedrock) recomputes the signatures end to
end; these tests pin the pieces."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator

import pytest
import requests
import structlog
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from aigw.translator.v1 import config_pb2
from aigw_fakes import AWSSTSFake, BedrockFake, OIDCIssuerFake
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID, TEST_CLIENT_SECRET
from aigw_translator import aws, token_cache
from aigw_translator.errors import CredentialsUnavailable

from .test_token_cache import Clock, Timers

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
    with pytest.raises(CredentialsUnavailable) as err:
        aws.sign("default/bedrock", policy, host, PATH, b"{}")
    assert err.value.status == 503 and err.value.backend == "default/bedrock"
    assert (reason or "no region") in err.value.reason


@pytest.fixture
def chain_cache(monkeypatch: pytest.MonkeyPatch) -> tuple[Clock, Timers]:
    """aws's credential cache on a test clock, its fetches inline, its timers fired by the test."""
    clock, timers = Clock(), Timers()
    cache: token_cache.TokenCache[tuple[str, ...], ReadOnlyCredentials] = token_cache.TokenCache(
        credential=aws.CREDENTIALS,
        event="aws_credentials",
        short_lifetime_fraction=aws._cache.short_lifetime_fraction,
        clock=clock,
        spawn=lambda run: run(),
        schedule=timers,
    )
    monkeypatch.setattr(aws, "_cache", cache)
    return clock, timers


class _Chain:
    """A botocore Session whose default chain answers what the test gives (None: it finds none; an
    exception: raised)."""

    answers: list[Credentials | Exception | None] = []
    calls = 0

    def get_credentials(self) -> Credentials | None:
        type(self).calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch) -> type[_Chain]:
    monkeypatch.setattr(_Chain, "answers", [])
    monkeypatch.setattr(_Chain, "calls", 0)
    monkeypatch.setattr(aws, "Session", _Chain)
    return _Chain


def _role_credentials(key: str, lifetime_s: float) -> RefreshableCredentials:
    """Temporary credentials as botocore's role providers give them (they expire)."""
    expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lifetime_s)).isoformat()
    metadata = {"access_key": key, "secret_key": f"secret-{key}", "token": f"token-{key}", "expiry_time": expiry}
    return RefreshableCredentials.create_from_metadata(metadata, refresh_using=lambda: metadata, method="test-role")


def test_default_chain_reads_the_environment(monkeypatch: pytest.MonkeyPatch, chain_cache: object) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-env")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-env")
    headers = aws.sign("b", config_pb2.AWSCredentials(region="us-west-2"), "127.0.0.1", PATH, b"{}")
    assert "Credential=AKIDENV/" in headers["authorization"] and "/us-west-2/bedrock/" in headers["authorization"]
    assert headers["x-amz-security-token"] == "token-env"


def test_an_outage_is_logged_once_and_its_end_once(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    monkeypatch.setattr(aws.log, "error", lambda event, **kw: events.append((event, kw["backend"])))
    monkeypatch.setattr(aws.log, "info", lambda event, **kw: events.append((event, kw["backend"])))
    missing = _policy(profile="nobody")
    for _ in range(3):
        with pytest.raises(CredentialsUnavailable):
            aws.sign("default/outage", missing, HOST, PATH, b"{}")
    aws.sign("default/outage", _policy(), HOST, PATH, b"{}")
    aws.sign("default/outage", _policy(), HOST, PATH, b"{}")
    assert events == [
        ("aws_credentials_unavailable", "default/outage"),
        ("aws_credentials_available", "default/outage"),
    ]


def test_the_default_chains_temporary_credentials_are_fetched_anew_before_they_expire(
    chain: type[_Chain], chain_cache: tuple[Clock, Timers]
) -> None:
    """A role of the chain (IRSA, container, instance): its credentials serve until 20% of their
    lifetime (as botocore reports it) remains, then the chain is resolved again off any request."""
    clock, timers = chain_cache
    chain.answers = [_role_credentials("ASIAFIRST", 1000), _role_credentials("ASIASECOND", 3600)]
    policy = config_pb2.AWSCredentials(region="us-east-1")
    assert aws.sign("ns/role", policy, HOST, PATH, b"{}")["x-amz-security-token"] == "token-ASIAFIRST"
    [(delay, _)] = timers.pending
    assert delay == pytest.approx(800, abs=5)  # not the hour static credentials are kept
    clock.now += delay
    assert aws.sign("ns/role", policy, HOST, PATH, b"{}")["x-amz-security-token"] == "token-ASIAFIRST"
    timers.fire()
    assert chain.calls == 2
    assert aws.sign("ns/role", policy, HOST, PATH, b"{}")["x-amz-security-token"] == "token-ASIASECOND"
    assert timers.pending[0][0] == pytest.approx(3300, abs=5)


def test_the_default_chains_static_credentials_are_looked_for_again_hourly(
    chain: type[_Chain], chain_cache: tuple[Clock, Timers]
) -> None:
    clock, timers = chain_cache
    chain.answers = [Credentials("AKIDSTATIC", "secret-static"), Credentials("AKIDROTATED", "secret-rotated")]
    policy = config_pb2.AWSCredentials(region="us-east-1")
    assert "Credential=AKIDSTATIC/" in aws.sign("ns/static", policy, HOST, PATH, b"{}")["authorization"]
    [(delay, _)] = timers.pending
    assert delay == pytest.approx(aws.STATIC_RECHECK_S - token_cache.REFRESH_BEFORE)
    clock.now += delay
    timers.fire()
    assert "Credential=AKIDROTATED/" in aws.sign("ns/static", policy, HOST, PATH, b"{}")["authorization"]
    assert chain.calls == 2


def test_a_missing_default_chain_is_a_503_and_one_log_line_naming_backend_and_policy(
    chain: type[_Chain], chain_cache: tuple[Clock, Timers]
) -> None:
    clock, timers = chain_cache
    chain.answers = [None]
    policy = config_pb2.AWSCredentials(region="us-east-1", policy="ns/bedrock-chain")
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(CredentialsUnavailable) as err:
                aws.sign("ns/bedrock", policy, HOST, PATH, b"{}")
            assert err.value.status == 503 and err.value.backend == "ns/bedrock"
            assert "the default credential chain found none" in err.value.message
        # The chain appears (a role's token file is mounted): found without a restart.
        chain.answers = [Credentials("AKIDLATER", "secret-later")]
        clock.now += timers.pending[0][0]
        timers.fire()
        assert "Credential=AKIDLATER/" in aws.sign("ns/bedrock", policy, HOST, PATH, b"{}")["authorization"]
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("aws_credentials_unavailable", "error"),
        ("aws_credentials_recovered", "info"),
    ]
    assert logs[0]["backend"] == "ns/bedrock" and logs[0]["policy"] == "ns/bedrock-chain"
    assert logs[0]["reason"] == "the default credential chain found none"


def test_a_failing_default_chain_says_which_provider_failed(chain: type[_Chain], chain_cache: object) -> None:
    chain.answers = [CredentialRetrievalError(provider="container-role", error_msg="connection refused")]
    policy = config_pb2.AWSCredentials(region="us-east-1", policy="ns/bedrock-chain")
    with structlog.testing.capture_logs() as logs, pytest.raises(CredentialsUnavailable) as err:
        aws.sign("ns/bedrock", policy, HOST, PATH, b"{}")
    assert err.value.status == 503
    [line] = logs
    assert line["event"] == "aws_credentials_unavailable" and line["policy"] == "ns/bedrock-chain"
    assert line["reason"].startswith("the default credential chain failed: CredentialRetrievalError: ")
    assert "container-role" in line["reason"] and "connection refused" in err.value.message


def test_a_configuration_prefetches_the_default_chain_once_for_its_backends(
    chain: type[_Chain], chain_cache: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_cache, "thread", lambda run: run())
    chain.answers = [Credentials("AKIDPREFETCHED", "secret-prefetched")]
    cfg = config_pb2.TranslatorConfig(name="ns/gw")
    for name in ("ns/chain-a", "ns/chain-b"):
        cfg.backends.add(name=name).auth.aws_credentials.region = "us-east-1"
    cfg.backends.add(name="ns/file").auth.aws_credentials.credentials_file = FILE
    token_cache.prefetch([cfg], aws.PREFETCH)
    assert chain.calls == 1
    headers = aws.sign("ns/chain-b", config_pb2.AWSCredentials(region="us-east-1"), HOST, PATH, b"{}")
    assert "Credential=AKIDPREFETCHED/" in headers["authorization"] and chain.calls == 1


# ---- OIDC token exchange: STS AssumeRoleWithWebIdentity against the fakes ---------------------------

ROLE = "arn:aws:iam::123456789012:role/aigw-bedrock"
CONVERSE = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'


@pytest.fixture
def exchange(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake]]:
    from aigw_translator import oidc

    aws.reset()
    oidc.reset()
    with (
        OIDCIssuerFake(token_lifetime_s=3600) as issuer,
        BedrockFake(region="us-west-2") as bedrock,
        AWSSTSFake(issuer.verify, roles={ROLE: TEST_CLIENT_ID}, accept=[bedrock]) as sts,
    ):
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts.url)
        yield issuer, sts, bedrock
    aws.reset()
    oidc.reset()


def _oidc_policy(
    issuer: OIDCIssuerFake, role: str = ROLE, secret: str = TEST_CLIENT_SECRET
) -> config_pb2.AWSCredentials:
    return config_pb2.AWSCredentials(
        region="us-west-2",
        role_arn=role,
        oidc=config_pb2.OIDCToken(
            issuer=issuer.issuer, client_id=TEST_CLIENT_ID, client_secret=secret, audience="sts.amazonaws.com"
        ),
    )


def _send(bedrock: BedrockFake, backend: str, policy: config_pb2.AWSCredentials) -> requests.Response:
    host = f"127.0.0.1:{bedrock.port}"
    headers = aws.sign(backend, policy, host, PATH, CONVERSE)
    return requests.post(f"http://{host}{PATH}", data=CONVERSE, headers=headers, timeout=5)


def test_oidc_token_is_exchanged_for_role_credentials_that_bedrock_accepts(
    exchange: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake],
) -> None:
    issuer, sts, bedrock = exchange
    policy = _oidc_policy(issuer)
    for backend in ("ns/bedrock-a", "ns/bedrock-b"):
        answer = _send(bedrock, backend, policy)
        assert answer.status_code == 200, answer.text
    [issued] = sts.issued  # one role session for both backends of the policy
    assert issued.role_arn == ROLE and issued.subject == TEST_CLIENT_ID
    assert issued.session_name == aws.session_name(policy) and re.fullmatch(r"aigw-[0-9a-f]{16}", issued.session_name)
    assert [c.access_key_id for c in bedrock.calls] == [issued.access_key_id] * 2
    assert all(r.header("x-amz-security-token") == issued.session_token for r in bedrock.requests)
    [call] = sts.requests
    assert call.header("authorization") is None  # AssumeRoleWithWebIdentity is an unsigned call
    assert len(issuer.issued) == 1


def test_short_lived_role_credentials_rotate_without_a_refused_request(
    exchange: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake],
) -> None:
    issuer, sts, bedrock = exchange
    sts.credential_lifetime_s = 2
    issuer.token_lifetime_s = 3
    policy = _oidc_policy(issuer)
    deadline = time.monotonic() + 6
    statuses = []
    while time.monotonic() < deadline:
        statuses.append(_send(bedrock, "ns/bedrock", policy).status_code)
        time.sleep(0.05)
    assert set(statuses) == {200}
    assert len(sts.issued) >= 3 and len(issuer.issued) >= 2
    assert len({c.access_key_id for c in bedrock.calls}) >= 3


def test_a_refused_exchange_is_one_log_line_naming_backend_and_role_and_a_503(
    exchange: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake],
) -> None:
    issuer, sts, bedrock = exchange
    policy = _oidc_policy(issuer, role="arn:aws:iam::123456789012:role/not-trusted")
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(CredentialsUnavailable) as err:
                _send(bedrock, "ns/bedrock", policy)
            assert err.value.status == 503 and "AccessDenied" in err.value.message
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["event"] == "aws_credentials_unavailable"
    assert errors[0]["backend"] == "ns/bedrock" and errors[0]["role_arn"].endswith("/not-trusted")
    assert TEST_CLIENT_SECRET not in repr(logs) and not bedrock.requests


def test_sts_down_is_a_503(exchange: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake]) -> None:
    issuer, sts, bedrock = exchange
    sts.always_fail(503)
    with pytest.raises(CredentialsUnavailable) as err:
        _send(bedrock, "ns/bedrock", _oidc_policy(issuer))
    assert "ServiceUnavailable" in err.value.message
    with pytest.raises(CredentialsUnavailable):  # at once, while a timer retries in the background
        _send(bedrock, "ns/bedrock", _oidc_policy(issuer))
    sts.always_fail(None)
    # Recovered by the background retry (the cache stores the credentials just after STS issues
    # them: poll the outcome a request sees, not the fake's record).
    deadline = time.monotonic() + token_cache.RETRY_AFTER_FAILURE + 5
    while True:
        try:
            answer = _send(bedrock, "ns/bedrock", _oidc_policy(issuer))
            break
        except CredentialsUnavailable:
            assert time.monotonic() < deadline, "credentials never recovered after STS came back"
            time.sleep(0.05)
    assert answer.status_code == 200 and len(sts.issued) >= 1


def test_a_wrong_oidc_secret_never_reaches_sts(exchange: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake]) -> None:
    issuer, sts, bedrock = exchange
    wrong = "wrong-oidc-secret-xyz"
    with structlog.testing.capture_logs() as logs, pytest.raises(CredentialsUnavailable) as err:
        _send(bedrock, "ns/bedrock", _oidc_policy(issuer, secret=wrong))
    assert "no OIDC token" in err.value.message and "invalid_client" in err.value.message
    assert not sts.requests and wrong not in repr(logs) + err.value.message


def test_the_sts_endpoint_is_aws_regional_one_without_an_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_STS", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    aws.reset()
    assert aws._sts("eu-central-1").meta.endpoint_url == "https://sts.eu-central-1.amazonaws.com"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert aws._sts("eu-central-1").meta.endpoint_url == "http://127.0.0.1:4566"
    aws.reset()


def test_oidc_backends_assume_their_role_when_a_configuration_arrives(
    exchange: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake],
) -> None:
    """So that a first request rarely waits on STS on the translator's event loop."""
    issuer, sts, _ = exchange
    config = config_pb2.TranslatorConfig()
    config.backends.add(name="ns/bedrock-oidc", auth=config_pb2.Auth(aws_credentials=_oidc_policy(issuer)))
    config.backends.add(name="ns/bedrock-file", auth=config_pb2.Auth(aws_credentials=_policy()))
    token_cache.prefetch([config], aws.PREFETCH)
    deadline = time.monotonic() + 5
    while not sts.issued and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(sts.issued) == 1
    assert aws.credentials("ns/bedrock-oidc", _oidc_policy(issuer)).access_key == sts.issued[0].access_key_id
