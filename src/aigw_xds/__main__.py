"""The command's entry point (`aigw-xds`, `python -m aigw_xds`): the command line interface loaded
inside it, so that Ctrl-C while its modules load and its arguments are read (a second or so) exits
quietly, as Ctrl-C later does."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        return 130


def _forget_caught_interrupts() -> None:
    """CPython run with `-m` exits by SIGINT, whatever status the module asked for, once a Ctrl-C
    interrupted code run through PyRun_String, even if it was then caught: Cython modules run such
    code while they are imported (uvloop, gRPC), so Ctrl-C during the start ended `python -m
    aigw_xds` killed rather than with status 130. Running an empty string the same way clears
    CPython's note of it."""
    if sys.implementation.name == "cpython":
        import ctypes

        ctypes.pythonapi.PyRun_SimpleString(b"")


if __name__ == "__main__":
    status = main()
    _forget_caught_interrupts()
    sys.exit(status)
