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


if __name__ == "__main__":
    sys.exit(main())
