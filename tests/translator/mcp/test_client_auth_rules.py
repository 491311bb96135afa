"""The route security policy's logic (client_auth.RoutePolicy), without HTTP: which key a request
carries, what a token's claims and scopes are, the headers backends get of them, and the decisions
of authorization rules. JWTs are made by hand with a dummy signature (the proxy never verifies one:
Envoy did, test_client_auth.py says more)."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, MultiDict
from structlog.testing import capture_logs

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator import client_keys
from aigw_translator.mcp import client_auth
from aigw_translator.mcp.client_auth import Client, Decision, Refusal, RoutePolicy, ToolCall

from .test_client_auth import METADATA_URL, bearer, jwt, payload, tools

KEYS = [
    config_pb2.MCPClientKey(client_id="first", key="shared"),
    config_pb2.MCPClientKey(client_id="second", key="shared"),
    config_pb2.MCPClientKey(client_id="third", key="key-3"),
]
SOURCES = [
    config_pb2.MCPKeySource(header="x-key"),
    config_pb2.MCPKeySource(query_param="key"),
    config_pb2.MCPKeySource(cookie="key"),
]


def _policy(**fields: Any) -> RoutePolicy:
    return RoutePolicy(config_pb2.MCPRoute(name="ns/r", **fields))


def _keyed(**fields: Any) -> RoutePolicy:
    return _policy(client_keys=config_pb2.MCPClientKeys(keys=KEYS, sources=SOURCES, client_id_header="x-id", **fields))


def _admit(policy: RoutePolicy, headers: dict[str, str] | list[tuple[str, str]], query: str = "") -> Client | Refusal:
    params = MultiDict(p.split("=", 1) for p in query.split("&") if p)
    return policy.admit(CIMultiDict(headers), params)


def _client_id(policy: RoutePolicy, headers: dict[str, str] | list[tuple[str, str]], query: str = "") -> str | None:
    admitted = _admit(policy, headers, query)
    return admitted.headers.added.get("x-id") if isinstance(admitted, Client) else None


# --- Keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "query", "client"),
    [
        ({"x-key": "key-3"}, "", "third"),
        ({"x-key": "Bearer key-3"}, "", "third"),
        ({"x-key": "bearer key-3"}, "", None),  # Envoy's prefix is "Bearer " exactly
        ({"x-key": "shared"}, "", "first"),  # two clients of one key: the first
        ({}, "key=key-3", "third"),
        ({"Cookie": 'a=1; key="key-3"'}, "", "third"),
        # The first source present is the one checked, right or wrong.
        ({"x-key": "wrong"}, "key=key-3", None),
        ({"x-key": ""}, "key=key-3", None),
        ({"Cookie": "key=wrong"}, "key=key-3", "third"),
        # Two values in one source: refused, as Envoy does.
        ([("x-key", "key-3"), ("x-key", "key-3")], "", None),
        ({}, "key=key-3&key=key-3", None),
        ({"x-other": "key-3"}, "", None),
    ],
)
def test_the_key_of_the_first_source_present(
    headers: dict[str, str] | list[tuple[str, str]], query: str, client: str | None
) -> None:
    assert _client_id(_keyed(), headers, query) == client


def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = client_keys.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(client_keys.hmac, "compare_digest", counting)
    assert _client_id(_keyed(), {"x-key": "shared"}) == "first"
    assert len(compared) == len(KEYS)


def test_a_refused_key_is_a_401_without_the_key() -> None:
    refused = _admit(_keyed(), {"x-key": "wrong-key"})
    assert refused == Refusal(401, "Client authentication failed.", {})


def test_a_route_without_keys_or_oauth_passes_the_headers_as_they_came() -> None:
    headers = CIMultiDict({"Authorization": f"Bearer {jwt({'sub': 'x'})}", "x-id": "spoofed"})
    admitted = _policy().admit(headers, MultiDict())
    assert isinstance(admitted, Client)
    assert admitted.headers.forwardable is headers and not admitted.claims and not admitted.headers.added


def test_sanitize_takes_the_key_header_and_cookie_out() -> None:
    admitted = _admit(_keyed(sanitize=True), [("X-Key", "key-3"), ("Cookie", "a=1; key=k; b=2"), ("Cookie", "key=k")])
    assert isinstance(admitted, Client)
    assert list(admitted.headers.forwardable.items()) == [("Cookie", "a=1; b=2"), ("x-id", "third")]


# --- Claims ----------------------------------------------------------------------------------------


def _oauth(*claims: tuple[str, str], **fields: Any) -> RoutePolicy:
    headers = [config_pb2.MCPClaimHeader(claim=c, header=h) for c, h in claims]
    return _policy(oauth=config_pb2.MCPOAuth(resource_metadata_url=METADATA_URL, claim_headers=headers), **fields)


def _claims_client(policy: RoutePolicy, claims: dict[str, Any], *headers: tuple[str, str]) -> Client:
    admitted = _admit(policy, [*bearer(claims).items(), *headers])
    assert isinstance(admitted, Client)
    return admitted


def test_scopes_come_from_scope_and_scp_and_are_no_claims() -> None:
    client = _claims_client(_oauth(), {"sub": "u", "scope": "a  b", "scp": ["c", 1, ""], "org": {"team": "t"}})
    assert client.scopes == {"a", "b", "c"}
    assert client.claims == {"sub": "u", "org": {"team": "t"}}
    assert _claims_client(_oauth(), {"scp": "d e"}).scopes == {"d", "e"}


def test_claims_come_from_what_envoy_verified_never_from_the_token() -> None:
    """Envoy and a second reading of the token could disagree (a token followed by "  .", two
    Authorization headers folded into one): the payload Envoy verified is what counts."""
    forged = jwt({"sub": "admin", "scope": "all"})
    headers = [("Authorization", f"Bearer {forged}  ."), (contract.MCP_JWT_PAYLOAD_HEADER, payload({"sub": "mallory"}))]
    admitted = _admit(_oauth(), headers)
    assert isinstance(admitted, Client) and admitted.claims == {"sub": "mallory"} and not admitted.scopes
    assert contract.MCP_JWT_PAYLOAD_HEADER not in admitted.headers.forwardable  # for the proxy alone


@pytest.mark.parametrize(
    "verified",
    [[], ["not base64 !"], [payload(["a list"])], ["e30", "e30"]],  # none, garbage, not an object, two ("e30": {})
    ids=["none", "garbage", "a list", "two"],
)
def test_without_one_payload_envoy_verified_an_oauth_route_refuses_the_request(verified: list[str]) -> None:
    headers = [
        ("Authorization", f"Bearer {jwt({'sub': 'u'})}"),
        *((contract.MCP_JWT_PAYLOAD_HEADER, v) for v in verified),
    ]
    refused = _admit(_oauth(), headers)
    assert isinstance(refused, Refusal) and refused.status == 401


def test_a_clients_principal_is_its_tokens_issuer_and_subject_and_its_keys_client() -> None:
    assert _claims_client(_oauth(), {"iss": "https://i", "sub": "u"}).principal == '[["jwt","https://i","u"]]'
    both = _oauth(client_keys=config_pb2.MCPClientKeys(keys=KEYS, sources=SOURCES))
    admitted = _admit(both, [*bearer({"iss": "i", "sub": "u"}).items(), ("x-key", "key-3")])
    assert isinstance(admitted, Client) and admitted.principal == '[["key","third"],["jwt","i","u"]]'
    open_route = _admit(_policy(), {})
    assert isinstance(open_route, Client) and open_route.principal == ""
    # A token without a subject is its client's; a subject 1 is not "1".
    assert _claims_client(_oauth(), {"iss": "i", "client_id": "c"}).principal == '[["jwt","i","c"]]'
    assert _claims_client(_oauth(), {"sub": 1}).principal != _claims_client(_oauth(), {"sub": "1"}).principal


def test_claim_headers_send_scalars_only() -> None:
    policy = _oauth(
        ("sub", "x-sub"),
        ("org.team", "x-team"),
        ("n", "x-n"),
        ("f", "x-f"),
        ("t", "x-t"),
        ("list", "x-list"),
        ("org", "x-org"),
        ("nl", "x-nl"),
        ("none", "x-none"),
        ("org.missing", "x-missing"),
        ("scope", "x-scope"),
    )
    claims = {"sub": "u", "org": {"team": "t"}, "n": 12, "f": 1.5, "t": True, "list": ["a"], "nl": "a\nb", "none": None}
    spoofed = [("X-N", "spoofed"), ("X-List", "spoofed"), ("x-missing", "spoofed")]
    client = _claims_client(policy, {**claims, "scope": "a b"}, *spoofed)
    expected = {"x-sub": "u", "x-team": "t", "x-n": "12", "x-f": "1.5", "x-t": "true", "x-scope": "a b"}
    assert client.headers.added == expected
    assert client.headers.owned == {"x-sub", "x-team", "x-n", "x-f", "x-t", "x-list", "x-org", "x-nl", "x-none"} | {
        "x-missing",
        "x-scope",
    }
    assert client.headers.forwardable.getall("x-n") == ["12"]  # the token's, never the client's
    assert "x-list" not in client.headers.forwardable and "x-missing" not in client.headers.forwardable


def test_without_oauth_no_token_is_read() -> None:
    """Not the token, nor a payload header a client sent where Envoy set none."""
    policy = _keyed()
    admitted = _admit(policy, {"x-key": "key-3", **bearer({"scope": "a", "sub": "u"})})
    assert isinstance(admitted, Client) and admitted.claims == {} and admitted.scopes == frozenset()


def test_with_oauth_a_401_challenges_for_a_token() -> None:
    policy = _oauth(client_keys=config_pb2.MCPClientKeys(keys=KEYS, sources=SOURCES))
    refused = _admit(policy, {})
    assert isinstance(refused, Refusal) and refused.status == 401
    assert refused.headers == {
        "WWW-Authenticate": 'Bearer error="invalid_token", error_description="The access token is missing or '
        f'invalid", resource_metadata="{METADATA_URL}"'
    }


# --- Authorization ---------------------------------------------------------------------------------


def _decide(
    *rules: config_pb2.MCPAuthorizationRule,
    claims: dict[str, Any] | None = None,
    default_allow: bool = False,
    call: ToolCall | None = None,
) -> Decision:
    policy = _oauth(authorization=config_pb2.MCPAuthorization(rules=list(rules), default_allow=default_allow))
    client = _claims_client(policy, claims or {}, ("X-Tenant", "t1"), ("x-tenant", "t2"))
    return policy.decide(client, call or ToolCall("alpha", "echo", "alpha__echo", {"arguments": {"text": "hi"}}))


def _rule(**fields: Any) -> config_pb2.MCPAuthorizationRule:
    return config_pb2.MCPAuthorizationRule(**fields)


def test_no_authorization_allows_and_no_rules_is_the_default() -> None:
    client = Client(client_auth.ClientHeaders({}))
    assert _policy().decide(client, ToolCall("a", "t", "a__t")) == Decision(True)
    assert _decide() == Decision(False)
    assert _decide(default_allow=True) == Decision(True)


def test_the_first_matching_rule_decides() -> None:
    assert _decide(_rule(deny=True), _rule()) == Decision(False)
    assert _decide(_rule(tools=tools("alpha/other"), deny=True), _rule()) == Decision(True)
    assert _decide(_rule(tools=tools("beta/echo"))) == Decision(False)  # the backend counts too
    assert _decide(_rule(scopes=["a"], deny=True), _rule(), claims={"scope": "a"}) == Decision(False)
    assert _decide(_rule(scopes=["a"], deny=True), _rule(), claims={"scope": "b"}) == Decision(True)


def test_the_challenge_is_the_fewest_scopes_of_an_allow_rule_lacking_only_them() -> None:
    rules = [
        _rule(scopes=["a", "b"]),
        _rule(scopes=["c"], claims=[config_pb2.MCPClaimMatch(name="tenant", values=["other"])]),  # claims fail
        _rule(scopes=["d"], deny=True),  # a deny rule asks for nothing
        _rule(scopes=["e"]),
        _rule(scopes=["f"]),
    ]
    assert _decide(*rules, claims={"scope": "a", "tenant": "acme"}) == Decision(False, ("e",))
    # A matching deny rule ends it with no challenge; a default allow needs none.
    assert _decide(*rules[:1], _rule(deny=True), *rules[1:]) == Decision(False)
    assert _decide(*rules, default_allow=True) == Decision(True)


@pytest.mark.parametrize(
    ("match", "claims", "allowed"),
    [
        (config_pb2.MCPClaimMatch(name="tenant", values=["acme", "globex"]), {"tenant": "globex"}, True),
        (config_pb2.MCPClaimMatch(name="tenant", values=["acme"]), {"tenant": ["acme"]}, False),
        (config_pb2.MCPClaimMatch(name="tenant", values=["acme"]), {}, False),
        (config_pb2.MCPClaimMatch(name="org.deps", array=True, values=["eng"]), {"org": {"deps": ["x", "eng"]}}, True),
        (config_pb2.MCPClaimMatch(name="org.deps", array=True, values=["eng"]), {"org": {"deps": ["x"]}}, False),
        # A list of one may come as its string: taken, as Envoy AI Gateway takes it.
        (config_pb2.MCPClaimMatch(name="org.deps", array=True, values=["eng"]), {"org": {"deps": "eng"}}, True),
        (config_pb2.MCPClaimMatch(name="org.deps", array=True, values=["eng"]), {"org": "eng"}, False),
        (config_pb2.MCPClaimMatch(name="scope", values=["a"]), {"scope": "a"}, False),  # scopes are no claims
    ],
)
def test_claims_match(match: config_pb2.MCPClaimMatch, claims: dict[str, Any], allowed: bool) -> None:
    assert _decide(_rule(claims=[match]), claims=claims).allowed is allowed


@pytest.mark.parametrize(
    ("cel", "allowed"),
    [
        ('request.mcp.params.arguments.text == "hi" && request.mcp.tool == "echo"', True),
        ('request.mcp.backend == "alpha" && request.mcp.method == "tools/call"', True),
        ('request.headers["x-tenant"] == "t1" && request.headers_all["x-tenant"] == ["t1", "t2"]', True),
        ('request.auth.jwt.claims.sub == "u" && "s1" in request.auth.jwt.scopes', True),
        ('!("scope" in request.auth.jwt.claims)', True),
        ('request.method == "POST"', True),
        ('request.mcp.params.arguments.text == "bye"', False),
        ('request.headers["x-absent"] == "a"', False),  # an error
        ("request.mcp.tool", False),  # not a bool
        ("1 +", False),  # does not compile
    ],
)
def test_cel(cel: str, allowed: bool) -> None:
    call = ToolCall("alpha", "echo", "alpha__echo", {"arguments": {"text": "hi"}}, "POST", "gw", "/mcp")
    decision = _decide(_rule(cel=cel), claims={"sub": "u", "scope": "s1"}, call=call)
    assert decision.allowed is allowed


# --- Backend selection -----------------------------------------------------------------------------

BACKENDS = ["alpha", "beta", "gamma"]


def _selected(
    *rules: config_pb2.MCPAuthorizationRule, default_allow: bool = False, claims: dict[str, Any] | None = None
) -> list[str]:
    policy = _oauth(backend_selector=config_pb2.MCPAuthorization(rules=list(rules), default_allow=default_allow))
    client = _claims_client(policy, claims or {}, ("x-subset", "alpha,gamma"))
    allows = policy.selector(client, "POST", "gw.example.com", "/mcp")
    assert allows is not None
    return [name for name in BACKENDS if allows(name)]


def test_without_a_selector_a_session_joins_every_backend() -> None:
    policy = _policy()
    assert policy.selector(Client(client_auth.ClientHeaders({})), "POST", "gw", "/mcp") is None
    assert policy.selection == b""


def test_each_backend_is_tried_on_the_rules_the_first_match_deciding() -> None:
    """Envoy AI Gateway's documented examples: a header listing backends, a claim listing them."""
    by_header = '("," + request.headers["x-subset"] + ",").contains("," + request.mcp.backend + ",")'
    assert _selected(_rule(cel=by_header)) == ["alpha", "gamma"]
    by_claim = "request.mcp.backend in request.auth.jwt.claims.backends"
    assert _selected(_rule(cel=by_claim), claims={"backends": ["beta"]}) == ["beta"]
    assert _selected(_rule(cel=by_claim), claims={}) == []  # an error is no match; the default denies
    assert _selected(_rule(cel='request.mcp.backend == "beta"', deny=True), default_allow=True) == ["alpha", "gamma"]
    assert _selected(_rule(cel='request.mcp.backend == "beta"', deny=True), _rule()) == ["alpha", "gamma"]
    assert _selected() == [] and _selected(default_allow=True) == ["alpha", "beta", "gamma"]


def test_a_selection_sees_the_request_and_no_call() -> None:
    """request.mcp's method, tool and params are empty at a session's start (the control plane
    refuses expressions reading them: this is what one would see)."""
    seen = (
        'request.method == "POST" && request.host == "gw.example.com" && request.path == "/mcp" '
        '&& request.mcp.method == "" && request.mcp.tool == "" && request.mcp.params == null'
    )
    assert _selected(_rule(cel=seen)) == ["alpha", "beta", "gamma"]


def test_a_selector_is_what_its_sessions_are_bound_to() -> None:
    one = _policy(backend_selector=config_pb2.MCPAuthorization(rules=[_rule(cel="true")]))
    other = _policy(backend_selector=config_pb2.MCPAuthorization(rules=[_rule(cel="false")]))
    assert one.selection and other.selection and one.selection != other.selection


def test_a_broken_expression_is_logged_once() -> None:
    client_auth._program.cache_clear()
    with capture_logs() as logs:
        for _ in range(3):
            _policy(authorization=config_pb2.MCPAuthorization(rules=[_rule(cel="request.a == (  # once")]))
    assert [e["event"] for e in logs] == ["mcp_authorization_cel_broken"]


def test_a_list_checks_a_tool_with_the_headers_alone() -> None:
    rules = [
        _rule(cel='request.headers["x-tenant"] == "t1"', tools=tools("alpha/echo")),
        _rule(cel='request.method == "POST"'),
        _rule(cel="has(request.mcp.params.arguments)"),
    ]
    policy = _oauth(authorization=config_pb2.MCPAuthorization(rules=rules))
    shown = policy.shown(_claims_client(policy, {}, ("X-Tenant", "t1")))
    assert shown("alpha", "echo") and not shown("alpha", "add")


BIG = {"arguments": {"text": "x" * (client_auth.MAX_CEL_PARAMS_BYTES + 1)}}
# Under the bound in UTF-8 (3 bytes a character), six times over it as ASCII-escaped JSON.
WIDE = {"arguments": {"text": "\u4e2d" * (client_auth.MAX_CEL_PARAMS_BYTES // 4)}}


def test_arguments_too_large_for_a_rule_reading_them_are_refused_even_where_it_would_deny() -> None:
    """Not converted for CEL (megabytes would stall the process), and not passed over: a Deny rule
    skipped would let the call through."""
    deny = _rule(cel='request.mcp.params.arguments.text == "forbidden"', deny=True)
    decision = _decide(deny, default_allow=True, call=ToolCall("alpha", "echo", "alpha__echo", BIG))
    assert not decision.allowed and "over 16 KiB" in decision.why
    small = _decide(
        deny, default_allow=True, call=ToolCall("alpha", "echo", "alpha__echo", {"arguments": {"text": "ok"}})
    )
    assert small.allowed
    assert _decide(deny, default_allow=True, call=ToolCall("alpha", "echo", "alpha__echo", WIDE)).allowed


@pytest.mark.parametrize(
    "cel",
    [
        'request.mcp["par" + "ams"].arguments.text == "forbidden"',
        'request.mcp["params"].arguments.text == "forbidden"',
        'request["mcp"].params.arguments.text == "forbidden"',
        '[request.mcp].exists(m, m.params.arguments.text == "forbidden")',
    ],
)
def test_a_rule_reading_the_arguments_however_written_is_given_them(cel: str) -> None:
    deny = _rule(cel=cel, deny=True)
    call = ToolCall("alpha", "echo", "alpha__echo", {"arguments": {"text": "forbidden"}})
    assert not _decide(deny, default_allow=True, call=call).allowed


def test_a_rule_that_does_not_read_the_arguments_is_tried_whatever_their_size(monkeypatch) -> None:
    converted: list[object] = []
    real = client_auth._celpy()
    monkeypatch.setattr(
        client_auth,
        "_celpy",
        lambda: client_auth._Cel(
            real.environment,
            lambda v: converted.append(v) or real.json_to_cel(v),
            real.map_type,
            real.bool_type,
        ),
    )
    decision = _decide(
        _rule(cel='request.headers["x-tenant"] == "t1"'), call=ToolCall("alpha", "echo", "alpha__echo", BIG)
    )
    assert decision.allowed
    assert all("x" * 1000 not in repr(value) for value in converted)  # the arguments were never converted
