"""Per-node authorization: who a peer of the xDS server is, and which fleets it may receive.

Two kinds of configuration hold backend credentials: the translator configuration (served to the
pseudo-fleet contract.TRANSLATORS_FLEET, one TranslatorConfig per fleet) and the Envoy fleets whose
snapshot carries SDS credentials. Each goes only to a peer whose identity may have that fleet.

Identity (established once per stream, from what the peer proved):
- a client certificate (mTLS; the server verified it against --tls-client-ca): its SPIFFE ID
  `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` is the ServiceAccount <ns>/<sa>; any other SPIFFE ID,
  its DNS SANs and its common name are names that grants can refer to;
- a Kubernetes ServiceAccount token, sent as gRPC metadata `authorization: Bearer <token>`,
  verified with a TokenReview (audience "aigw-xds") through the injected `Review` callable;
- neither, from loopback or a unix socket: a local process (`aigw-xds run`, translator workers);
  in Kubernetes mode only from a unix socket (a `kubectl port-forward` or a mesh sidecar arrives
  from loopback too: an address proves nothing in a cluster);
- neither, from anywhere else: anonymous.
A peer that presents a certificate or a token is judged by it, wherever it connects from.

Rule (Authorizer.allows): a local peer may have every fleet; a ServiceAccount <ns>/<sa> the fleets
of the Gateways in namespace <ns> (the Envoy pod and its translator sidecar run in the Gateway's
namespace) -- in Kubernetes mode, a configuration that holds credentials (backend keys, a listener's
TLS private key, the translator configuration) only if that ServiceAccount may itself `get` every
Secret the Gateway's configuration was built from (a SubjectAccessReview per Secret, through the
injected `AccessReview`, the decision cached for REVIEW_CACHE_SECONDS per ServiceAccount and set of
Secrets): receiving the configuration never gives more than RBAC already does; a grant
`IDENTITY=NAMESPACE/GATEWAY` (GATEWAY may be `*`) adds fleets to the identity it names. Without
any grant and outside Kubernetes mode, a certificate that claims no SPIFFE ID keeps what every
client certificate got before per-node authorization existed: every fleet (with a one-time warning
that per-node authorization is off). Anything else gets nothing.

Which fleets need the rule: outside Kubernetes mode, those whose configuration holds credentials
(Snapshot.holds_credentials); in Kubernetes mode every fleet (an anonymous peer must not join a
fleet either: its NACKs would show in the Gateway's status, its silence hold Programmed back).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import structlog

import aigw_contract as contract

from ..keys import DNS_LABEL, DNS_SUBDOMAIN
from . import type_urls
from .cache import Snapshot, versions_digest
from .streams import TypeState

log = structlog.get_logger(__name__)

TOKEN_AUDIENCE = "aigw-xds"
REVIEW_CACHE_SECONDS = 60.0
REVIEW_CACHE_ENTRIES = 4096

# review(token) -> (authenticated, username, error): a TokenReview (authentication.k8s.io/v1) for
# the audience TOKEN_AUDIENCE. It may block (the kubernetes client is synchronous) and may raise
# when the API server cannot be asked.
Review = Callable[[str], tuple[bool, str, str]]
# access_review(namespace, serviceaccount, secret_namespace, secret_name) -> whether that
# ServiceAccount may `get` that Secret: a SubjectAccessReview (authorization.k8s.io/v1). It may block
# and may raise when the API server cannot be asked.
AccessReview = Callable[[str, str, str, str], bool]
# secrets_of(fleet) -> the Kubernetes Secrets (namespace, name) that fleet's configuration was built from.
SecretsOf = Callable[[str], frozenset[tuple[str, str]]]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_SPIFFE_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_SERVICE_ACCOUNT_USER = "system:serviceaccount:"
# The IDENTITY forms of a grant, in the order a refusal suggests them.
_GRANT_FORMS = ("serviceaccount:", "spiffe://", "dns:", "cn:")


# --------------------------------------------------------------------------------------------
# Identities


@dataclass(frozen=True)
class Identity:
    """What a peer proved about itself. `names` are the forms grants refer to ("spiffe://...",
    "serviceaccount:<ns>/<sa>", "dns:<name>", "cn:<name>")."""

    local: bool = False  # loopback or unix socket, no credential presented
    certificate: bool = False  # presented a client certificate the server verified
    spiffe_claimed: bool = False  # the certificate carries a spiffe: URI (valid or not)
    service_accounts: frozenset[tuple[str, str]] = frozenset()  # (namespace, name)
    names: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        """How logs and refusals name it (never a token)."""
        if self.local:
            return "local"
        preferred = [n for n in self.names if n.startswith("serviceaccount:")] or sorted(self.names)
        if preferred:
            return sorted(preferred)[0]
        return "a certificate without usable names" if self.certificate else "anonymous"

    @property
    def grantable(self) -> str:
        """The IDENTITY an operator would write in `serve --authorize IDENTITY=NAMESPACE/GATEWAY`."""
        for prefix in _GRANT_FORMS:
            matching = sorted(n for n in self.names if n.startswith(prefix))
            if matching:
                return matching[0]
        return ""


def parse_spiffe(uri: str) -> list[str] | None:
    """The path segments of a valid SPIFFE ID (spiffe://trust-domain/seg/...), or None. Per the SPIFFE
    ID spec: lowercase scheme and trust domain, segments of [A-Za-z0-9._-] that are not "." or "..",
    no empty segment, trailing slash, percent-encoding, query, fragment, user or port."""
    if not uri.startswith("spiffe://"):
        return None
    domain, slash, path = uri.removeprefix("spiffe://").partition("/")
    if not _TRUST_DOMAIN.fullmatch(domain) or not slash or len(uri) > 2048:
        return None
    segments = path.split("/")
    if any(not _SPIFFE_SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
        return None
    return segments


def service_account_of_spiffe(uri: str) -> tuple[str, str] | None:
    """(namespace, name) of `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` exactly (four segments, valid
    Kubernetes names), or None."""
    segments = parse_spiffe(uri)
    if segments is None or len(segments) != 4 or segments[0] != "ns" or segments[2] != "sa":
        return None
    namespace, name = segments[1], segments[3]
    if not DNS_LABEL.fullmatch(namespace) or not DNS_SUBDOMAIN.fullmatch(name):
        return None
    return namespace, name


def service_account_of_user(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a TokenReview username `system:serviceaccount:<ns>:<sa>`, or None."""
    if not username.startswith(_SERVICE_ACCOUNT_USER):
        return None
    namespace, colon, name = username.removeprefix(_SERVICE_ACCOUNT_USER).partition(":")
    if not colon or not DNS_LABEL.fullmatch(namespace) or not DNS_SUBDOMAIN.fullmatch(name):
        return None
    return namespace, name


def is_local_peer(peer: str) -> bool:
    """gRPC's peer string of a loopback or unix-socket client."""
    return peer.startswith(("unix:", "ipv4:127.", "ipv6:[::1]", "ipv6:%5B::1%5D"))


def identity_of(
    peer: str, auth: Mapping[str, Sequence[bytes]], token_username: str | None = None, *, trust_loopback: bool = True
) -> Identity:
    """The identity of a peer: its gRPC peer string, its auth context (the verified client
    certificate's properties: peer_uri, peer_dns, x509_common_name) and the username a TokenReview
    returned for its token (None: no verified token). Without trust_loopback (Kubernetes mode) only
    a unix-socket peer is local."""
    uris = [v.decode(errors="replace") for v in auth.get("peer_uri", ())]
    dns = [v.decode(errors="replace") for v in auth.get("peer_dns", ())]
    common = [v.decode(errors="replace") for v in auth.get("x509_common_name", ())]
    certificate = "x509_pem_cert" in auth or bool(uris or dns or common)
    names: set[str] = set()
    accounts: set[tuple[str, str]] = set()
    spiffe = [u for u in uris if u.lower().startswith("spiffe:")]
    # An X.509-SVID has exactly one URI SAN; a certificate with several is no SVID.
    if len(spiffe) == 1 and len(uris) == 1 and parse_spiffe(spiffe[0]) is not None:
        names.add(spiffe[0])
        account = service_account_of_spiffe(spiffe[0])
        if account is not None:
            accounts.add(account)
    names |= {f"dns:{d}" for d in dns} | {f"cn:{c}" for c in common}
    if token_username is not None:
        account = service_account_of_user(token_username)
        if account is not None:
            accounts.add(account)
    names |= {f"serviceaccount:{ns}/{sa}" for ns, sa in accounts}
    return Identity(
        local=not certificate
        and token_username is None
        and (is_local_peer(peer) if trust_loopback else peer.startswith("unix:")),
        certificate=certificate,
        spiffe_claimed=bool(spiffe),
        service_accounts=frozenset(accounts),
        names=frozenset(names),
    )


# --------------------------------------------------------------------------------------------
# Grants and the rule


@dataclass(frozen=True)
class Grant:
    """`serve --authorize IDENTITY=NAMESPACE/GATEWAY`: the identity may have that fleet (every
    Gateway of the namespace with GATEWAY `*`)."""

    identity: str
    namespace: str
    gateway: str

    def covers(self, fleet: str) -> bool:
        namespace, gateway = split_fleet(fleet)
        return namespace == self.namespace and self.gateway in ("*", gateway)


def parse_grant(text: str) -> Grant:
    """A Grant from `IDENTITY=NAMESPACE/GATEWAY`, or ValueError saying what is wrong."""
    identity, equals, target = text.rpartition("=")
    usage = (
        f"--authorize {text!r} must be IDENTITY=NAMESPACE/GATEWAY with IDENTITY spiffe://..., "
        "serviceaccount:<namespace>/<name>, dns:<name> or cn:<name>, and GATEWAY a name or *"
    )
    namespace, slash, gateway = target.partition("/")
    if not equals or not slash or not DNS_LABEL.fullmatch(namespace):
        raise ValueError(usage)
    if gateway != "*" and not DNS_SUBDOMAIN.fullmatch(gateway):
        raise ValueError(usage)
    if identity.startswith("spiffe://"):
        valid = parse_spiffe(identity) is not None
    elif identity.startswith("serviceaccount:"):
        account_ns, slash, account = identity.removeprefix("serviceaccount:").partition("/")
        valid = bool(slash) and bool(DNS_LABEL.fullmatch(account_ns)) and bool(DNS_SUBDOMAIN.fullmatch(account))
    elif identity.startswith(("dns:", "cn:")):
        valid = bool(identity.partition(":")[2].strip())
    else:
        valid = False
    if not valid:
        raise ValueError(usage)
    return Grant(identity, namespace, gateway)


def split_fleet(fleet: str) -> tuple[str, str]:
    """(namespace, gateway) of a fleet name; a bare name is in namespace default (as fleets.py)."""
    namespace, slash, gateway = fleet.partition("/")
    return (namespace, gateway) if slash else ("default", fleet)


class TokenRefused(Exception):
    """The peer's token did not authenticate (UNAUTHENTICATED); the message never holds the token."""


class ReviewUnavailable(Exception):
    """The token could not be reviewed now (UNAVAILABLE: the client retries)."""


_open_warned = False
_unverified_warned = False


@dataclass
class Authorizer:
    """The rule, the grants, and (in Kubernetes mode) the token verifier. `review` set means
    Kubernetes mode: certificates without a ServiceAccount identity get only what grants give."""

    grants: tuple[Grant, ...] = ()
    review: Review | None = None
    # Kubernetes mode: a ServiceAccount receives a credential-holding configuration only if it may
    # `get` the Secrets it was built from (both set: the control plane sets them with `review`).
    access_review: AccessReview | None = None
    secrets_of: SecretsOf | None = None
    _reviewed: OrderedDict[str, tuple[float, str]] = field(default_factory=OrderedDict, repr=False)
    # (namespace, serviceaccount, secrets) -> (expiry, may get them all)
    _decisions: OrderedDict[tuple[str, str, frozenset[tuple[str, str]]], tuple[float, bool]] = field(
        default_factory=OrderedDict, repr=False
    )

    @property
    def kubernetes(self) -> bool:
        return self.review is not None

    def open_to(self, identity: Identity) -> bool:
        """Compatibility: a client certificate without a SPIFFE ID has every fleet while no grant is
        configured and the server is not in Kubernetes mode (per-node authorization is off)."""
        return identity.certificate and not identity.spiffe_claimed and not self.grants and not self.kubernetes

    def allows(self, identity: Identity, fleet: str, credentials: bool = True) -> bool:
        """Whether `identity` may receive `fleet`'s configuration (`credentials`: one holding
        credentials; in Kubernetes mode a ServiceAccount's then needs a positive access decision,
        made beforehand by `review_access`)."""
        if identity.local:
            return True
        namespace, _ = split_fleet(fleet)
        if any(
            namespace == ns and self._may_get_secrets(ns, sa, fleet, credentials)
            for ns, sa in identity.service_accounts
        ):
            return True
        if any(g.identity in identity.names and g.covers(fleet) for g in self.grants):
            return True
        if self.open_to(identity):
            _warn_open_once(identity)
            return True
        return False

    def may_have_any(self, identity: Identity) -> bool:
        """Whether the rule gives this identity any fleet at all (existing or not)."""
        return (
            identity.local
            or bool(identity.service_accounts)
            or any(g.identity in identity.names for g in self.grants)
            or self.open_to(identity)
        )

    # -- Kubernetes RBAC on the Secrets a configuration carries -------------------------------

    def _secrets_to_review(self, fleet: str, credentials: bool) -> frozenset[tuple[str, str]] | None:
        """The Secrets a ServiceAccount must be allowed to get for this fleet, or None: no review."""
        if not credentials or self.access_review is None or self.secrets_of is None:
            return None
        return self.secrets_of(fleet)

    def _may_get_secrets(self, namespace: str, account: str, fleet: str, credentials: bool) -> bool:
        secrets = self._secrets_to_review(fleet, credentials)
        if not secrets:
            return True
        decision = self._decisions.get((namespace, account, secrets))
        return decision is not None and decision[0] > time.monotonic() and decision[1]

    async def review_access(self, identity: Identity, fleet: str, credentials: bool = True) -> None:
        """Asks the API server (SubjectAccessReviews, in a thread: they block) whether the
        identity's ServiceAccounts of the fleet's namespace may get the Secrets of its configuration,
        unless a fresh decision is cached. Raises ReviewUnavailable when the API server cannot say."""
        secrets = self._secrets_to_review(fleet, credentials)
        if not secrets:
            return
        namespace, _ = split_fleet(fleet)
        now = time.monotonic()
        for account_ns, account in sorted(identity.service_accounts):
            key = (account_ns, account, secrets)
            cached = self._decisions.get(key)
            if account_ns != namespace or (cached is not None and cached[0] > now):
                continue
            assert self.access_review is not None
            review = self.access_review
            try:
                missing = [s for s in sorted(secrets) if not await asyncio.to_thread(review, account_ns, account, *s)]
            except Exception as exc:  # the API server is unreachable, forbids SubjectAccessReviews...
                log.warning("access_review_failed", error=type(exc).__name__, reason=_first_line(str(exc)))
                raise ReviewUnavailable(
                    "whether this ServiceAccount may get the Gateway's Secrets cannot be checked now "
                    "(SubjectAccessReview failed)"
                ) from None
            if missing:
                log.warning(
                    "secret_access_refused",
                    identity=f"serviceaccount:{account_ns}/{account}",
                    fleet=fleet,
                    secrets=[f"{ns}/{name}" for ns, name in missing],
                )
            self._decisions[key] = (now + REVIEW_CACHE_SECONDS, not missing)
            self._decisions.move_to_end(key)
            while len(self._decisions) > REVIEW_CACHE_ENTRIES:
                self._decisions.popitem(last=False)

    def how_to_grant(self, identity: Identity, fleet: str = "NAMESPACE/GATEWAY") -> str:
        if self.access_review is not None and identity.service_accounts:
            namespace, _ = split_fleet(fleet)
            accounts = sorted(f"{ns}/{sa}" for ns, sa in identity.service_accounts if ns == namespace)
            if accounts:
                return (
                    f"give ServiceAccount {accounts[0]} RBAC `get` on the Secrets of Gateway {fleet} "
                    "(a Role with their resourceNames)"
                )
        who = identity.grantable
        if not who and not self.kubernetes:  # tokens are reviewed only where there is an API server
            return (
                "present a client certificate with a SPIFFE ID spiffe://<trust-domain>/ns/<namespace>/sa/<name> "
                "(serve --tls-client-ca: mTLS), or connect from this host (loopback)"
            )
        if not who:
            return (
                "present a client certificate with a SPIFFE ID spiffe://<trust-domain>/ns/<namespace>/sa/<name> "
                "or a ServiceAccount token (aigw-xds translator --xds-token-file, aigw-xds bootstrap --xds-token-file)"
            )
        return f"run the Envoy and translator in the Gateway's namespace, or grant it: serve --authorize {who}={fleet}"

    # -- establishing the identity of a stream ------------------------------------------------

    async def identify(self, peer: str, auth: Mapping[str, Sequence[bytes]], authorization: str | None) -> Identity:
        """The peer's identity; with `authorization` metadata, the token is reviewed (in a thread:
        the review blocks). Raises TokenRefused or ReviewUnavailable."""
        trust = not self.kubernetes
        if authorization is None:
            return identity_of(peer, auth, trust_loopback=trust)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise TokenRefused("the authorization metadata must be 'Bearer <ServiceAccount token>'")
        if self.review is None:
            _warn_unverified_once()
            return identity_of(peer, auth)
        username = await self._username(token)
        return identity_of(peer, auth, username, trust_loopback=trust)

    async def _username(self, token: str) -> str:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        hit = self._reviewed.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        assert self.review is not None
        try:
            authenticated, username, error = await asyncio.to_thread(self.review, token)
        except Exception as exc:  # the API server is unreachable, forbids TokenReviews...
            log.warning("token_review_failed", error=type(exc).__name__, reason=_first_line(str(exc)))
            raise ReviewUnavailable("the ServiceAccount token cannot be verified now (TokenReview failed)") from None
        if not authenticated:
            raise TokenRefused(
                f"the ServiceAccount token was not accepted (TokenReview: {error or 'not authenticated'})"
            )
        self._reviewed[key] = (now + REVIEW_CACHE_SECONDS, username)
        self._reviewed.move_to_end(key)
        while len(self._reviewed) > REVIEW_CACHE_ENTRIES:
            self._reviewed.popitem(last=False)
        return username

    async def admit(self, context: grpc.aio.ServicerContext) -> StreamAccess:
        """The stream's access, its identity established; aborts the stream on a refused token."""
        authorization = next((str(v) for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        auth = {key: list(values) for key, values in (context.auth_context() or {}).items()}
        try:
            identity = await self.identify(context.peer() or "", auth, authorization)
        except TokenRefused as exc:
            log.warning("token_refused", peer=context.peer(), reason=str(exc))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise
        except ReviewUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise
        return StreamAccess(self, identity)


@dataclass
class StreamAccess:
    """One stream's identity and what it has been refused (logged once per stream)."""

    authorizer: Authorizer
    identity: Identity
    refused: set[str] = field(default_factory=set)

    def view(self, fleet: str, snapshot: Snapshot | None) -> Snapshot | None:
        """What this stream may be sent of `snapshot`: for the translator pseudo-fleet, only the
        configurations of the fleets the identity may have; other fleets as they are."""
        if fleet != contract.TRANSLATORS_FLEET or snapshot is None or self.identity.local:
            return snapshot
        available = snapshot.of_type(type_urls.TRANSLATOR)
        decided: dict[str, bool] = {}  # by fleet: its head and its 64 parts are one decision

        def may_have(name: str) -> bool:
            fleet = contract.translator_config_fleet(name)
            if fleet not in decided:
                decided[fleet] = self.authorizer.allows(self.identity, fleet)
            return decided[fleet]

        allowed = {n: r for n, r in available.items() if may_have(n)}
        if len(allowed) == len(available):
            return snapshot
        versions = versions_digest(_versions(allowed))
        return Snapshot(snapshot.fleet, {type_urls.TRANSLATOR: allowed}, versions, withheld=snapshot.withheld)

    async def prepare(self, fleet: str, snapshot: Snapshot | None) -> None:
        """Makes the access decisions `view` and `refusal` need (Kubernetes RBAC on the Secrets of
        the configurations this stream may be sent). Raises ReviewUnavailable."""
        authorizer, identity = self.authorizer, self.identity
        if authorizer.access_review is None or identity.local or not identity.service_accounts:
            return
        if fleet != contract.TRANSLATORS_FLEET:
            await authorizer.review_access(identity, fleet, snapshot is not None and snapshot.holds_credentials)
            return
        namespaces = {ns for ns, _ in identity.service_accounts}
        for name in snapshot.of_type(type_urls.TRANSLATOR) if snapshot is not None else ():
            if contract.translator_config_fleet(name) == name and split_fleet(name)[0] in namespaces:
                await authorizer.review_access(identity, name)  # a fleet's parts go with its head

    def refusal(self, node: str, fleet: str, snapshot: Snapshot | None, types: Mapping[str, TypeState]) -> str:
        """Why the stream must end (PERMISSION_DENIED), or "". Logs each refused fleet once."""
        if fleet == contract.TRANSLATORS_FLEET:
            return self._translator_refusal(node, types.get(type_urls.TRANSLATOR))
        credentials = snapshot is not None and snapshot.holds_credentials
        if not (credentials or self.authorizer.kubernetes) or self.authorizer.allows(self.identity, fleet, credentials):
            return ""
        if fleet not in self.refused:
            self.refused.add(fleet)
            log.warning("fleet_refused", node=node, fleet=fleet, identity=self.identity.label, credentials=credentials)
        held = (
            "holds credentials (backend keys or TLS private keys)" if credentials else "is served to known peers only"
        )
        return (
            f"the configuration of fleet {fleet} {held} and {self.identity.label} may not "
            f"receive it: {self.authorizer.how_to_grant(self.identity, fleet)}"
        )

    def _translator_refusal(self, node: str, state: TypeState | None) -> str:
        if state is None:
            return ""
        identity, authorizer = self.identity, self.authorizer
        names = sorted({contract.translator_config_fleet(name) for name in state.names})  # a part is its fleet's
        for name in names:
            if name not in self.refused and not authorizer.allows(identity, name):
                self.refused.add(name)
                log.warning("translator_fleet_refused", node=node, identity=identity.label, fleet=name)
        if state.wildcard and not authorizer.may_have_any(identity):
            log.warning("translator_fleet_refused", node=node, identity=identity.label, fleet="*")
            return f"{identity.label} may not receive any translator configuration: {authorizer.how_to_grant(identity)}"
        if not state.wildcard and names and all(n in self.refused for n in names):
            fleets = ", ".join(names)
            return (
                f"{identity.label} may not receive the translator configuration of {fleets}: "
                f"{authorizer.how_to_grant(identity, names[0])}"
            )
        return ""


def _versions(resources: Mapping[str, object]) -> dict[str, str]:
    return {name: getattr(resource, "version", "") for name, resource in resources.items()}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _warn_open_once(identity: Identity) -> None:
    global _open_warned
    if not _open_warned:
        _open_warned = True
        log.warning(
            "per_node_authorization_off",
            identity=identity.label,
            reason="no serve --authorize grant is configured: every client certificate without a SPIFFE ID "
            "receives every fleet's credentials",
        )


def _warn_unverified_once() -> None:
    global _unverified_warned
    if not _unverified_warned:
        _unverified_warned = True
        log.warning(
            "token_not_verified",
            reason="ServiceAccount tokens are verified only in Kubernetes mode: the peer is judged by its "
            "certificate or address",
        )


def kubernetes_review(api_client: object, audience: str = TOKEN_AUDIENCE) -> Review:
    """A Review backed by the API server's TokenReview (authentication.k8s.io/v1) through a
    kubernetes ApiClient. A token is accepted only when the server authenticates it for `audience`."""
    from kubernetes import client

    api = client.AuthenticationV1Api(api_client)

    def review(token: str) -> tuple[bool, str, str]:
        body = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=[audience]))
        status = api.create_token_review(body).status
        if status is None or not status.authenticated:
            return False, "", (status.error if status is not None and status.error else "not authenticated")
        if audience not in (status.audiences or []):
            return False, "", f"the token is not for audience {audience}"
        return True, (status.user.username if status.user is not None else "") or "", ""

    return review


def kubernetes_access_review(api_client: object) -> AccessReview:
    """An AccessReview backed by the API server's SubjectAccessReview (authorization.k8s.io/v1):
    may ServiceAccount <namespace>/<name> `get` Secret <secret_namespace>/<secret_name>? The
    request carries the ServiceAccount's user and groups as a token of it would authenticate."""
    from kubernetes import client

    api = client.AuthorizationV1Api(api_client)

    def access_review(namespace: str, account: str, secret_namespace: str, secret_name: str) -> bool:
        body = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"{_SERVICE_ACCOUNT_USER}{namespace}:{account}",
                groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                resource_attributes=client.V1ResourceAttributes(
                    verb="get", group="", version="v1", resource="secrets", namespace=secret_namespace, name=secret_name
                ),
            )
        )
        status = api.create_subject_access_review(body).status
        return bool(status is not None and status.allowed and not status.denied)

    return access_review
