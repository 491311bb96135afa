"""Review regressions for the Bedrock backends (AWSBedrock / AWSAnthropic): what real Bedrock or a
real AWS environment does that the translator did not account for (each failed before its fix)."""

from __future__ import annotations

import json

import pytest
from botocore.credentials import Credentials, ReadOnlyCredentials

from aigw.translator.v1 import config_pb2
from aigw_translator import aws, token_cache
from aigw_translator.backend_request import backend_request
from aigw_translator.config import RuntimeConfig
from aigw_translator.endpoints import Endpoint
from aigw_translator.errors import CredentialsUnavailable
from aigw_translator.translators import RequestContext
from aigw_translator.translators.bedrock_anthropic import translate_messages_request

from .test_token_cache import Clock

CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
HOST = "bedrock-runtime.us-east-1.amazonaws.com"
FILE = "[default]\naws_access_key_id = AKIDREVIEW\naws_secret_access_key = secret-review\n"


def _msgs_ctx(headers: dict[str, str]) -> RequestContext:
    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AWSAnthropic"))
    return RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", CLAUDE, headers)


def test_anthropic_betas_bedrock_rejects_are_not_forwarded() -> None:
    """Bedrock's InvokeModel answers 400 "invalid beta flag" for any anthropic_beta value it does not
    support (e.g. oauth-2025-04-20, prompt-caching-scope-2026-01-05, mcp-servers-2025-12-04), failing
    the whole request. Claude Code pointed at the gateway's /v1/messages (first-party mode) sends such
    betas on every request, so each one fails. Only betas Bedrock accepts may reach the body (Envoy AI
    Gateway filters them too, anthropic_awsanthropic.go); the fake accepts any value today."""
    header = "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,prompt-caching-scope-2026-01-05"
    body = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    out = json.loads(translate_messages_request(_msgs_ctx({"anthropic-beta": header}), json.dumps(body).encode()).body)
    betas = out.get("anthropic_beta", [])
    assert "oauth-2025-04-20" not in betas
    assert "prompt-caching-scope-2026-01-05" not in betas
    assert "interleaved-thinking-2025-05-14" in betas  # a beta Bedrock supports still goes through


def _runtime() -> RuntimeConfig:
    cfg = config_pb2.TranslatorConfig(name="ns/gw", seal_key=b"k" * 32)
    b = cfg.backends.add(name="ns/bedrock", schema=config_pb2.Schema(name="AWSAnthropic"), upstream_host=HOST)
    b.auth.aws_credentials.credentials_file = FILE
    b.auth.aws_credentials.region = "us-east-1"
    return RuntimeConfig.build(cfg)


@pytest.mark.parametrize(
    "header",
    [
        "x-amzn-bedrock-service-tier",  # "priority": premium pricing, on the operator's account
        "x-amzn-bedrock-projectidentifier",  # which Bedrock project the call is billed/attributed to
        "x-amzn-bedrock-performanceconfig-latency",  # "optimized": a pricier latency tier
        "x-amzn-bedrock-guardrailidentifier",  # runs (and bills) one of the operator's guardrails
    ],
)
def test_client_cannot_choose_bedrock_billing_headers(header: str) -> None:
    """InvokeModel reads these from HTTP headers (botocore bedrock-runtime model: location header);
    the gateway signs only host and x-amz-date, and AWS does not require other (x-amzn-*) headers to be
    signed, so a client's copy reaches Bedrock and is honoured with the gateway's credentials. Like
    openai-organization / openai-project (PROVIDER_SCOPED_HEADERS: headers that choose what a
    provider key bills), they must be stripped unless the backend's policy passes them."""
    view = {
        ":path": "/anthropic/v1/messages",
        ":method": "POST",
        "content-type": "application/json",
        header: "priority",
    }
    body = json.dumps({"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}).encode()
    out = backend_request(_runtime(), "ns/bedrock", view, CLAUDE, {}, body, True)
    sent = {k: v for k, v in view.items() if k not in out.remove_headers}
    sent.update(out.set_headers)
    assert sent[":path"].endswith("/invoke")
    assert header not in sent


def test_default_chain_retries_after_finding_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """_default_chain cached Session().get_credentials() once, even when it was None (IMDS or the
    container credentials endpoint not reachable yet at the first request, an IRSA token file not yet
    mounted): the backend then stayed a 503 until the translator restarted. A None result must not be
    cached: once the cache's pause after a failure is over, the chain is looked for again."""
    answers: list[Credentials | None] = [None, Credentials("AKIDLATER", "secret-later")]

    class _Session:
        def get_credentials(self) -> Credentials | None:
            return answers.pop(0) if answers else Credentials("AKIDLATER", "secret-later")

    clock = Clock()
    cache: token_cache.TokenCache[tuple[str, ...], ReadOnlyCredentials] = token_cache.TokenCache(
        credential=aws.CREDENTIALS, event="aws_credentials", clock=clock, spawn=lambda run: run(), schedule=None
    )
    monkeypatch.setattr(aws, "Session", _Session)
    monkeypatch.setattr(aws, "_cache", cache)
    policy = config_pb2.AWSCredentials(region="us-east-1")
    with pytest.raises(CredentialsUnavailable):
        aws.sign("ns/chain", policy, HOST, "/model/m/converse", b"{}")
    clock.now += token_cache.RETRY_AFTER_FAILURE
    headers = aws.sign("ns/chain", policy, HOST, "/model/m/converse", b"{}")
    assert "Credential=AKIDLATER/" in headers["authorization"]


def test_the_gateways_aws_session_token_is_redacted_in_logs() -> None:
    """backend_request sets x-amz-security-token (the gateway's temporary AWS credential: instance
    role, IRSA, STS) and the route_request / upstream_attempt debug entries render set_headers (and,
    on a later attempt, the request headers that still hold it) through RedactedHeaders. Its name ends
    in -security-token, not -session-token, so it is logged in clear while authorization is redacted."""
    from aigw_translator.logs import REDACTED, redact_headers

    logged = redact_headers({"authorization": "AWS4-HMAC-SHA256 ...", "x-amz-security-token": "IQoJb3JpZ2luX2Vj"})
    assert logged["authorization"] == REDACTED
    assert logged["x-amz-security-token"] == REDACTED


@pytest.mark.parametrize("client_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_invoke_model_is_sent_as_application_json(client_type: str | None) -> None:
    """InvokeModel's Content-Type is the body's MIME type and "You must specify application/json"
    (botocore bedrock-runtime model, InvokeModelRequest.contentType). The gateway writes the body
    itself (JSON) but forwards the client's content-type, or none: `curl -d '{...}'` sends
    application/x-www-form-urlencoded, which the gateway still reads as JSON, and Bedrock refuses."""
    view = {":path": "/anthropic/v1/messages", ":method": "POST"}
    if client_type is not None:
        view["content-type"] = client_type
    body = json.dumps({"model": CLAUDE, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}).encode()
    out = backend_request(_runtime(), "ns/bedrock", view, CLAUDE, {}, body, True)
    sent = {k: v for k, v in view.items() if k not in out.remove_headers}
    sent.update(out.set_headers)
    assert sent.get("content-type", "").split(";")[0].strip() == "application/json"


def test_openai_image_urls_are_not_sent_to_invoke_model_as_url_sources() -> None:
    """Claude on Bedrock (InvokeModel) takes base64 image sources only: a `source: {type: url}` block
    is refused by Bedrock (gateways convert or refuse: Portkey-AI/gateway#1078, pollinations#5862).
    openai_bedrock refuses an http(s) image URL with a clear 422 for Converse; the AWSAnthropic path
    reuses openai_anthropic, which emits a url source, and the fake (the Anthropic fake's validation)
    accepts it. Expected: the same 422 as Converse (or an inline base64 image), never a url source."""
    from aigw_translator.errors import GatewayError
    from aigw_translator.translators.bedrock_anthropic import translate_chat_request

    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AWSAnthropic"))
    ctx = RequestContext(Endpoint.CHAT_COMPLETIONS, backend, "/v1/chat/completions", "", CLAUDE, {})
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    req = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, part]}]}
    try:
        out = translate_chat_request(ctx, json.dumps(req).encode())
    except GatewayError as err:
        assert 400 <= err.status < 500
        return
    assert b'"type":"url"' not in (out.body or b"").replace(b" ", b"")


def test_url_sources_in_tool_results_are_refused_for_claude_on_bedrock() -> None:
    """A url source nested in a tool result (an Anthropic client's) is refused as one at the top
    level is, with a 422 naming the platform, not sent for Bedrock's 400."""
    from aigw_translator.errors import GatewayError
    from aigw_translator.translators.bedrock_anthropic import translate_messages_request

    backend = config_pb2.Backend(name="b", schema=config_pb2.Schema(name="AWSAnthropic"))
    ctx = RequestContext(Endpoint.MESSAGES, backend, "/anthropic/v1/messages", "", CLAUDE, {})
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    result = {"type": "tool_result", "tool_use_id": "t", "content": [image]}
    for content in ([image], [result]):
        req = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": content}]}
        with pytest.raises(GatewayError) as err:
            translate_messages_request(ctx, json.dumps(req).encode())
        assert err.value.status == 422 and "not supported by Claude on AWS Bedrock" in err.value.message


def test_a_signature_error_never_shows_the_canonical_request() -> None:
    """AWS's InvalidSignatureException message goes on with the canonical request it expected, whose
    signed headers include the gateway's x-amz-security-token: the client gets the first sentence."""
    from aigw_translator.translators.bedrock_anthropic import bedrock_anthropic_error
    from aigw_translator.translators.openai_bedrock import bedrock_error

    message = (
        "The request signature we calculated does not match the signature you provided. Check your AWS "
        "Secret Access Key and signing method.\n\nThe Canonical String for this request should have been\n"
        "'POST\n/model/m/converse\n\nhost:bedrock\nx-amz-security-token:IQoJb3JpZ2luX2Vj\n'\n\n"
        "The String-to-Sign should have been\n'AWS4-HMAC-SHA256\n20261202T000000Z\n...'"
    )
    body = json.dumps({"message": message}).encode()
    for render in (bedrock_error, bedrock_anthropic_error):
        text = render(403, body).decode()
        assert "IQoJb3JpZ2luX2Vj" not in text and "Canonical" not in text
        assert "The request signature we calculated does not match" in text
