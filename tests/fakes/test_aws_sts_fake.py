"""The fake STS (AssumeRoleWithWebIdentity): botocore parses its answers and errors as STS's; it
verifies web identity tokens with the fake OIDC issuer; the fake Bedrock accepts the credentials
it issues until they expire (then 403 ExpiredTokenException)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.session import Session

from aigw_fakes import AWSSTSFake, BedrockFake, OIDCIssuerFake
from aigw_fakes.aws_sts import TEST_ROLE_ARN
from aigw_fakes.oidc_issuer import TEST_CLIENT_ID

AUD = "sts.amazonaws.com"
PATH = "/model/amazon.nova-micro-v1%3A0/converse"
BODY = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake]]:
    with (
        OIDCIssuerFake() as issuer,
        BedrockFake(region="us-east-1") as bedrock,
        AWSSTSFake(issuer.verify, roles={TEST_ROLE_ARN: TEST_CLIENT_ID}, accept=[bedrock]) as sts,
    ):
        yield issuer, sts, bedrock


def _assume(sts: AWSSTSFake, token: str, role: str = TEST_ROLE_ARN, **extra: Any) -> dict[str, Any]:
    client = Session().create_client(
        "sts", region_name="us-east-1", endpoint_url=sts.url, config=Config(signature_version=UNSIGNED)
    )
    answer: dict[str, Any] = client.assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="aigw-test", WebIdentityToken=token, **extra
    )
    return answer


def _converse(bedrock: BedrockFake, creds: dict[str, Any]) -> requests.Response:
    host = f"127.0.0.1:{bedrock.port}"
    request = AWSRequest(method="POST", url=f"http://{host}{PATH}", data=BODY, headers={"host": host})
    credentials = Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
    return requests.post(request.url, data=BODY, headers=dict(request.headers), timeout=5)


def test_botocore_reads_the_issued_credentials_and_bedrock_accepts_them(
    fakes: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake],
) -> None:
    issuer, sts, bedrock = fakes
    answer = _assume(sts, issuer.issue(AUD))
    creds = answer["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
    assert 3590 <= (creds["Expiration"] - dt.datetime.now(dt.UTC)).total_seconds() <= 3600
    assert answer["SubjectFromWebIdentityToken"] == TEST_CLIENT_ID and answer["Audience"] == AUD
    assert answer["AssumedRoleUser"]["Arn"].endswith(":assumed-role/aigw-bedrock/aigw-test")
    assert _converse(bedrock, creds).status_code == 200
    # Without the session token the keys are not enough.
    assert _converse(bedrock, {**creds, "SessionToken": None}).status_code == 403


def test_bedrock_refuses_expired_temporary_credentials(fakes: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake]) -> None:
    issuer, sts, bedrock = fakes
    sts.credential_lifetime_s = 1
    try:
        creds = _assume(sts, issuer.issue(AUD))["Credentials"]
    finally:
        sts.credential_lifetime_s = 3600
    time.sleep(max(0.0, creds["Expiration"].timestamp() - time.time()) + 0.05)
    answer = _converse(bedrock, creds)
    assert answer.status_code == 403
    assert answer.headers["x-amzn-errortype"].startswith("ExpiredTokenException:")
    assert answer.json()["message"] == "The security token included in the request is expired"


@pytest.mark.parametrize(
    ("token", "role", "status", "code"),
    [
        ("expired", TEST_ROLE_ARN, 400, "ExpiredTokenException"),
        ("wrong-audience", TEST_ROLE_ARN, 400, "InvalidIdentityToken"),
        ("foreign", TEST_ROLE_ARN, 400, "InvalidIdentityToken"),
        ("garbage", TEST_ROLE_ARN, 400, "InvalidIdentityToken"),
        ("good", "arn:aws:iam::123456789012:role/other", 403, "AccessDenied"),
    ],
)
def test_errors_are_sts_xml(
    fakes: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake], token: str, role: str, status: int, code: str
) -> None:
    issuer, sts, _ = fakes
    with OIDCIssuerFake() as other:
        tokens = {
            "expired": issuer.issue(AUD, lifetime=-5),
            "wrong-audience": issuer.issue("api://AzureADTokenExchange"),
            "foreign": other.issue(AUD),
            "garbage": "not.a.jwt",
            "good": issuer.issue(AUD),
        }
    with pytest.raises(ClientError) as err:
        _assume(sts, tokens[token], role)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert err.value.response["Error"]["Code"] == code and err.value.response["Error"]["Type"] == "Sender"


def test_untrusted_subjects_are_denied(fakes: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake]) -> None:
    issuer, _, bedrock = fakes
    with AWSSTSFake(issuer.verify, roles={TEST_ROLE_ARN: "someone-else"}) as sts:
        with pytest.raises(ClientError) as err:
            _assume(sts, issuer.issue(AUD))
        assert err.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"Action": "AssumeRole", "Version": "2011-06-15"}, "InvalidAction"),
        ({"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": TEST_ROLE_ARN}, "ValidationError"),
        (
            {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": TEST_ROLE_ARN,
             "RoleSessionName": "has space", "WebIdentityToken": "x"},
            "ValidationError",
        ),
        (
            {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15", "RoleArn": TEST_ROLE_ARN,
             "RoleSessionName": "ok", "WebIdentityToken": "x", "DurationSeconds": "60"},
            "ValidationError",
        ),
    ],
)  # fmt: skip
def test_malformed_requests(fakes: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake], form: dict, code: str) -> None:
    _, sts, _ = fakes
    answer = requests.post(sts.url + "/", data=form, timeout=5)
    assert answer.status_code == 400 and f"<Code>{code}</Code>" in answer.text
    assert answer.headers["content-type"].startswith("text/xml")


def test_injected_outage_is_service_unavailable(fakes: tuple[OIDCIssuerFake, AWSSTSFake, BedrockFake]) -> None:
    issuer, sts, _ = fakes
    sts.fail_next(1, 503)
    client = Session().create_client(
        "sts",
        region_name="us-east-1",
        endpoint_url=sts.url,
        config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError) as err:
        client.assume_role_with_web_identity(
            RoleArn=TEST_ROLE_ARN, RoleSessionName="x1", WebIdentityToken=issuer.issue(AUD)
        )
    assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
    sts.reset()
