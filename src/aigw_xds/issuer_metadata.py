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

and for one without, the two documents at the host's root. An answer in the 4xx range, or a
document without a jwks_uri (optional in RFC 8414), moves on to the next; the first JSON document
naming an http(s) jwks_uri wins. A 5xx, a timeout or a refused connection stops there: the issuer
is asked again after a pause growing from 5 s to 5 minutes. A jwks_uri once learnt is kept for the
life of the process (Envoy fetches the keys from it, and again as they rotate). Requests honour
HTTPS_PROXY and NO_PROXY.
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
TIMEOUT_S = 10.0
FIRST_RETRY_S = 5.0
LAST_RETRY_S = 300.0
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
    """The issuer's jwks_uri from its metadata, or why it could not be had."""
    import aiohttp

    misses = []
    for url in metadata_urls(issuer):
        try:
            async with session.get(url, headers={"accept": "application/json"}) as answer:
                if 400 <= answer.status < 500:
                    misses.append(f"{url} answered {answer.status}")
                    continue
                if answer.status != 200:
                    return IssuerMetadata(problem=f"{url} answered {answer.status}")
                body = await answer.content.read(_MAX_DOCUMENT + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return IssuerMetadata(problem=f"{url}: {_described(exc)}")
        jwks_uri = _jwks_uri(body)
        if jwks_uri is None:
            misses.append(f"{url} names no http(s) jwks_uri")
            continue
        return IssuerMetadata(jwks_uri=jwks_uri)
    return IssuerMetadata(problem="; ".join(misses))


def _jwks_uri(body: bytes) -> str | None:
    if len(body) > _MAX_DOCUMENT:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(uri, str):
        return None
    parts = urllib.parse.urlsplit(uri)
    return uri if parts.scheme in ("http", "https") and parts.netloc else None


def _described(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_S:g} s"
    return str(exc) or type(exc).__name__


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
        fetcher: Callable[[aiohttp.ClientSession, str], Awaitable[IssuerMetadata]] = fetch,
    ) -> None:
        self._on_learnt = on_learnt
        self._first_retry_s = first_retry_s
        self._fetch = fetcher
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
        pause = self._first_retry_s
        while True:
            if self._session is None:
                self._session = new_session()
            learnt = await self._fetch(self._session, issuer)
            changed = self._known.get(issuer) != learnt
            self._known[issuer] = learnt
            if learnt.jwks_uri:
                log.info("issuer_metadata_learnt", issuer=issuer, jwks_uri=learnt.jwks_uri)
            else:
                log.warning("issuer_metadata_unavailable", issuer=issuer, problem=learnt.problem, retry_in_s=pause)
            if issuer in self._answered:
                self._answered[issuer].set()
            if changed:
                try:
                    await self._on_learnt()
                except Exception:  # a bug of the caller's: said, and the issuer still followed
                    log.exception("issuer_metadata_not_applied", issuer=issuer)
            if learnt.jwks_uri:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 3, LAST_RETRY_S)
