"""AWS Signature Version 4 for Bedrock backends (botocore): the credentials of a policy's
AWSCredentials (a profile of its credentials file, temporary credentials of a role assumed with an
OIDC token, or the default chain of the translator's environment), and the signature over the
request exactly as the backend gets it: the final path, the final body, and the host of the
backend's configuration (never a header the client sent).

OIDC token exchange (the policy's oidcExchangeToken): an OIDC token from oidc.token is exchanged with
STS AssumeRoleWithWebIdentity (an unsigned call) for temporary credentials of the policy's role, in
the policy's region's STS endpoint, with a deterministic session name (``aigw-<hash of the role,
issuer and client>``, the same for every backend of the policy). The endpoint is AWS's unless the
translator's environment names another the standard way (``AWS_ENDPOINT_URL_STS``, else
``AWS_ENDPOINT_URL``; botocore reads both). The credentials are cached and refreshed in the
background by token_cache (5 minutes before they expire, or at 80% of a shorter lifetime), each
refresh with a current OIDC token; a failure is one ``aws_credentials_unavailable`` line per outage
naming the backend and the role, and a 503 in the client's schema.

Default chain (neither a credentials file nor OIDC): botocore's chain of the translator's environment
(variables, shared files, IRSA web identity, container and instance roles) is resolved and its
credentials frozen by a fetch of the same cache (on a worker thread, never on the event loop: IMDS,
the container endpoint or STS may answer slowly), one value for every such backend. Temporary
credentials are fetched anew before their expiry as botocore reports it; static ones are looked for
again every ``STATIC_RECHECK_S``. A chain that finds none is one ``aws_credentials_unavailable``
line per outage naming the backend and the policy, and a 503; the cache retries in the background, so
a chain that appears later (a role's token file mounted, an endpoint ready) is found without a
restart.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import os
import re
import threading
from functools import lru_cache, partial
from typing import Any

from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import Session

from aigw.translator.v1 import config_pb2

from . import oidc, token_cache
from .errors import CredentialsUnavailable
from .logs import get_logger

log = get_logger(__name__)

SERVICE = "bedrock"
_REGION_IN_HOST = re.compile(r"^bedrock(?:-runtime)?(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def region_of(aws: config_pb2.AWSCredentials, host: str) -> str:
    """The policy's region, else the one in a Bedrock endpoint's host name."""
    if aws.region:
        return aws.region
    match = _REGION_IN_HOST.match(host.split(":", 1)[0].lower())
    return match.group(1) if match else ""


@lru_cache(maxsize=64)
def _from_file(text: str, profile: str) -> Credentials | None:
    """A profile of an AWS credentials file's text (the `credentials` key of the policy's Secret)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error:
        return None
    name = profile or "default"
    for section in (name, f"profile {name}"):
        if parser.has_section(section):
            values = parser[section]
            key, secret = values.get("aws_access_key_id"), values.get("aws_secret_access_key")
            if key and secret:
                return Credentials(key.strip(), secret.strip(), (values.get("aws_session_token") or "").strip() or None)
    return None


# ---- OIDC token exchange (STS AssumeRoleWithWebIdentity) -----------------------------------------

STS_TIMEOUT = 5.0
CREDENTIALS = "AWS credentials"

_sts_lock = threading.Lock()
_sts_clients: dict[tuple[str, str, str], Any] = {}


def _sts(region: str) -> Any:
    """An unsigned STS client of `region` (one per region and endpoint override: botocore reads
    AWS_ENDPOINT_URL_STS / AWS_ENDPOINT_URL when the client is made)."""
    key = (region, os.environ.get("AWS_ENDPOINT_URL_STS", ""), os.environ.get("AWS_ENDPOINT_URL", ""))
    with _sts_lock:
        client = _sts_clients.get(key)
        if client is None:
            session = Session()
            config = Config(
                signature_version=UNSIGNED,
                connect_timeout=STS_TIMEOUT,
                read_timeout=STS_TIMEOUT,
                retries={"total_max_attempts": 2, "mode": "standard"},
            )
            client = _sts_clients[key] = session.create_client("sts", region_name=region, config=config)
        return client


def session_name(aws: config_pb2.AWSCredentials) -> str:
    """The role session name: the same for every backend of a policy, and from one run to the next
    (CloudTrail shows it)."""
    digest = hashlib.sha256("\x1f".join((aws.role_arn, aws.oidc.issuer, aws.oidc.client_id)).encode()).hexdigest()
    return f"aigw-{digest[:16]}"


def assume_role_with_web_identity(backend: str, aws: config_pb2.AWSCredentials) -> tuple[ReadOnlyCredentials, float]:
    """Temporary credentials of the policy's role for a current OIDC token (blocking): (credentials,
    lifetime in seconds)."""
    if not aws.role_arn:
        raise token_cache.FetchError("the policy has no awsRoleArn to assume")
    if not aws.region:
        raise token_cache.FetchError("the policy has no region for STS")
    try:
        web_identity = oidc.token(backend, aws.oidc)
    except CredentialsUnavailable as exc:
        raise token_cache.FetchError(f"no OIDC token for STS ({exc.reason})") from None
    try:
        answer = _sts(aws.region).assume_role_with_web_identity(
            RoleArn=aws.role_arn, RoleSessionName=session_name(aws), WebIdentityToken=web_identity
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "error"), str(error.get("Message", ""))[:200]
        raise token_cache.FetchError(f"STS AssumeRoleWithWebIdentity refused: {code}: {message}") from None
    except (BotoCoreError, OSError) as exc:
        raise token_cache.FetchError(f"STS unreachable: {type(exc).__name__}") from None
    found = answer.get("Credentials") or {}
    expiration = found.get("Expiration")
    if not found.get("AccessKeyId") or not found.get("SecretAccessKey") or not isinstance(expiration, dt.datetime):
        raise token_cache.FetchError("STS answered no credentials")
    lifetime = (expiration - dt.datetime.now(dt.UTC)).total_seconds()
    frozen = ReadOnlyCredentials(found["AccessKeyId"], found["SecretAccessKey"], found.get("SessionToken"))
    return frozen, lifetime


# Assumed roles (by role and OIDC client) and the default chain (DEFAULT_CHAIN_KEY).
_cache: token_cache.TokenCache[tuple[str, ...], ReadOnlyCredentials] = token_cache.TokenCache(
    credential=CREDENTIALS, event="aws_credentials", short_lifetime_fraction=0.2
)


def _assumed_role(backend: str, aws: config_pb2.AWSCredentials) -> ReadOnlyCredentials:
    key = (aws.region, aws.role_arn, *oidc.cache_key(aws.oidc))
    return _cache.get(
        backend,
        key,
        partial(assume_role_with_web_identity, backend, aws),
        names={"policy": aws.policy, "role_arn": aws.role_arn},
        secrets=(aws.oidc.client_secret,),
    )


# ---- the default chain of the translator's environment -------------------------------------------

# Static credentials of the chain (variables, shared files) are looked for again this often: a chain
# that changed (a rotated shared file) is found without a restart.
STATIC_RECHECK_S = 3600.0
DEFAULT_CHAIN_KEY = ("default credential chain",)


def resolve_default_chain() -> tuple[ReadOnlyCredentials, float]:
    """The default chain's credentials, frozen (blocking: a container or instance role, or IRSA's
    STS call, is asked now), and how long they are good for: until the expiry botocore reports for
    temporary credentials, STATIC_RECHECK_S for static ones."""
    try:
        found = Session().get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None
    except (BotoCoreError, ClientError, OSError) as exc:
        # botocore names the provider and what went wrong (never a key): the outage line says why.
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise token_cache.FetchError(f"the default credential chain failed: {reason}") from None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise token_cache.FetchError("the default credential chain found none")
    # RefreshableCredentials (and DeferredRefreshableCredentials, once frozen) keep their expiry
    # here; botocore has no public accessor for it.
    expiry = getattr(found, "_expiry_time", None)
    if isinstance(expiry, dt.datetime) and expiry.tzinfo is not None:
        return frozen, (expiry - dt.datetime.now(dt.UTC)).total_seconds()
    return frozen, STATIC_RECHECK_S


def _default_chain(backend: str, aws: config_pb2.AWSCredentials) -> ReadOnlyCredentials:
    return _cache.get(backend, DEFAULT_CHAIN_KEY, resolve_default_chain, names={"policy": aws.policy})


# ---- a policy's credentials -----------------------------------------------------------------------


def uses_oidc(aws: config_pb2.AWSCredentials) -> bool:
    return aws.HasField("oidc")


def fetched(aws: config_pb2.AWSCredentials) -> bool:
    """Whether the policy's credentials are fetched (an assumed role, the default chain) rather than
    read from its credentials file."""
    return uses_oidc(aws) or not aws.credentials_file


def credentials(backend: str, aws: config_pb2.AWSCredentials) -> ReadOnlyCredentials:
    if uses_oidc(aws):
        return _assumed_role(backend, aws)  # logged by token_cache, one line per outage
    if aws.credentials_file:
        found = _from_file(aws.credentials_file, aws.profile)
        if found is None:
            raise _unavailable(
                backend, aws, f"profile {aws.profile or 'default'!r} of the credentials file has no keys"
            )
        frozen = found.get_frozen_credentials()
    else:
        frozen = _default_chain(backend, aws)  # an outage is logged by token_cache, like OIDC's
    if _outages.pop(backend, None) is not None:
        log.info("aws_credentials_available", backend=backend)
    return frozen


# What token_cache.prefetch does for AWS as a configuration arrives: assume the roles of every OIDC
# AWSCredentials backend, and resolve the default chain for those that use it, in the background,
# so that a first request rarely waits for them.
PREFETCH: dict[str, token_cache.Prefetch] = {"aws_credentials": (credentials, fetched)}


# Backend -> the reason its credentials are unavailable, while they are: one log line per outage.
_outages: dict[str, str] = {}


def _unavailable(backend: str, aws: config_pb2.AWSCredentials, reason: str) -> CredentialsUnavailable:
    if _outages.get(backend) != reason:
        _outages[backend] = reason
        log.error("aws_credentials_unavailable", backend=backend, policy=aws.policy, reason=reason)
    return CredentialsUnavailable(backend, CREDENTIALS, reason)


def sign(backend: str, aws: config_pb2.AWSCredentials, host: str, path: str, body: bytes) -> dict[str, str]:
    """The headers that sign a POST of `body` to `host` + `path` (query included) for Bedrock:
    authorization, x-amz-date and, for temporary credentials, x-amz-security-token. Only the host
    and those headers are signed, so nothing else a client or Envoy sends can break the signature."""
    region = region_of(aws, host)
    if not region:
        raise _unavailable(backend, aws, f"no region in the policy and none in the host {host!r}")
    frozen = credentials(backend, aws)
    request = AWSRequest(method="POST", url=f"https://{host}{path}", data=body, headers={"host": host})
    SigV4Auth(Credentials(frozen.access_key, frozen.secret_key, frozen.token), SERVICE, region).add_auth(request)
    signed = {"authorization": request.headers["Authorization"], "x-amz-date": request.headers["X-Amz-Date"]}
    if frozen.token:
        signed["x-amz-security-token"] = frozen.token
    return signed


def reset() -> None:
    """Forget fetched credentials (assumed roles, the default chain) and STS clients (tests that
    change the STS endpoint or the environment)."""
    _cache.forget()
    with _sts_lock:
        _sts_clients.clear()
