"""The metadata of the OAuth issuers that MCPRoutes name without jwks: the control plane fetches it
for the jwks_uri the compile gives Envoy's jwt_authn (compile.context.IssuerMetadata), as Envoy AI
Gateway's controller does.

The documents are tried in the order the MCP specification gives for an authorization server's
metadata (and one more, as Envoy AI Gateway tries it). For an issuer with a path
(https://id.example.com/tenant1):

    https://id.example.com/.well-known/oauth-authorization-server/tenant1   RFC 8414, path inserted
    https://id.example.com/.well-known/openid-configuration/tenant1         OIDC, path inserted
    https://id.example.com/tenant1/.well-known/openid-configuration         OIDC, path appended
    https://id.example.com/tenant1/.well-known/oauth-authorization-server   RFC 8414, path appended

and for one without, the two documents at the host's root. An answer other than 200, or a
document without a jwks_uri (optional in RFC 8414), moves on to the next; the first JSON document
naming the configured issuer (RFC 8414 section 3.3: another's metadata is not used) and an http(s)
jwks_uri Envoy can fetch wins; redirects are not followed. A timeout (10 s for all the places) or
a refused connection stops there: the issuer is asked again after a pause growing from 1 s to 5
minutes (an issuer started with the gateway is found soon). A learnt jwks_uri is read again every
hour; a failure then keeps the one learnt (Envoy fetches the keys from it, and again as they
rotate). Requests honour HTTPS_PROXY and NO_PROXY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import structlog

from .api import kinds
from .compile.context import IssuerMetadata
from .resources import ResourceSet

if TYPE_CHECKING:  # imported when first used: the control plane starts without it
    import aiohttp

log = structlog.get_logger(__name__)

AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION = "/.well-known/openid-configuration"
TIMEOUT_S = 10.0  # for all the places of one issuer
FIRST_RETRY_S = 1.0
LAST_RETRY_S = 300.0
REFRESH_S = 3600.0  # a learnt jwks_uri is read again this often
# The most of a metadata document read (a real one is a few KB).
_MAX_DOCUMENT = 1 << 20


def issuers_to_discover(resources: ResourceSet) -> set[str]:
    """The issuers of the MCPRoutes whose oauth names no jwks."""
    wanted = set()
    for loaded in resources.of_kind("MCPRoute"):
        policy: kinds.MCPRouteSecurityPolicy | None = loaded.resource.spec.securityPolicy
        if policy is not None and policy.oauth is not None and policy.oauth.jwks is None:
            wanted.add(policy.oauth.issuer)
    return wanted


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be, in the order asked (the module's docstring)."""
    parts = urllib.parse.urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [origin + AUTHORIZATION_SERVER, origin + OPENID_CONFIGURATION]
    return [
        origin + AUTHORIZATION_SERVER + path,
        origin + OPENID_CONFIGURATION + path,
        origin + path + OPENID_CONFIGURATION,
        origin + path + AUTHORIZATION_SERVER,
    ]


async def fetch(session: aiohttp.ClientSession, issuer: str) -> IssuerMetadata:
    """The issuer's jwks_uri from its metadata, or why it could not be had (within TIMEOUT_S)."""
    import aiohttp

    parts = urllib.parse.urlsplit(issuer)
    if parts.query or parts.fragment:
        return IssuerMetadata(problem=f"{issuer} has a query or fragment, which an issuer has not (RFC 8414 section 2)")
    misses = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            for url in metadata_urls(issuer):
                # Redirects are not followed: the document's place is the issuer's to say, not another host's.
                async with session.get(url, headers={"accept": "application/json"}, allow_redirects=False) as answer:
                    if answer.status != 200:
                        misses.append(f"{url} answered {answer.status}")
                        continue
                    body = await _body(answer)
                if body is None:
                    misses.append(f"{url} is larger than {_MAX_DOCUMENT} bytes")
                    continue
                jwks_uri, miss = _jwks_uri(body, issuer)
                if jwks_uri:
                    return IssuerMetadata(jwks_uri=jwks_uri)
                misses.append(f"{url} {miss}")
    except TimeoutError:
        misses.append(f"no answer within {TIMEOUT_S:g} s")
    except aiohttp.ClientConnectorError as exc:  # the issuer's host, the same for every place
        misses.append(f"{url}: cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})")
    except aiohttp.ClientError as exc:
        misses.append(f"{url}: {exc or type(exc).__name__}")
    return IssuerMetadata(problem="; ".join(misses))


async def _body(answer: aiohttp.ClientResponse) -> bytes | None:
    """The answer's body, whole (however it arrives); None when it is larger than _MAX_DOCUMENT."""
    if answer.content_length is not None and answer.content_length > _MAX_DOCUMENT:
        return None
    body = bytearray()
    async for piece in answer.content.iter_chunked(1 << 16):
        body += piece
        if len(body) > _MAX_DOCUMENT:
            return None
    return bytes(body)


def _jwks_uri(body: bytes, issuer: str) -> tuple[str, str]:
    """The document's jwks_uri, or "" and why it has none usable."""
    try:
        document = json.loads(body)
    except ValueError:
        return "", "is not JSON"
    if not isinstance(document, dict):
        return "", "is not a JSON object"
    named = document.get("issuer")
    if not isinstance(named, str) or not _same_issuer(named, issuer):
        # RFC 8414 section 3.3: metadata naming another issuer must not be used.
        return "", f"names issuer {named!r}, not {issuer}"
    uri = document.get("jwks_uri")
    if not isinstance(uri, str):
        return "", "names no jwks_uri"
    try:
        return kinds.http_url(uri), ""
    except ValueError as exc:
        return "", f"names a jwks_uri Envoy cannot fetch: {exc}"


def _same_issuer(named: str, configured: str) -> bool:
    """The same issuer: equal, or both the host's root, one with a trailing slash and one without."""
    if named == configured:
        return True
    root = urllib.parse.urlsplit(configured).path in ("", "/")
    return root and named.rstrip("/") == configured.rstrip("/")


def new_session() -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S), trust_env=True, cookie_jar=aiohttp.DummyCookieJar()
    )


async def fetch_all(issuers: Iterable[str]) -> dict[str, IssuerMetadata]:
    """Each issuer's metadata, fetched once (validate and translate, which serve nothing)."""
    async with new_session() as session:
        wanted = sorted(issuers)
        return dict(zip(wanted, await asyncio.gather(*(fetch(session, i) for i in wanted)), strict=True))


class IssuerDiscovery:
    """The serving control plane's: `want(resources)` starts fetching the metadata of each issuer
    it has not asked yet; `known` holds what was learnt, by issuer (absent: not answered yet);
    `on_learnt` is awaited whenever that changes (the control plane compiles again)."""

    def __init__(
        self,
        on_learnt: Callable[[], Awaitable[None]],
        first_retry_s: float = FIRST_RETRY_S,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._on_learnt = on_learnt
        self._first_retry_s = first_retry_s
        self._refresh_s = refresh_s
        self._known: dict[str, IssuerMetadata] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._answered: dict[str, asyncio.Event] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def known(self) -> Mapping[str, IssuerMetadata]:
        return self._known

    def want(self, resources: ResourceSet) -> None:
        """Fetch the metadata of the issuers `resources` need that were not asked yet; stop asking
        for those no route needs any more."""
        wanted = issuers_to_discover(resources)
        for issuer in wanted - self._tasks.keys():
            self._answered[issuer] = asyncio.Event()
            self._tasks[issuer] = asyncio.create_task(self._follow(issuer), name=f"issuer-metadata {issuer}")
        for issuer in self._tasks.keys() - wanted:
            self._tasks.pop(issuer).cancel()
            self._answered.pop(issuer, None)
            if not self._known.get(issuer, IssuerMetadata()).jwks_uri:
                self._known.pop(issuer, None)

    async def answered(self, timeout: float) -> None:
        """Returns once every issuer wanted has answered (or failed) once, or after `timeout`."""
        waits = [asyncio.ensure_future(e.wait()) for e in self._answered.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout)
            for wait in pending:
                wait.cancel()

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _follow(self, issuer: str) -> None:
        """Asks the issuer until it answers, then every REFRESH_S; a failure never replaces a
        jwks_uri learnt before (the route stays served with it)."""
        pause = self._first_retry_s
        while True:
            if self._session is None:
                self._session = new_session()
            learnt = await fetch(self._session, issuer)
            before = self._known.get(issuer)
            kept = not learnt.jwks_uri and before is not None and bool(before.jwks_uri)
            if learnt.jwks_uri:
                log.info("issuer_metadata_learnt", issuer=issuer, jwks_uri=learnt.jwks_uri)
            else:
                log.warning(
                    "issuer_metadata_unavailable",
                    issuer=issuer,
                    problem=learnt.problem,
                    retry_in_s=pause,
                    **({"keeping": before.jwks_uri} if kept and before is not None else {}),
                )
            if not kept:
                self._known[issuer] = learnt
            if issuer in self._answered:
                self._answered[issuer].set()
            if not kept and before != learnt:
                try:
                    await self._on_learnt()
                except Exception:  # a bug of the caller's: said, and the issuer still followed
                    log.exception("issuer_metadata_not_applied", issuer=issuer)
            if learnt.jwks_uri:
                pause = self._first_retry_s
                await asyncio.sleep(self._refresh_s)
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, LAST_RETRY_S)
