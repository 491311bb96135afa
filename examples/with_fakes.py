#!/usr/bin/env python3
"""Run an example against the bundled fake providers instead of the real ones: no account, no key.

    .venv/bin/python examples/with_fakes.py examples/multi-provider [--port 1975] [aigw-xds run options]

Every Backend used by an OpenAI, AzureOpenAI, Anthropic, AWSBedrock, AWSAnthropic, GCPVertexAI,
GCPAnthropic or Cohere AIServiceBackend is pointed at 127.0.0.1:<free port> with the
`aigw-xds.dev/fake-provider` annotation (so `aigw-xds run` starts the matching fake there), the
BackendTLSPolicies of those Backends are dropped, and every environment variable the Secrets
substitute is set to a dummy key (a real key in your environment is never sent to a fake; cloud
credentials become the fakes' test credentials). The rewritten files go to a temporary directory
under their names in the example, which `aigw-xds run` then watches; every edit of the example is
rewritten there again (the fakes keep their ports), so editing the example while it runs works as
with `aigw-xds run` itself: its messages name the example's own file and the document's number
in it (its output is relayed, the copies' paths replaced). Options other than --port (e.g. --admin-port) are passed to
`aigw-xds run`.

Each fake answers deterministically and can be told to fail, e.g. to watch provider-fallback work:

    curl -X POST http://127.0.0.1:<port>/__fake/fail -d '{"always": 503}'    # {"always": null} to stop

The fakes need the `fakes` extra (`pip install 'aigw-xds[fakes]'`; `make install` has it). The
rewriter is aigw_fakes.rewrite (fakes/aigw_fakes/rewrite.py); this script only calls it.
"""

import sys

try:
    from aigw_fakes.rewrite import main
except ImportError:  # run by a Python without aigw-xds (the system's, not .venv's)
    sys.exit(
        f"examples/with_fakes.py: {sys.executable} has no aigw-xds with its fakes: run it with the Python "
        "`make install` set up, .venv/bin/python examples/with_fakes.py ... (or pip install 'aigw-xds[fakes]')"
    )

if __name__ == "__main__":
    sys.exit(main(prog="examples/with_fakes.py"))
