"""A stand-in for AWS STS's AssumeRoleWithWebIdentity (not AWS): the query protocol's form POST (or GET)
to ``/`` with ``Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=...&RoleSessionName=...
&WebIdentityToken=...[&DurationSeconds=N]``, unsigned as STS takes it, answered with STS's XML:

    <AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
      <AssumeRoleWithWebIdentityResult>
        <Credentials><AccessKeyId>ASIA...</AccessKeyId><SecretAccessKey>...</SecretAccessKey>
          <SessionToken>...</SessionToken><Expiration>2026-01-01T00:00:00Z</Expiration></Credentials>
        <SubjectFromWebIdentityToken>...</SubjectFromWebIdentityToken><AssumedRoleUser>...</AssumedRoleUser>
        <Provider>...</Provider><Audience>...</Audience>
      </AssumeRoleWithWebIdentityResult>
      <ResponseMetadata><RequestId>...</RequestId></ResponseMetadata>
    </AssumeRoleWithWebIdentityResponse>

The web identity token is checked with ``verify(token, audience)`` (``OIDCIssuerFake.verify``: signature,
issuer, expiry, audience; the audience is the IAM OIDC provider's client id, ``audience=``), and the
role's trust with ``roles`` (role ARN -> the token subject it trusts, None for any). Errors are STS's
``<ErrorResponse><Error><Type>Sender</Type><Code>..</Code><Message>..</Message></Error><RequestId>..``:

* expired token → 400 ``ExpiredTokenException``; bad signature, foreign issuer or wrong audience →
  400 ``InvalidIdentityToken``;
* a role it does not know, or whose trust does not name the token's subject → 403 ``AccessDenied``;
* a missing parameter, a session name outside ``[\\w+=,.@-]{2,64}`` or DurationSeconds outside
  900..43200 → 400 ``ValidationError``; another action → 400 ``InvalidAction``;
* injected statuses (``x-fake-status``, ``fail_next``, ``always_fail``) → ``ServiceUnavailable`` (503),
  ``InternalFailure`` (other 5xx), ``Throttling`` (429, sent as 400 as STS does), ``ValidationError``.

Issued credentials live ``credential_lifetime_s`` seconds (settable; shorter than STS's 900-second
minimum so tests can rotate, whatever DurationSeconds asked), their expiry truncated to whole seconds
as the XML carries it. Each is handed to every fake in ``accept`` (``BedrockFake.accept_credentials``),
which then accepts requests signed with it until it expires. ``fake.issued`` lists them in order.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from xml.sax.saxutils import escape

import jwt
from aiohttp import web

from .common import RAW_BODY, FakeProvider

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
VERSION = "2011-06-15"
DEFAULT_AUDIENCE = "sts.amazonaws.com"
TEST_ROLE_ARN = "arn:aws:iam::123456789012:role/aigw-bedrock"
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
_ACCOUNT_ROLE = re.compile(r"^arn:aws[\w-]*:iam::(\d{12}):role/(?:.*/)?([\w+=,.@-]{1,64})$")


class AcceptsCredentials(Protocol):
    def accept_credentials(
        self, access_key_id: str, secret_access_key: str, session_token: str, expires_at: float
    ) -> None: ...


@dataclass(frozen=True)
class IssuedCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at: float  # time.time()
    role_arn: str
    session_name: str
    subject: str


class STSError(Exception):
    def __init__(self, status: int, code: str, message: str, kind: str = "Sender") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.kind = status, code, message, kind


class AWSSTSFake(FakeProvider):
    provider = "sts"

    def __init__(
        self,
        verify: Callable[[str, str], Mapping[str, Any]],
        *,
        roles: Mapping[str, str | None] | None = None,
        audience: str = DEFAULT_AUDIENCE,
        credential_lifetime_s: float = 3600,
        accept: Iterable[AcceptsCredentials] = (),
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self.verify = verify
        self.roles: dict[str, str | None] = dict(roles) if roles is not None else {TEST_ROLE_ARN: None}
        self.audience = audience
        self.credential_lifetime_s = credential_lifetime_s
        self.accept = list(accept)
        self.issued: list[IssuedCredentials] = []
        self._issued_lock = threading.Lock()

    @property
    def url(self) -> str:
        """The endpoint for an AWS SDK (``AWS_ENDPOINT_URL_STS``, ``endpoint_url=``)."""
        return self.base_url

    # ---- errors ------------------------------------------------------------------------------
    @staticmethod
    def sts_error(error: STSError) -> web.Response:
        body = (
            f'<ErrorResponse xmlns="{NAMESPACE}">\n  <Error>\n    <Type>{error.kind}</Type>\n'
            f"    <Code>{escape(error.code)}</Code>\n    <Message>{escape(error.message)}</Message>\n  </Error>\n"
            f"  <RequestId>{uuid.uuid4()}</RequestId>\n</ErrorResponse>\n"
        )
        return web.Response(status=error.status, text=body, content_type="text/xml")

    def error_response(self, status: int, message: str | None = None, **kw: Any) -> web.Response:
        if status == 503:
            error = STSError(503, "ServiceUnavailable", message or "Service is unable to handle request.", "Receiver")
        elif status >= 500:
            error = STSError(status, "InternalFailure", message or "An internal error occurred.", "Receiver")
        elif status == 429:
            error = STSError(400, "Throttling", message or "Rate exceeded")
        else:
            error = STSError(status, "ValidationError", message or "Injected error (by the fake).")
        return self.sts_error(error)

    def not_found_response(self, request: web.Request) -> web.Response:
        return self.sts_error(STSError(404, "UnknownOperationException", "Unknown operation"))

    def response_headers(self, request: web.Request) -> dict[str, str]:
        return {"x-amzn-RequestId": str(uuid.uuid4())}

    # ---- routes ------------------------------------------------------------------------------
    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/", self._action)
        app.router.add_route("GET", "/", self._action)

    async def _action(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            raw = request[RAW_BODY].decode("utf-8", "replace")
            params.update({k: v[-1] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()})
        try:
            if params.get("Action") != "AssumeRoleWithWebIdentity":
                action = params.get("Action")
                raise STSError(400, "InvalidAction", f"Could not find operation {action} for version {VERSION}")
            if params.get("Version") != VERSION:
                raise STSError(400, "InvalidAction", f"Could not find operation for version {params.get('Version')}")
            return self._assume(params)
        except STSError as exc:
            return self.sts_error(exc)

    def _assume(self, params: Mapping[str, str]) -> web.Response:
        for field in ("RoleArn", "RoleSessionName", "WebIdentityToken"):
            if not params.get(field):
                name = field[0].lower() + field[1:]
                raise STSError(
                    400,
                    "ValidationError",
                    f"1 validation error detected: Value null at '{name}' failed to satisfy constraint: "
                    "Member must not be null",
                )
        role_arn, session, token = params["RoleArn"], params["RoleSessionName"], params["WebIdentityToken"]
        if not _SESSION_NAME.match(session):
            raise STSError(
                400,
                "ValidationError",
                f"1 validation error detected: Value '{session}' at 'roleSessionName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*",
            )
        if "DurationSeconds" in params:
            duration = params["DurationSeconds"]
            if not duration.isdigit() or not 900 <= int(duration) <= 43200:
                raise STSError(
                    400,
                    "ValidationError",
                    f"1 validation error detected: Value '{duration}' at 'durationSeconds' failed to satisfy "
                    "constraint: Member must have value between 900 and 43200",
                )
        claims = self._claims(token)
        subject = str(claims.get("sub", ""))
        if role_arn not in self.roles or self.roles[role_arn] not in (None, subject):
            raise STSError(403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
        issued = self._issue(role_arn, session, subject)
        return web.Response(text=self._answer(issued, claims), content_type="text/xml")

    def _claims(self, token: str) -> Mapping[str, Any]:
        try:
            return self.verify(token, self.audience)
        except jwt.ExpiredSignatureError:
            raise STSError(
                400,
                "ExpiredTokenException",
                "Token expired: current date/time must be before the expiration date/time.",
            ) from None
        except jwt.InvalidAudienceError:
            raise STSError(400, "InvalidIdentityToken", "Incorrect token audience") from None
        except jwt.InvalidTokenError:
            raise STSError(
                400,
                "InvalidIdentityToken",
                "The web identity token that was passed could not be validated by AWS. Get a new identity token "
                "from the identity provider and then retry the request.",
            ) from None

    def _issue(self, role_arn: str, session: str, subject: str) -> IssuedCredentials:
        alphabet = string.ascii_uppercase + string.digits
        issued = IssuedCredentials(
            access_key_id="ASIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
            secret_access_key=secrets.token_urlsafe(30)[:40],
            session_token="FwoGZXIvYXdzE" + secrets.token_urlsafe(96),
            expires_at=float(int(time.time() + self.credential_lifetime_s)),  # whole seconds, as the XML says
            role_arn=role_arn,
            session_name=session,
            subject=subject,
        )
        with self._issued_lock:
            self.issued.append(issued)
        for target in self.accept:
            target.accept_credentials(
                issued.access_key_id, issued.secret_access_key, issued.session_token, issued.expires_at
            )
        return issued

    @staticmethod
    def _answer(issued: IssuedCredentials, claims: Mapping[str, Any]) -> str:
        expiration = dt.datetime.fromtimestamp(issued.expires_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        match = _ACCOUNT_ROLE.match(issued.role_arn)
        account, role = (match.group(1), match.group(2)) if match else ("123456789012", "role")
        audience = claims.get("aud")
        audience = audience[0] if isinstance(audience, list) and audience else audience
        provider = urllib.parse.urlsplit(str(claims.get("iss", ""))).netloc
        return (
            f'<AssumeRoleWithWebIdentityResponse xmlns="{NAMESPACE}">\n'
            "  <AssumeRoleWithWebIdentityResult>\n"
            f"    <SubjectFromWebIdentityToken>{escape(issued.subject)}</SubjectFromWebIdentityToken>\n"
            f"    <Audience>{escape(str(audience or ''))}</Audience>\n"
            "    <AssumedRoleUser>\n"
            f"      <Arn>arn:aws:sts::{account}:assumed-role/{escape(role)}/{escape(issued.session_name)}</Arn>\n"
            f"      <AssumedRoleId>AROA{account}EXAMPLE:{escape(issued.session_name)}</AssumedRoleId>\n"
            "    </AssumedRoleUser>\n"
            "    <Credentials>\n"
            f"      <SessionToken>{issued.session_token}</SessionToken>\n"
            f"      <SecretAccessKey>{issued.secret_access_key}</SecretAccessKey>\n"
            f"      <Expiration>{expiration}</Expiration>\n"
            f"      <AccessKeyId>{issued.access_key_id}</AccessKeyId>\n"
            "    </Credentials>\n"
            f"    <Provider>{escape(provider)}</Provider>\n"
            "  </AssumeRoleWithWebIdentityResult>\n"
            f"  <ResponseMetadata>\n    <RequestId>{uuid.uuid4()}</RequestId>\n  </ResponseMetadata>\n"
            "</AssumeRoleWithWebIdentityResponse>\n"
        )
