"""Run one fake provider (a test stand-in, not a real provider) until SIGINT/SIGTERM.

    python -m aigw_fakes --provider openai --port 0 --api-key K [--prefix /v1] [--name N]
    python -m aigw_fakes --provider azure --api-key K --deployment gpt-4o=gpt-4o-2024-08-06
    python -m aigw_fakes --provider anthropic --api-key K --cache-read 10
    python -m aigw_fakes --provider bedrock --region us-east-1   # SigV4 with the test keys (bedrock.TEST_*)
    python -m aigw_fakes --provider cohere --api-key K           # Cohere v2: chat, embed, rerank
    python -m aigw_fakes --provider vertex --token T --project P --region us-central1   # Bearer T only
    python -m aigw_fakes --provider mcp --api-key K                # an MCP server (Streamable HTTP) at /mcp

Prints exactly one line, ``listening on http://127.0.0.1:PORT``, once the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from . import providers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m aigw_fakes", description=__doc__.split("\n\n")[0])
    p.add_argument("--provider", required=True, choices=sorted(providers()))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--api-key", default=None, help="required key (default: the fake's default key)")
    p.add_argument("--no-auth", action="store_true", help="accept any key")
    p.add_argument("--name", default=None, help="instance name, sent back in x-fake-id")
    p.add_argument("--prefix", default=None, help="OpenAI path prefix (default /v1; /openai/v1 for Azure v1)")
    p.add_argument("--token", default=None, help="Azure: also accept (Vertex: accept) Authorization: Bearer TOKEN")
    p.add_argument("--project", default=None, help="Vertex: the only project the path may name")
    p.add_argument(
        "--deployment", action="append", default=[], metavar="NAME=MODEL", help="Azure deployment (repeatable)"
    )
    p.add_argument("--cached-tokens", type=int, default=0, help="OpenAI/Azure: prompt cached_tokens")
    p.add_argument("--reasoning-tokens", type=int, default=0, help="OpenAI/Azure: reasoning_tokens")
    p.add_argument("--cache-read", type=int, default=0, help="Anthropic: cache_read_input_tokens")
    p.add_argument("--cache-creation", type=int, default=0, help="Anthropic: cache_creation_input_tokens")
    p.add_argument("--reply", default=None, help="fixed reply text")
    p.add_argument("--aws-access-key-id", default=None, help="Bedrock: SigV4 access key id (default AKIDEXAMPLE)")
    p.add_argument("--aws-secret-access-key", default=None, help="Bedrock: SigV4 secret (default the test secret)")
    p.add_argument("--aws-session-token", default=None, help="Bedrock: required X-Amz-Security-Token")
    p.add_argument("--region", default=None, help="Bedrock: region of the credential scope (default us-east-1); "
                   "Vertex: the only region the path may name")  # fmt: skip
    return p.parse_args(argv)


def build(args: argparse.Namespace) -> Any:
    cls = providers()[args.provider]
    if args.provider == "bedrock":
        return _build_bedrock(cls, args)
    if args.provider == "vertex":
        # A fixed token (--token), or any bearer with --no-auth; no token endpoint in this process.
        accept_any = (lambda token: True) if args.no_auth else None
        return cls(token=args.token, token_validator=accept_any, project=args.project, region=args.region,
                   name=args.name, host=args.host, port=args.port, reply=args.reply)  # fmt: skip
    if args.provider == "mcp":  # an MCP server: its key as Authorization: Bearer (or none)
        return cls(api_key=None if args.no_auth else args.api_key, name=args.name, host=args.host, port=args.port)
    kw: dict[str, Any] = {"name": args.name, "host": args.host, "port": args.port, "reply": args.reply}
    if args.no_auth:
        kw["api_key"] = None
    elif args.api_key is not None:
        kw["api_key"] = args.api_key
    if args.provider == "anthropic":
        kw["cache_read_input_tokens"] = args.cache_read
        kw["cache_creation_input_tokens"] = args.cache_creation
    else:
        kw["cached_tokens"] = args.cached_tokens
        if args.provider != "cohere":  # Cohere's usage has no reasoning tokens
            kw["reasoning_tokens"] = args.reasoning_tokens
    if args.provider == "openai" and args.prefix is not None:
        kw["prefix"] = args.prefix
    if args.provider.startswith("azure"):
        if args.token:
            kw["token"] = args.token
        if args.deployment:
            kw["deployments"] = dict(d.split("=", 1) if "=" in d else (d, d) for d in args.deployment)
    return cls(**kw)


def _build_bedrock(cls: Any, args: argparse.Namespace) -> Any:
    """A Bedrock fake: SigV4 keys and region; --api-key is a Bedrock API key (Authorization: Bearer)."""
    from .bedrock import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY

    return cls(
        args.aws_access_key_id or TEST_ACCESS_KEY_ID,
        args.aws_secret_access_key or TEST_SECRET_ACCESS_KEY,
        args.region or "us-east-1",
        args.aws_session_token,
        api_key=args.api_key,
        name=args.name,
        host=args.host,
        port=args.port,
        reply=args.reply,
    )


async def serve(args: argparse.Namespace) -> None:
    fake = build(args)
    await fake.start()
    print(f"listening on {fake.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
