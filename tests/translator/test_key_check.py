"""The translator's Authorization service for a SecurityPolicy's apiKeyAuth (key_check.py): Envoy's
ext_authz names the policies a request's route asks for; the answer lets the request by with its
client's id, or refuses it in the client's API shape. Table tests of the pure verdict, and the
service on a stream's fleet."""

from __future__ import annotations

import base64
import hashlib
import json

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from google.rpc import code_pb2

import aigw_contract as contract
from aigw.translator.v1 import config_pb2
from aigw_translator.client_keys import ClientKeys
from aigw_translator.config import RuntimeConfig
from aigw_translator.key_check import KeyCheck, verdict


def _keys(client_id_header: str = "x-client-id", **sources: str) -> ClientKeys:
    return ClientKeys(
        config_pb2.MCPClientKeys(
            keys=[
                config_pb2.MCPClientKey(client_id="alice", key="key-of-alice"),
                config_pb2.MCPClientKey(client_id="bob", key="key-of-bob"),
            ],
            sources=[config_pb2.MCPKeySource(**{kind: name}) for kind, name in sources.items()]
            or [config_pb2.MCPKeySource(header="authorization")],
            client_id_header=client_id_header,
        )
    )


POLICIES = {"ns/team": _keys(), "ns/partners": _keys(header="x-partner-key", client_id_header="")}


def test_a_key_of_the_policy_lets_the_request_by_with_its_client_and_without_the_key() -> None:
    answer = verdict(POLICIES, ["ns/team"], False, {"authorization": "Bearer key-of-bob"}, "/v1/chat/completions")
    assert answer.status.code == code_pb2.OK
    ok = answer.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [("x-client-id", "bob")]
    assert list(ok.headers_to_remove) == ["authorization"]
    assert dict(answer.dynamic_metadata) == {"aigw.client_key/ns/team": "bob"}


def test_a_key_of_any_policy_named_is_taken_and_every_source_of_theirs_removed() -> None:
    headers = {"authorization": "Bearer sk-provider-style", "x-partner-key": "key-of-alice"}
    answer = verdict(POLICIES, ["ns/team", "ns/partners"], False, headers, "/v1/chat/completions")
    assert dict(answer.dynamic_metadata) == {"aigw.client_key/ns/partners": "alice"}
    assert not answer.ok_response.headers  # (that policy forwards no client id)
    assert list(answer.ok_response.headers_to_remove) == ["authorization", "x-partner-key"]


def test_a_key_two_policies_take_is_recorded_for_both() -> None:
    """From an expert review: one Secret serving the Gateway's policy and a route's; a key recorded
    for the first only was refused on the route the router phase chose."""
    both = {"ns/gateway": _keys(), "ns/route": _keys(client_id_header="x-route-client")}
    answer = verdict(both, ["ns/gateway", "ns/route"], True, {"authorization": "Bearer key-of-alice"}, "/v1/models")
    assert dict(answer.dynamic_metadata) == {"aigw.client_key/ns/gateway": "alice", "aigw.client_key/ns/route": "alice"}
    assert {(h.header.key, h.header.value) for h in answer.ok_response.headers} == {
        ("x-client-id", "alice"),
        ("x-route-client", "alice"),
    }


@pytest.mark.parametrize(("path", "anthropic"), [("/v1/chat/completions", False), ("/anthropic/v1/messages", True)])
def test_no_key_or_another_is_a_401_in_the_clients_api_shape(path: str, anthropic: bool) -> None:
    for headers in ({}, {"authorization": "Bearer key-of-mallory"}, {"authorization": "key-of-alice, key-of-bob"}):
        answer = verdict(POLICIES, ["ns/team"], False, headers, path)
        assert answer.status.code == code_pb2.UNAUTHENTICATED and not answer.HasField("ok_response")
        assert answer.denied_response.status.code == 401
        body = json.loads(answer.denied_response.body)
        assert body["error"]["type"] == "authentication_error"
        assert body["error"]["message"] == "a valid API key is required"
        assert (body.get("type") == "error") == anthropic  # (Anthropic's shape, else OpenAI's)


def test_optional_lets_a_request_without_a_key_by_without_a_client() -> None:
    answer = verdict(POLICIES, ["ns/team"], True, {"authorization": "Bearer sk-not-ours"}, "/v1/audio/translations")
    assert answer.status.code == code_pb2.OK
    assert not answer.ok_response.headers and not answer.dynamic_metadata.fields
    assert list(answer.ok_response.headers_to_remove) == ["authorization"]


def test_a_key_in_the_query_is_taken_out_of_it() -> None:
    keys = {"ns/q": _keys(query_param="key")}
    answer = verdict(keys, ["ns/q"], False, {}, "/v1/models?key=key-of-alice&limit=2")
    assert dict(answer.dynamic_metadata) == {"aigw.client_key/ns/q": "alice"}
    assert list(answer.ok_response.query_parameters_to_remove) == ["key"]


def test_a_policy_the_configuration_does_not_hold_takes_no_key() -> None:
    """A configuration not here yet (or another fleet's): refused, never let by."""
    answer = verdict(POLICIES, ["ns/unknown"], False, {"authorization": "Bearer key-of-alice"}, "/v1/models")
    assert answer.status.code == code_pb2.UNAUTHENTICATED


class _Aborted(Exception):
    pass


class _Context:
    """The part of a grpc.aio ServicerContext the service uses."""

    def __init__(self, fleet: str) -> None:
        self.fleet = fleet

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((contract.FLEET_METADATA_KEY, self.fleet),)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code)


async def test_the_service_answers_with_the_configuration_of_the_streams_fleet() -> None:
    config = config_pb2.TranslatorConfig(name="ns/gw")
    config.client_key_policies.add(
        policy="ns/team",
        keys=config_pb2.MCPClientKeys(
            keys=[config_pb2.MCPClientKey(client_id="alice", key="key-of-alice")],
            sources=[config_pb2.MCPKeySource(header="x-api-key")],
        ),
    )
    runtimes = {"ns/gw": RuntimeConfig.build(config)}
    service = KeyCheck(lambda context: runtimes.get(context.fleet))
    request = auth_pb2.CheckRequest()
    request.attributes.context_extensions[contract.CLIENT_KEY_POLICIES] = "ns/team"
    request.attributes.request.http.path = "/v1/models"
    request.attributes.request.http.headers["x-api-key"] = "key-of-alice"
    assert (await service.Check(request, _Context("ns/gw"))).status.code == code_pb2.OK
    request.attributes.request.http.headers["x-api-key"] = "key-of-mallory"
    assert (await service.Check(request, _Context("ns/gw"))).status.code == code_pb2.UNAUTHENTICATED
    # A fleet whose configuration is not here: unavailable (Envoy answers 503), not the client's fault.
    with pytest.raises(_Aborted) as aborted:
        await service.Check(request, _Context("ns/other"))
    assert aborted.value.args == (grpc.StatusCode.UNAVAILABLE,)


def _users(client_id_header: str = "x-user") -> ClientKeys:
    """basicAuth's users, as compile reads them from htpasswd ({SHA}: the password's SHA-1)."""
    users = [("alice", "wonderland"), ("bob", "builder:with:colons")]
    return ClientKeys(
        config_pb2.MCPClientKeys(
            basic_users=[
                config_pb2.MCPBasicUser(name=name, password_sha1=hashlib.sha1(password.encode()).digest())
                for name, password in users
            ],
            sources=[config_pb2.MCPKeySource(header="authorization")],
            client_id_header=client_id_header,
        )
    )


def _basic(credentials: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_a_basic_auth_user_with_the_password_is_let_by_with_the_user_s_name_and_without_the_password() -> None:
    users = {"ns/staff": _users()}
    for credentials, user in (("alice:wonderland", "alice"), ("bob:builder:with:colons", "bob")):
        answer = verdict(users, ["ns/staff"], False, _basic(credentials), "/v1/chat/completions")
        assert answer.status.code == code_pb2.OK
        assert [(h.header.key, h.header.value) for h in answer.ok_response.headers] == [("x-user", user)]
        assert list(answer.ok_response.headers_to_remove) == ["authorization"]
        assert dict(answer.dynamic_metadata) == {"aigw.client_key/ns/staff": user}
    lowercase = {"authorization": _basic("alice:wonderland")["authorization"].replace("Basic", "basic")}
    assert verdict(users, ["ns/staff"], False, lowercase, "/v1/models").status.code == code_pb2.OK
    unpadded = {"authorization": _basic("alice:wonderland")["authorization"].rstrip("=")}
    assert unpadded != _basic("alice:wonderland")  # (this one has padding to take off)
    assert verdict(users, ["ns/staff"], False, unpadded, "/v1/models").status.code == code_pb2.OK


@pytest.mark.parametrize(
    "headers",
    [
        {},
        _basic("alice:wrong"),
        _basic("carol:wonderland"),  # (no such user)
        _basic("alice"),  # (no password at all)
        {"authorization": "Basic not-base64!"},
        {"authorization": "Bearer alice:wonderland"},
        {"authorization": "Basic " + base64.b64encode(b"\xff:wonderland").decode()},  # (a name not UTF-8)
    ],
)
def test_a_request_without_a_user_s_password_gets_a_basic_challenge_in_its_client_s_shape(
    headers: dict[str, str],
) -> None:
    answer = verdict({"ns/staff": _users()}, ["ns/staff"], False, headers, "/anthropic/v1/messages")
    assert answer.status.code == code_pb2.UNAUTHENTICATED
    denied = answer.denied_response
    assert denied.status.code == 401
    sent = {h.header.key: h.header.value for h in denied.headers}
    assert sent["www-authenticate"] == 'Basic realm="aigw"'
    body = json.loads(denied.body)
    assert body["type"] == "error" and "user name and password" in body["error"]["message"]
