"""python -m aigw_translator --config FILE --listen ADDR"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import structlog

from .config import load_config
from .server import serve


def _configure_logging(level: str, fmt: str) -> None:
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
    )


async def _run(config_path: str, listen: str) -> None:
    server = await serve(load_config(config_path), listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(2.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aigw_translator", description="aigw ext_proc translator")
    parser.add_argument("--config", required=True, help="TranslatorConfig as JSON or binary protobuf")
    parser.add_argument("--listen", default="127.0.0.1:1063", help="host:port or unix:PATH")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=("console", "json"), default="json")
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_run(args.config, args.listen))


if __name__ == "__main__":
    main()
