"""Checks of command-line values shared by the translator's and the control plane's command lines
(aigw_xds.cli imports them from here: the translator never imports aigw_xds)."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import re
import socket
from pathlib import Path

# A Kubernetes object name (DNS-1123 subdomain, upper case tolerated).
# What the Kubernetes API server takes as a namespace (a DNS-1123 label) and as a Gateway's name (a
# DNS-1123 subdomain); files are held to the same (aigw_xds.keys).
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_HOST = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?")


def host_port(value: str, option: str, *, unix: bool = False, any_port: bool = False) -> tuple[str, int]:
    """host:port (IPv6 as [::1]:port) -> (host, port), or ValueError naming the option. `unix`:
    "unix:PATH" is accepted too (returned as (PATH, 0)); `any_port`: port 0 (any free one) too."""
    if unix and value.startswith("unix:") and len(value) > len("unix:"):
        return value.removeprefix("unix:"), 0
    host, colon, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host.removeprefix("[").removesuffix("]")
    lowest = 0 if any_port else 1
    if not colon or not _valid_host(host, bracketed) or not port.isdigit() or not lowest <= int(port) <= 65535:
        forms = "host:port or unix:PATH" if unix else "host:port"
        raise ValueError(f"{option} {value!r} must be {forms} (e.g. 127.0.0.1:{'1063' if unix else '18000'})")
    return host, int(port)


def loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this host's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed_translator(value: str, option: str, insecure_flag: str) -> str | None:
    """Why a translator may not listen on `value` (host:port or unix:PATH, checked): an address other
    hosts reach. An attempt's answer holds its backend's credential, and the ext_proc port asks no
    one who they are, so whoever reaches it can read every backend's key. None for loopback or a unix
    socket, which only this host reaches (a socket also only whom its permissions let)."""
    if value.startswith("unix:") or loopback(host_port(value, option, unix=True, any_port=True)[0]):
        return None
    return (
        f"{option} {value} is reachable from other hosts, and the translator hands the backends' credentials "
        "to whoever connects: listen on loopback or a unix: socket and run `aigw-xds translator --xds ...` "
        f"beside each Envoy of another host (docs/translator-sidecar.md), or pass {insecure_flag} on a "
        "network where every host may read the keys"
    )


def exposed_mcp_proxy(value: str, option: str) -> str | None:
    """Why the MCP proxy may not listen on `value` (host:port, checked): an address other hosts
    reach. It calls the MCPRoutes' servers with their keys for whoever connects, past every check
    of the Gateway's listener. None for loopback."""
    if loopback(host_port(value, option, any_port=True)[0]):
        return None
    return (
        f"{option} {value} is reachable from other hosts, and the MCP proxy calls the MCP servers with their keys "
        "for whoever connects: listen on loopback, beside the Envoys (a translator sidecar's --mcp-listen)"
    )


def _valid_host(host: str, bracketed: bool) -> bool:
    if bracketed or ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return bool(_HOST.fullmatch(host))


def fleet(value: str, option: str) -> str:
    """A Gateway's "<namespace>/<name>" (a bare name: in namespace default, as for a node's
    cluster), or ValueError."""
    namespace, _, name = value.rpartition("/") if "/" in value else ("default", "", value)
    if not _NAMESPACE.fullmatch(namespace) or not _NAME.fullmatch(name):
        raise ValueError(
            f'{option} {value!r} must be "<namespace>/<name>" or a bare name (e.g. default/basic), in lowercase '
            "letters, digits and '-' (and '.' in the name), as Kubernetes names are"
        )
    return f"{namespace}/{name}"


def bound_address(value: str, port: int) -> str:
    """The address a server given `value` (host:port, port 0 for any; or unix:PATH) listens on, once
    bound to `port`: what its log says (not ":0")."""
    if value.startswith("unix:"):
        return value
    return f"{value.rpartition(':')[0]}:{port}"


def listen_problem(value: str) -> str | None:
    """Why a server cannot listen on `value` (host:port or unix:PATH), as far as a test bind tells;
    None when it can (or when the cause cannot be told)."""
    if value.startswith("unix:"):
        directory = Path(value.removeprefix("unix:")).parent
        return None if directory.is_dir() else f"directory {directory} does not exist"
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        addresses = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, ValueError):
        return f"cannot resolve {host!r}"
    problems = []  # gRPC listens when any of the resolved addresses binds (localhost: maybe no ::1)
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    problems.append("address already in use")
                elif exc.errno == errno.EADDRNOTAVAIL:
                    problems.append(f"{host} is not an address of this machine")
                else:
                    problems.append(exc.strerror or str(exc))
            else:
                return None
    return problems[0] if problems else None


def add_rate_limit_flags(parser: argparse.ArgumentParser) -> None:
    """The counter store of token rate limits and quotas (the translator's and the control plane's
    commands alike)."""
    from .budgets import REDIS_URL_ENV

    parser.add_argument(
        "--rate-limit-redis",
        metavar="URL",
        default=os.environ.get(REDIS_URL_ENV) or None,
        help="count rate limits and quotas in this Redis (redis://[:password@]host:port/db, rediss:// for TLS), "
        f"shared by every translator process and replica (default: ${REDIS_URL_ENV}, else in this process's memory)",
    )
    parser.add_argument(
        "--rate-limit-fail-mode",
        choices=("open", "closed"),
        default="open",
        help="while the Redis store cannot be reached: admit requests uncounted (open, the default) "
        "or refuse them with 503 (closed)",
    )


def rate_limit_problem(url: str | None) -> str:
    """Why a --rate-limit-redis value cannot be used ("" when it can); never repeats the URL (it may
    hold a password)."""
    if url is None:
        return ""
    from .budgets import REDIS_URL_ENV
    from .counters import url_problem

    problem = url_problem(url)
    return f"--rate-limit-redis (or ${REDIS_URL_ENV}): {problem}" if problem else ""
