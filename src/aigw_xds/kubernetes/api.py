"""The API server, reached through the official `kubernetes` client's configuration (in-cluster
service account, or a kubeconfig) and its REST layer, with JSON in and out.

The typed models of the client are not used: the resources we read are custom resources (plain
JSON anyway), decoding every Secret into a model costs memory, and a watch must be read line by
line. Errors become KubeError with the server's Status message, which names what went wrong (e.g.
the missing permission).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError


class KubeError(Exception):
    """An answer other than 2xx (status > 0), or no answer at all (status 0: connection refused,
    timeout, TLS failure)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message or reason)
        self.status = status
        self.reason = reason
        self.message = message or reason


def connect(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient: from `kubeconfig` when given; else in-cluster when running in a pod; else from
    $KUBECONFIG or ~/.kube/config, as kubectl does."""
    configuration = client.Configuration()
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config (no in-cluster service account)"
        raise ValueError(f"cannot use the Kubernetes configuration {where}: {exc}") from None
    # No hidden retries (urllib3's default is three): a request's timeout is the longest it takes,
    # which the leader's renew deadline and a stop's release count on; callers retry themselves.
    configuration.retries = 0
    return client.ApiClient(configuration)


@dataclass
class KubeAPI:
    """JSON requests to one API server."""

    client: client.ApiClient

    @property
    def server(self) -> str:
        return str(self.client.configuration.host)

    def _send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] = 30.0,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        serialized = self.client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,  # the REST layer encodes it as JSON (it matches "json" in the content type)
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(*serialized, _request_timeout=timeout)
        except ApiException as exc:  # TLS failures, as the client reports them
            raise KubeError(0, "Unreachable", str(exc.reason)) from exc
        except (HTTPError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"cannot reach the API server {self.server}: {exc}") from exc
        return response.response

    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        raw = self._send(method, path, query, body, content_type, timeout)
        try:
            data = raw.data
        except (HTTPError, OSError) as exc:
            raise KubeError(0, "Unreachable", f"the API server {self.server} stopped answering: {exc}") from exc
        finally:
            raw.release_conn()
        if raw.status >= 300:
            raise _error(raw.status, data)
        parsed: dict[str, Any] = orjson.loads(data) if data else {}
        return parsed

    def get(self, path: str, query: list[tuple[str, str]] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        return self.request("GET", path, query, timeout=timeout)

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def watch(self, path: str, query: list[tuple[str, str]], read_timeout: float) -> WatchStream:
        """Open a watch; iterate the returned stream for its events (dicts), close() it to stop."""
        raw = self._send("GET", path, [*query, ("watch", "true")], timeout=(10.0, read_timeout))
        if raw.status >= 300:
            try:
                data = raw.data
            finally:
                raw.release_conn()
            raise _error(raw.status, data)
        return WatchStream(raw, self.server)


class WatchStream:
    """The events of one watch, read line by line as the server sends them."""

    def __init__(self, raw: Any, server: str) -> None:
        self._raw = raw
        self._server = server

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pending = b""
        try:
            for chunk in self._raw.stream(amt=None, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
        except (HTTPError, OSError, ValueError) as exc:
            raise KubeError(0, "Unreachable", f"the watch on {self._server} broke: {exc}") from exc
        finally:
            self.close()

    def close(self) -> None:
        """End the stream, also from another thread (a blocked read returns)."""
        # urllib3 refuses (ValueError, RuntimeError) when the connection is not open any more.
        with contextlib.suppress(AttributeError, OSError, ValueError, RuntimeError):
            self._raw.shutdown()
        self._raw.release_conn()


def _error(status: int, data: bytes) -> KubeError:
    try:
        body = orjson.loads(data)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return KubeError(
        status, str(body.get("reason") or ""), str(body.get("message") or data[:200].decode(errors="replace"))
    )
