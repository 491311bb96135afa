"""AWS Signature Version 4 for Bedrock backends (botocore): the credentials of a policy's
AWSCredentials (a profile of its credentials file, or the default chain of the translator's
environment), and the signature over the request exactly as the backend gets it: the final path,
the final body, and the host of the backend's configuration (never a header the client sent).
"""

from __future__ import annotations

import configparser
import re
import threading
import time
from functools import lru_cache

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.session import Session

from aigw.translator.v1 import config_pb2

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


_chain_lock = threading.Lock()
_chain: list[Credentials | None] = []


def _default_chain() -> Credentials | None:
    """The default chain of the translator's environment (variables, shared files, container and
    instance roles), resolved once found (looked for again until then: a role's endpoint or token
    file may not be ready at the first request); botocore refreshes temporary credentials before
    they expire."""
    with _chain_lock:
        if not _chain:
            found = Session().get_credentials()
            if found is None:
                return None
            _chain.append(found)
            if hasattr(found, "refresh_needed"):  # temporary credentials (a role, STS, SSO)
                threading.Thread(target=_keep_fresh, args=(found,), name="aws-credentials", daemon=True).start()
        return _chain[0]


# How often the background thread lets botocore refresh temporary credentials: well inside
# botocore's advisory window (15 minutes before expiry), so a request rarely waits for STS.
REFRESH_CHECK_S = 60.0


def _keep_fresh(credentials: Credentials) -> None:
    """Refreshes temporary credentials off the translator's event loop: botocore refreshes them
    inline when a request finds them near expiry, which would stall every stream meanwhile. A
    failing refresh is logged once until one succeeds (requests report their own outage)."""
    failing = False
    while True:
        time.sleep(REFRESH_CHECK_S)
        try:
            credentials.get_frozen_credentials()
        except Exception as exc:
            if not failing:
                log.warning("aws_credentials_refresh_failed", error=type(exc).__name__)
            failing = True
        else:
            failing = False


def credentials(backend: str, aws: config_pb2.AWSCredentials) -> ReadOnlyCredentials:
    if aws.credentials_file:
        found = _from_file(aws.credentials_file, aws.profile)
        if found is None:
            raise _unavailable(backend, f"profile {aws.profile or 'default'!r} of the credentials file has no keys")
        frozen = found.get_frozen_credentials()
    else:
        chain = _default_chain()
        frozen = chain.get_frozen_credentials() if chain is not None else None
        if frozen is None or not frozen.access_key:
            raise _unavailable(backend, "the default credential chain found none")
    if _outages.pop(backend, None) is not None:
        log.info("aws_credentials_available", backend=backend)
    return frozen


# Backend -> the reason its credentials are unavailable, while they are: one log line per outage.
_outages: dict[str, str] = {}


def _unavailable(backend: str, reason: str) -> CredentialsUnavailable:
    if _outages.get(backend) != reason:
        _outages[backend] = reason
        log.error("aws_credentials_unavailable", backend=backend, reason=reason)
    return CredentialsUnavailable(backend, "AWS credentials", reason)


def sign(backend: str, aws: config_pb2.AWSCredentials, host: str, path: str, body: bytes) -> dict[str, str]:
    """The headers that sign a POST of `body` to `host` + `path` (query included) for Bedrock:
    authorization, x-amz-date and, for temporary credentials, x-amz-security-token. Only the host
    and those headers are signed, so nothing else a client or Envoy sends can break the signature."""
    region = region_of(aws, host)
    if not region:
        raise _unavailable(backend, f"no region in the policy and none in the host {host!r}")
    frozen = credentials(backend, aws)
    request = AWSRequest(method="POST", url=f"https://{host}{path}", data=body, headers={"host": host})
    SigV4Auth(Credentials(frozen.access_key, frozen.secret_key, frozen.token), SERVICE, region).add_auth(request)
    signed = {"authorization": request.headers["Authorization"], "x-amz-date": request.headers["X-Amz-Date"]}
    if frozen.token:
        signed["x-amz-security-token"] = frozen.token
    return signed
