"""Authorization holes closed for Kubernetes mode (xds/authz.py, cache.py, server.py): a listener's
TLS private key is a credential; in Kubernetes mode an address proves nothing (loopback is not
local), no fleet goes to an unauthenticated peer, a ServiceAccount receives a credential-holding
configuration only when RBAC lets it `get` the Secrets it was built from (SubjectAccessReview, the
decision cached), CSDS answers only identities allowed the fleets it reports; the Secret-provisioned
TLS verifies client certificates against --tls-client-ca."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf.message import Message

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_xds.envoy.bootstrap import bootstrap
from aigw_xds.xds import type_urls
from aigw_xds.xds.authz import Authorizer, ReviewUnavailable, StreamAccess, identity_of
from aigw_xds.xds.cache import FleetResources, make_snapshot
from aigw_xds.xds.server import ClientStatusDiscoveryService, Registry, StreamInfo, TLSMaterial, bind
from aigw_xds.xds.streams import TypeState
from tests.e2e.harness.certs import CertificateAuthority

REMOTE = "ipv4:10.1.2.3:40000"
SECRETS = frozenset({("a", "openai-key"), ("a", "gw-cert")})


def _tls_key_snapshot(fleet: str = "a/gw") -> Any:
    secret = secret_pb2.Secret(name="a/gw-cert")
    secret.tls_certificate.certificate_chain.inline_string = "-----BEGIN CERTIFICATE-----"
    secret.tls_certificate.private_key.inline_string = "-----BEGIN PRIVATE KEY-----secret"
    return make_snapshot(fleet, FleetResources({type_urls.SECRET: {"a/gw-cert": secret}}))


def _token_identity(namespace: str, account: str, peer: str = REMOTE) -> Any:
    return identity_of(peer, {}, f"system:serviceaccount:{namespace}:{account}", trust_loopback=False)


class Reviews:
    """A SubjectAccessReview stand-in: the (namespace, sa, secret namespace, secret name) it allows,
    and the questions asked."""

    def __init__(self, allowed: set[tuple[str, str, str, str]]) -> None:
        self.allowed = allowed
        self.asked: list[tuple[str, str, str, str]] = []
        self.fail = False

    def __call__(self, namespace: str, account: str, secret_ns: str, secret: str) -> bool:
        if self.fail:
            raise ConnectionError("connection refused")
        self.asked.append((namespace, account, secret_ns, secret))
        return (namespace, account, secret_ns, secret) in self.allowed


def _kubernetes(reviews: Reviews, secrets: frozenset[tuple[str, str]] = SECRETS) -> Authorizer:
    return Authorizer(
        review=lambda _t: (False, "", "not used"), access_review=reviews, secrets_of=lambda _fleet: secrets
    )


def test_a_listener_private_key_is_a_credential_refused_to_an_anonymous_peer_in_any_mode() -> None:
    snapshot = _tls_key_snapshot()
    assert snapshot.holds_credentials
    anonymous = identity_of(REMOTE, {"transport_security_type": [b"ssl"]})
    refusal = StreamAccess(Authorizer(), anonymous).refusal("evil", "a/gw", snapshot, {})
    assert "holds credentials" in refusal and "anonymous may not receive it" in refusal
    assert "PRIVATE KEY" not in refusal
    assert StreamAccess(Authorizer(), identity_of("unix:/s", {})).refusal("n", "a/gw", snapshot, {}) == ""


@pytest.mark.parametrize("peer", ["ipv4:127.0.0.1:5000", "ipv4:127.0.0.6:5000", "ipv6:[::1]:5000"])
def test_in_kubernetes_mode_loopback_is_not_local_and_gets_no_fleet_at_all(peer: str) -> None:
    authorizer = _kubernetes(Reviews(set()))
    identity = asyncio.run(authorizer.identify(peer, {}, None))
    assert not identity.local
    plain = make_snapshot("a/gw", FleetResources({}))  # nothing secret in it: still refused
    refusal = StreamAccess(authorizer, identity).refusal("n", "a/gw", plain, {})
    assert "is served to known peers only and anonymous may not receive it" in refusal
    assert StreamAccess(authorizer, identity).refusal("n", "x/unknown", None, {})  # no fleet to join either
    assert asyncio.run(authorizer.identify("unix:/run/aigw.sock", {}, None)).local
    # outside Kubernetes mode loopback keeps its trust (aigw-xds run, local translator workers)
    assert asyncio.run(Authorizer().identify(peer, {}, None)).local


def test_a_service_account_gets_a_fleet_without_credentials_of_its_namespace_without_a_review() -> None:
    reviews = Reviews(set())
    authorizer = _kubernetes(reviews)
    plain = make_snapshot("a/gw", FleetResources({}))
    access = StreamAccess(authorizer, _token_identity("a", "envoy"))
    asyncio.run(access.prepare("a/gw", plain))
    assert access.refusal("n", "a/gw", plain, {}) == ""
    assert reviews.asked == []
    other = StreamAccess(authorizer, _token_identity("b", "envoy"))
    assert "serviceaccount:b/envoy may not receive it" in other.refusal("n", "a/gw", plain, {})


def test_a_credential_holding_fleet_needs_rbac_get_on_every_secret_and_the_decision_is_cached() -> None:
    reviews = Reviews(
        {("a", "envoy", "a", "openai-key"), ("a", "envoy", "a", "gw-cert"), ("a", "default", "a", "gw-cert")}
    )
    authorizer = _kubernetes(reviews)
    snapshot = _tls_key_snapshot()
    allowed = StreamAccess(authorizer, _token_identity("a", "envoy"))
    asyncio.run(allowed.prepare("a/gw", snapshot))
    assert allowed.refusal("n", "a/gw", snapshot, {}) == ""
    assert sorted(reviews.asked) == [("a", "envoy", "a", "gw-cert"), ("a", "envoy", "a", "openai-key")]
    asyncio.run(StreamAccess(authorizer, _token_identity("a", "envoy")).prepare("a/gw", snapshot))
    assert len(reviews.asked) == 2  # cached per ServiceAccount and set of Secrets
    # a ServiceAccount of the namespace that may get one Secret of the two: refused, and told why
    partial = StreamAccess(authorizer, _token_identity("a", "default"))
    with structlog.testing.capture_logs() as logs:
        asyncio.run(partial.prepare("a/gw", snapshot))
    refusal = partial.refusal("n", "a/gw", snapshot, {})
    assert "give ServiceAccount a/default RBAC `get` on the Secrets of Gateway a/gw" in refusal
    assert [e["secrets"] for e in logs if e["event"] == "secret_access_refused"] == [["a/openai-key"]]
    # a new Secret in the configuration is a new question
    authorizer.secrets_of = lambda _fleet: SECRETS | {("a", "new-key")}
    asyncio.run(allowed.prepare("a/gw", snapshot))
    assert ("a", "envoy", "a", "new-key") in reviews.asked
    assert allowed.refusal("n", "a/gw", snapshot, {}) != ""
    # never decided (prepare not run): refused, not allowed by default
    fresh = StreamAccess(_kubernetes(reviews), _token_identity("a", "envoy"))
    assert fresh.refusal("n", "a/gw", snapshot, {}) != ""


def test_a_review_the_api_server_cannot_answer_is_unavailable_not_allowed() -> None:
    reviews = Reviews(set())
    reviews.fail = True
    access = StreamAccess(_kubernetes(reviews), _token_identity("a", "envoy"))
    with pytest.raises(ReviewUnavailable, match="SubjectAccessReview failed"):
        asyncio.run(access.prepare("a/gw", _tls_key_snapshot()))
    assert access.refusal("n", "a/gw", _tls_key_snapshot(), {}) != ""


def test_the_translator_configuration_goes_only_where_rbac_allows_its_secrets() -> None:
    configs: dict[str, Message] = {name: config_pb2.TranslatorConfig() for name in ("a/gw", "a/two", "b/gw")}
    snapshot = make_snapshot(contract.TRANSLATORS_FLEET, FleetResources({type_urls.TRANSLATOR: configs}))
    reviews = Reviews({("a", "tr", "a", "key-gw")})
    authorizer = Authorizer(
        review=lambda _t: (False, "", ""),
        access_review=reviews,
        secrets_of=lambda fleet: frozenset({("a", "key-" + fleet.partition("/")[2])}),
    )
    access = StreamAccess(authorizer, _token_identity("a", "tr"))
    asyncio.run(access.prepare(contract.TRANSLATORS_FLEET, snapshot))
    assert {q[3] for q in reviews.asked} == {"key-gw", "key-two"}  # its namespace's fleets only
    view = access.view(contract.TRANSLATORS_FLEET, snapshot)
    assert view is not None and sorted(view.of_type(type_urls.TRANSLATOR)) == ["a/gw"]
    state = {type_urls.TRANSLATOR: TypeState(type_urls.TRANSLATOR, names={"a/two"})}
    assert "RBAC `get` on the Secrets of Gateway a/two" in access.refusal(
        "n", contract.TRANSLATORS_FLEET, snapshot, state
    )


class _Context:
    """The parts of grpc.aio.ServicerContext that admit and abort use."""

    def __init__(self, peer: str, token: str | None = None) -> None:
        self._peer, self._token = peer, token
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token}")] if self._token else []

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


def test_csds_in_kubernetes_mode_answers_only_about_the_fleets_the_asker_may_have() -> None:
    registry = Registry()
    for number, fleet in enumerate(("a/gw", "b/gw"), 1):
        node = base_pb2.Node(id=f"envoy-{fleet.replace('/', '-')}", cluster=fleet)
        registry.streams[number] = StreamInfo(number, "sotw", node, fleet, {})
    from aigw_xds.xds.cache import SnapshotCache

    authorizer = Authorizer(review=lambda token: (token == "tok-a", "system:serviceaccount:a:envoy", "bad token"))
    csds = ClientStatusDiscoveryService(SnapshotCache(), registry, authorizer)

    def ask(context: _Context) -> list[str]:
        response = asyncio.run(csds.FetchClientStatus(csds_pb2.ClientStatusRequest(), context))
        return [c.node.id for c in response.config]

    assert ask(_Context(REMOTE, "tok-a")) == ["envoy-a-gw"]
    anonymous = _Context("ipv4:127.0.0.1:6000")  # a port-forward: no trust by address
    with pytest.raises(RuntimeError, match="aborted"):
        ask(anonymous)
    assert anonymous.aborted is not None and anonymous.aborted[0] == grpc.StatusCode.PERMISSION_DENIED
    assert ask(_Context("unix:/run/aigw.sock")) == ["envoy-a-gw", "envoy-b-gw"]
    # outside Kubernetes mode CSDS is as before (anyone)
    assert (
        len(
            asyncio.run(
                ClientStatusDiscoveryService(SnapshotCache(), registry).FetchClientStatus(
                    csds_pb2.ClientStatusRequest(), _Context(REMOTE)
                )
            ).config
        )
        == 2
    )


async def _mtls_calls(ca: CertificateAuthority, clients: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Each client's call to a server bound with the Secret-provisioned TLS (TLSMaterial) and a
    client CA: the status it got, and the auth contexts the handler saw."""
    server_pem = ca.issue("server", dns=("localhost",))
    seen: list[dict[str, Any]] = []

    async def handler(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append(dict(context.auth_context() or {}))
        return b"ok"

    server = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler] = {"M": grpc.unary_unary_rpc_method_handler(handler)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = bind(server, "127.0.0.1:0", TLSMaterial(server_pem.cert.encode(), server_pem.key.encode(), ca.pem.encode()))
    await server.start()
    codes = []
    try:
        for client in clients:
            credentials = grpc.ssl_channel_credentials(
                ca.pem.encode(), client.key.encode() if client else None, client.cert.encode() if client else None
            )
            async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
                try:
                    call: Any = channel.unary_unary("/t.T/M")
                    await call(b"x", timeout=5)
                    codes.append("OK")
                except grpc.aio.AioRpcError as exc:
                    codes.append(exc.code().name)
    finally:
        await server.stop(0)
    return codes, seen


def test_the_secret_provisioned_tls_verifies_client_certificates_against_the_client_ca() -> None:
    ca = CertificateAuthority()
    good = ca.issue("client", client=True, uris=("spiffe://cluster.local/ns/a/sa/envoy",))
    rogue = CertificateAuthority("rogue").issue(
        "client", client=True, uris=("spiffe://cluster.local/ns/kube-system/sa/x",)
    )
    codes, seen = asyncio.run(_mtls_calls(ca, [good, rogue, None]))
    # the good one's SPIFFE ID reaches authz; the rogue one (another CA) is refused in the handshake;
    # none at all is refused too (gRPC Python cannot make client certificates optional)
    assert codes == ["OK", "UNAVAILABLE", "UNAVAILABLE"]
    assert len(seen) == 1 and seen[0]["peer_uri"] == [b"spiffe://cluster.local/ns/a/sa/envoy"]


def test_bootstrap_with_a_token_file_sends_it_over_tls_with_envoys_google_grpc_client() -> None:
    config = bootstrap(
        xds_host="aigw-xds.aigw-system.svc",
        xds_port=18000,
        fleet="a/gw",
        node_id="n",
        tls_ca="/ca.crt",
        token_file="/var/run/secrets/aigw-xds/token",
    )
    (service,) = config["dynamic_resources"]["ads_config"]["grpc_services"]
    google = service["google_grpc"]
    assert google["target_uri"] == "aigw-xds.aigw-system.svc:18000"
    assert google["channel_credentials"] == {"ssl_credentials": {"root_certs": {"filename": "/ca.crt"}}}
    (plugin,) = google["call_credentials"]
    assert plugin["from_plugin"]["name"] == "envoy.grpc_credentials.file_based_metadata"
    assert plugin["from_plugin"]["typed_config"]["secret_data"] == {"filename": "/var/run/secrets/aigw-xds/token"}
    assert plugin["from_plugin"]["typed_config"]["header_prefix"] == "Bearer "
    assert google["channel_args"]["args"]["grpc.max_receive_message_length"] == {
        "int_value": contract.XDS_MAX_MESSAGE_BYTES
    }
    assert "static_resources" not in config  # no unused xds_cluster
    with pytest.raises(ValueError, match="over TLS only"):
        bootstrap(xds_host="h", xds_port=1, fleet="a/gw", node_id="n", token_file="/t")


async def test_a_recompile_during_an_access_review_is_reviewed_before_anything_is_sent() -> None:
    """What is checked is what is sent: the server reviews again when the fleet's snapshot changed
    while a review was awaited (a Secret added or dropped meanwhile)."""
    from aigw_xds.xds.server import AggregatedDiscoveryService, Registry

    class Cache:
        def __init__(self) -> None:
            self.current = "snapshot holding k1 and k2"

        def get(self, fleet: str) -> str:
            return self.current

    cache = Cache()
    reviewed: list[str] = []

    class Access:
        async def prepare(self, fleet: str, snapshot: str) -> None:
            reviewed.append(snapshot)
            if len(reviewed) == 1:
                cache.current = "snapshot holding k1"  # a recompile lands during the review

    service = AggregatedDiscoveryService(cache, Registry())  # type: ignore[arg-type]
    sent = await service._prepared(None, Access(), "a/gw")  # type: ignore[arg-type]
    assert sent == "snapshot holding k1"
    assert reviewed == ["snapshot holding k1 and k2", "snapshot holding k1"]
