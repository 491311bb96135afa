"""Per-node authorization (xds/authz.py): identities from what a peer proved, the rule identity ->
fleets, grants, token reviews (a stand-in for the API server's TokenReview), and what a stream of
the translator pseudo-fleet or of an Envoy fleet holding credentials is sent or refused."""

from __future__ import annotations

import pytest
import structlog
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_xds.xds import authz, type_urls
from aigw_xds.xds.authz import (
    Authorizer,
    Grant,
    Identity,
    ReviewUnavailable,
    StreamAccess,
    TokenRefused,
    identity_of,
    parse_grant,
    service_account_of_spiffe,
)
from aigw_xds.xds.cache import FleetResources, make_snapshot
from aigw_xds.xds.streams import TypeState

REMOTE = "ipv4:10.1.2.3:40000"


def _cert(*, uris: tuple[str, ...] = (), dns: tuple[str, ...] = (), cn: str = "") -> dict[str, list[bytes]]:
    """The auth context gRPC gives for a verified client certificate (the properties we read)."""
    auth: dict[str, list[bytes]] = {"x509_pem_cert": [b"-----BEGIN CERTIFICATE-----..."]}
    if uris:
        auth["peer_uri"] = [u.encode() for u in uris]
    if dns:
        auth["peer_dns"] = [d.encode() for d in dns]
    if cn:
        auth["x509_common_name"] = [cn.encode()]
    return auth


def _spiffe(namespace: str, account: str) -> Identity:
    return identity_of(REMOTE, _cert(uris=(f"spiffe://cluster.local/ns/{namespace}/sa/{account}",)))


# --------------------------------------------------------------------------------------------
# SPIFFE IDs


@pytest.mark.parametrize(
    ("uri", "account"),
    [
        ("spiffe://cluster.local/ns/team-a/sa/translator", ("team-a", "translator")),
        ("spiffe://example.org/ns/a/sa/envoy.sidecar", ("a", "envoy.sidecar")),
        # spoofed or malformed forms: never a ServiceAccount
        ("spiffe://cluster.local/ns/a/sa/b/extra", None),  # a path with extra segments
        ("spiffe://cluster.local/x/ns/a/sa/b", None),  # the form further down the path
        ("spiffe://cluster.local/ns/a/sa/b/", None),  # trailing slash
        ("spiffe://cluster.local/ns/a/sa/../b", None),  # dot segments
        ("spiffe://cluster.local/ns/../sa/b", None),
        ("spiffe://cluster.local/ns//sa/b", None),  # empty segment
        ("spiffe://cluster.local/ns/a%2Fb/sa/c", None),  # percent-encoding
        ("spiffe://cluster.local/ns/a/sa/b?x=1", None),  # query
        ("spiffe://cluster.local/ns/a/sa/b#f", None),  # fragment
        ("spiffe://cluster.local:443/ns/a/sa/b", None),  # port
        ("spiffe://user@cluster.local/ns/a/sa/b", None),  # user info
        ("SPIFFE://cluster.local/ns/a/sa/b", None),  # scheme is lowercase
        ("spiffe://Cluster.Local/ns/a/sa/b", None),  # trust domain is lowercase
        ("spiffe://cluster.local/ns/A/sa/b", None),  # not a Kubernetes namespace name
        ("spiffe://cluster.local/ns/" + "a" * 64 + "/sa/b", None),  # a namespace is at most 63
        ("spiffe://cluster.local/NS/a/SA/b", None),
        ("spiffe://cluster.local/ns/a/serviceaccount/b", None),
        ("https://cluster.local/ns/a/sa/b", None),
    ],
)
def test_only_the_exact_kubernetes_spiffe_form_is_a_service_account(uri: str, account):
    assert service_account_of_spiffe(uri) == account


def test_a_certificate_with_a_spiffe_id_is_that_service_account_and_its_names():
    identity = identity_of(
        REMOTE, _cert(uris=("spiffe://cluster.local/ns/a/sa/tr",), dns=("tr.a.svc",), cn="translator")
    )
    assert identity.service_accounts == {("a", "tr")}
    assert identity.names == {
        "spiffe://cluster.local/ns/a/sa/tr",
        "serviceaccount:a/tr",
        "dns:tr.a.svc",
        "cn:translator",
    }
    assert identity.label == "serviceaccount:a/tr"
    assert not identity.local


def test_a_certificate_with_several_uri_sans_is_no_svid():
    """An X.509-SVID carries exactly one URI SAN: a second one (even another SPIFFE ID) voids it."""
    identity = identity_of(
        REMOTE, _cert(uris=("spiffe://cluster.local/ns/a/sa/tr", "spiffe://cluster.local/ns/b/sa/tr"))
    )
    assert identity.service_accounts == frozenset()
    assert identity.spiffe_claimed
    assert not Authorizer().allows(identity, "a/gw")  # and no compatibility pass for it either


def test_a_valid_spiffe_id_of_another_shape_is_a_name_grants_can_use():
    identity = identity_of(REMOTE, _cert(uris=("spiffe://corp.example/workload/translator",)))
    assert identity.service_accounts == frozenset()
    assert identity.names == {"spiffe://corp.example/workload/translator"}
    grants = (parse_grant("spiffe://corp.example/workload/translator=a/gw"),)
    assert Authorizer(grants).allows(identity, "a/gw")
    assert not Authorizer(grants).allows(identity, "a/other")


@pytest.mark.parametrize("peer", ["ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "ipv6:%5B::1%5D:5000", "unix:/run/a.sock"])
def test_a_local_peer_without_credentials_gets_everything(peer: str):
    identity = identity_of(peer, {})
    assert identity.local
    assert Authorizer((parse_grant("cn:x=a/gw"),), review=lambda _t: (False, "", "")).allows(identity, "z/any")


def test_a_peer_is_judged_by_the_credential_it_presents_wherever_it_connects_from():
    on_loopback = identity_of("ipv4:127.0.0.1:5000", _cert(uris=("spiffe://cluster.local/ns/a/sa/tr",)))
    assert not on_loopback.local
    assert Authorizer().allows(on_loopback, "a/gw")
    assert not Authorizer().allows(on_loopback, "b/gw")
    with_token = identity_of("unix:/run/a.sock", {}, token_username="system:serviceaccount:a:tr")
    assert not with_token.local
    assert not Authorizer().allows(with_token, "b/gw")


# --------------------------------------------------------------------------------------------
# The rule


@pytest.mark.parametrize(
    ("grants", "fleet", "allowed"),
    [
        ((), "a/gw", True),  # its own namespace
        ((), "a/other", True),
        ((), "b/gw", False),
        (("serviceaccount:a/tr=b/gw",), "b/gw", True),  # a grant of one Gateway
        (("serviceaccount:a/tr=b/gw",), "b/other", False),
        (("serviceaccount:a/tr=b/*",), "b/other", True),  # every Gateway of the namespace
        (("serviceaccount:a/tr=b/*",), "c/gw", False),
        (("spiffe://cluster.local/ns/a/sa/tr=b/gw",), "b/gw", True),
        (("serviceaccount:a/other=b/gw",), "b/gw", False),  # a grant to someone else
        (("serviceaccount:x/tr=b/gw",), "b/gw", False),
    ],
)
def test_a_service_account_gets_its_namespace_and_what_grants_add(grants, fleet: str, allowed: bool):
    authorizer = Authorizer(tuple(parse_grant(g) for g in grants))
    assert authorizer.allows(_spiffe("a", "tr"), fleet) is allowed


@pytest.mark.parametrize(
    ("grant", "allowed"),
    [("dns:tr.example=b/gw", True), ("cn:translator=b/*", True), ("cn:someone-else=b/gw", False)],
)
def test_dns_and_common_name_grants(grant: str, allowed: bool):
    identity = identity_of(REMOTE, _cert(dns=("tr.example",), cn="translator"))
    assert Authorizer((parse_grant(grant),)).allows(identity, "b/gw") is allowed
    assert not Authorizer((parse_grant(grant),)).allows(identity, "c/gw")


def test_a_certificate_without_spiffe_id_gets_everything_only_while_authorization_is_off():
    """Compatibility with --tls-client-ca before per-node authorization: no grant configured and not
    in Kubernetes mode. One grant (for anyone) or Kubernetes mode turns it off."""
    plain = identity_of(REMOTE, _cert(cn="envoy"))
    assert Authorizer().allows(plain, "any/gw")
    assert Authorizer().may_have_any(plain)
    grant = (parse_grant("cn:other=a/gw"),)
    assert not Authorizer(grant).allows(plain, "any/gw")
    assert not Authorizer(grant).may_have_any(plain)
    kubernetes = Authorizer(review=lambda _t: (True, "system:serviceaccount:a:b", ""))
    assert kubernetes.kubernetes
    assert not kubernetes.allows(plain, "any/gw")
    # a certificate claiming a SPIFFE ID (even a broken one) is a workload: the rule applies
    broken = identity_of(REMOTE, _cert(uris=("spiffe://cluster.local/ns/a/sa/b/extra",)))
    assert not Authorizer().allows(broken, "a/gw")


def test_authorization_off_is_warned_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(authz, "_open_warned", False)
    plain = identity_of(REMOTE, _cert(cn="envoy"))
    with structlog.testing.capture_logs() as logs:
        Authorizer().allows(plain, "a/gw")
        Authorizer().allows(plain, "b/gw")
    assert [e["event"] for e in logs] == ["per_node_authorization_off"]


def test_an_anonymous_remote_peer_gets_nothing():
    anonymous = identity_of(REMOTE, {})
    assert anonymous.label == "anonymous"
    assert not Authorizer().allows(anonymous, "a/gw")
    assert not Authorizer().may_have_any(anonymous)
    # Outside Kubernetes no token is reviewed: the way in is a certificate, not --xds-token-file (a
    # platform team's trial was sent to a flag that could not help).
    hint = Authorizer().how_to_grant(anonymous, "a/gw")
    assert "SPIFFE ID" in hint and "--tls-client-ca" in hint and "token" not in hint


@pytest.mark.parametrize(
    "text",
    [
        "serviceaccount:a/tr",  # no target
        "serviceaccount:a/tr=b",  # no Gateway
        "serviceaccount:a/tr=*/gw",  # a namespace is never a glob
        "serviceaccount:a/tr=b/g*",  # only * alone
        "serviceaccount:a=b/gw",  # no ServiceAccount name
        "serviceaccount:A/tr=b/gw",
        "spiffe://cluster.local/ns/a/sa/tr/../x=b/gw",
        "user:alice=b/gw",  # an unknown form
        "cn:=b/gw",
        "=b/gw",
    ],
)
def test_bad_grants_are_refused(text: str):
    with pytest.raises(ValueError, match="IDENTITY=NAMESPACE/GATEWAY"):
        parse_grant(text)


def test_grants_parse():
    assert parse_grant("cn:a=b=ns/gw") == Grant("cn:a=b", "ns", "gw")  # the last = splits
    assert parse_grant("dns:tr.example=ns/*") == Grant("dns:tr.example", "ns", "*")
    assert Grant("x", "default", "gw").covers("gw")  # a bare fleet name is in namespace default


# --------------------------------------------------------------------------------------------
# ServiceAccount tokens (the API server's TokenReview stood in by a function)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-token-body.signature"


class _Reviewer:
    """Stands in for TokenReview: authenticates TOKEN as system:serviceaccount:a:tr (for audience
    aigw-xds, which the real review asks for), refuses any other token as the API server does
    (authenticated false, an error string), and can be made to fail (the API server unreachable)."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def __call__(self, token: str) -> tuple[bool, str, str]:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        if token == TOKEN:
            return True, "system:serviceaccount:a:tr", ""
        return False, "", "invalid bearer token"


async def test_a_reviewed_token_is_its_service_account_and_is_cached(monkeypatch: pytest.MonkeyPatch):
    reviewer = _Reviewer()
    authorizer = Authorizer(review=reviewer)
    now = [1000.0]
    monkeypatch.setattr(authz.time, "monotonic", lambda: now[0])
    identity = await authorizer.identify(REMOTE, {}, f"Bearer {TOKEN}")
    assert identity.service_accounts == {("a", "tr")}
    assert authorizer.allows(identity, "a/gw") and not authorizer.allows(identity, "b/gw")
    await authorizer.identify(REMOTE, {}, f"bearer  {TOKEN} ")
    assert reviewer.calls == 1  # cached
    assert all(TOKEN not in key for key in authorizer._reviewed)  # keyed by a hash, never the token
    now[0] += authz.REVIEW_CACHE_SECONDS + 1
    await authorizer.identify(REMOTE, {}, f"Bearer {TOKEN}")
    assert reviewer.calls == 2  # expired: reviewed again


async def test_a_refused_token_is_refused_every_time_and_never_shown():
    reviewer = _Reviewer()
    authorizer = Authorizer(review=reviewer)
    bad = "not-a-valid-token-value"
    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(TokenRefused) as refused:
                await authorizer.identify(REMOTE, {}, f"Bearer {bad}")
            assert bad not in str(refused.value)
            assert "invalid bearer token" in str(refused.value)
    assert reviewer.calls == 2  # failures are not cached
    assert bad not in repr(logs)


async def test_a_review_that_cannot_be_made_is_unavailable_and_logs_no_token():
    reviewer = _Reviewer()
    reviewer.down = True
    with structlog.testing.capture_logs() as logs, pytest.raises(ReviewUnavailable):
        await Authorizer(review=reviewer).identify(REMOTE, {}, f"Bearer {TOKEN}")
    assert [e["event"] for e in logs] == ["token_review_failed"]
    assert TOKEN not in repr(logs)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", TOKEN])
async def test_authorization_metadata_must_be_a_bearer_token(header: str):
    with pytest.raises(TokenRefused, match="Bearer <ServiceAccount token>"):
        await Authorizer(review=_Reviewer()).identify(REMOTE, {}, header)


async def test_a_user_that_is_no_service_account_gets_nothing():
    authorizer = Authorizer(review=lambda _t: (True, "alice@example.com", ""))
    identity = await authorizer.identify(REMOTE, {}, f"Bearer {TOKEN}")
    assert identity.service_accounts == frozenset()
    assert not authorizer.may_have_any(identity)


async def test_without_a_reviewer_a_token_is_not_trusted(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(authz, "_unverified_warned", False)
    with structlog.testing.capture_logs() as logs:
        identity = await Authorizer().identify(REMOTE, {}, f"Bearer {TOKEN}")
    assert identity.service_accounts == frozenset()
    assert not Authorizer().allows(identity, "a/gw")
    assert [e["event"] for e in logs] == ["token_not_verified"]


# --------------------------------------------------------------------------------------------
# What a stream is sent or refused


def _translators(*fleets: str):
    configs: dict[str, Message] = {fleet: config_pb2.TranslatorConfig() for fleet in fleets}
    return make_snapshot(contract.TRANSLATORS_FLEET, FleetResources({type_urls.TRANSLATOR: configs}))


def _subscription(*names: str, wildcard: bool = False) -> dict[str, TypeState]:
    return {type_urls.TRANSLATOR: TypeState(type_urls.TRANSLATOR, wildcard=wildcard, names=set(names))}


def test_a_wildcard_subscription_sees_only_the_allowed_fleets():
    access = StreamAccess(Authorizer(), _spiffe("a", "tr"))
    snapshot = _translators("a/gw", "a/two", "b/gw")
    view = access.view(contract.TRANSLATORS_FLEET, snapshot)
    assert view is not None and sorted(view.of_type(type_urls.TRANSLATOR)) == ["a/gw", "a/two"]
    assert view.version != snapshot.version
    assert access.refusal("n1", contract.TRANSLATORS_FLEET, snapshot, _subscription(wildcard=True)) == ""
    # a local peer sees the snapshot as it is
    local = StreamAccess(Authorizer(), identity_of("unix:/s", {}))
    assert local.view(contract.TRANSLATORS_FLEET, snapshot) is snapshot


def test_a_named_fleet_not_allowed_is_logged_once_and_refused_when_nothing_asked_is_allowed():
    access = StreamAccess(Authorizer(), _spiffe("a", "tr"))
    snapshot = _translators("a/gw", "b/gw")
    with structlog.testing.capture_logs() as logs:
        assert access.refusal("n1", contract.TRANSLATORS_FLEET, snapshot, _subscription("a/gw", "b/gw")) == ""
        assert access.refusal("n1", contract.TRANSLATORS_FLEET, snapshot, _subscription("a/gw", "b/gw")) == ""
        refusal = access.refusal("n1", contract.TRANSLATORS_FLEET, snapshot, _subscription("b/gw"))
    assert [(e["event"], e["fleet"], e["identity"]) for e in logs] == [
        ("translator_fleet_refused", "b/gw", "serviceaccount:a/tr")
    ]
    assert "serviceaccount:a/tr may not receive the translator configuration of b/gw" in refusal
    assert "serve --authorize serviceaccount:a/tr=b/gw" in refusal


def test_a_wildcard_from_an_identity_the_rule_gives_nothing_is_refused():
    access = StreamAccess(Authorizer((parse_grant("cn:other=a/gw"),)), identity_of(REMOTE, _cert(cn="stranger")))
    refusal = access.refusal("n1", contract.TRANSLATORS_FLEET, _translators("a/gw"), _subscription(wildcard=True))
    assert "cn:stranger may not receive any translator configuration" in refusal
    assert "serve --authorize cn:stranger=NAMESPACE/GATEWAY" in refusal
    anonymous = StreamAccess(Authorizer(), identity_of(REMOTE, {}))
    refusal = anonymous.refusal("n1", contract.TRANSLATORS_FLEET, None, _subscription(wildcard=True))
    assert "anonymous may not receive" in refusal and "SPIFFE ID" in refusal


def test_a_service_account_whose_namespace_has_no_gateway_yet_waits_instead_of_being_refused():
    access = StreamAccess(Authorizer(), _spiffe("a", "tr"))
    snapshot = _translators("b/gw")
    assert access.refusal("n1", contract.TRANSLATORS_FLEET, snapshot, _subscription(wildcard=True)) == ""
    assert access.refusal("n1", contract.TRANSLATORS_FLEET, snapshot, _subscription("a/gw")) == ""
    view = access.view(contract.TRANSLATORS_FLEET, snapshot)
    assert view is not None and view.of_type(type_urls.TRANSLATOR) == {}


def test_an_envoy_fleet_holding_credentials_goes_only_to_identities_that_may_have_it():
    secret = secret_pb2.Secret(name="credential/x")
    secret.generic_secret.secret.inline_string = "sk-test"
    holding = make_snapshot("a/gw", FleetResources({type_urls.SECRET: {"credential/x": secret}}))
    plain = make_snapshot("a/gw", FleetResources({}))
    assert holding.holds_credentials
    assert StreamAccess(Authorizer(), _spiffe("a", "envoy")).refusal("n1", "a/gw", holding, {}) == ""
    other = StreamAccess(Authorizer(), _spiffe("b", "envoy"))
    refusal = other.refusal("n1", "a/gw", holding, {})
    assert (
        "fleet a/gw holds credentials (backend keys or TLS private keys) and serviceaccount:b/envoy may not" in refusal
    )
    assert "sk-test" not in refusal
    assert other.refusal("n1", "a/gw", plain, {}) == ""  # nothing secret: served as before
    assert other.view("a/gw", holding) is holding  # Envoy fleets are never filtered, only refused
