"""An example's YAML rewritten to run against the bundled fake providers: no account, no key.

Every Backend used by an OpenAI, AzureOpenAI, Anthropic, AWSBedrock, AWSAnthropic, Cohere,
GCPVertexAI or GCPAnthropic AIServiceBackend, or named by an MCPRoute's backendRefs (the fake MCP
server), is pointed at 127.0.0.1:<free port> with the
`aigw-xds.dev/fake-provider` annotation (so `aigw-xds run` starts the matching fake there, see
`annotated`), the BackendTLSPolicies of those Backends are dropped, and every environment variable
the Secrets substitute is set to a dummy key (a real key in your environment is never sent to a
fake). Every document keeps its file and its number in it (a dropped one is left as an empty
document), so the gateway's messages name the example's own files and documents. With a fake
Bedrock, the AWS default chain's variables are set to the fake's test keys (AKIDEXAMPLE), the
session token cleared, for the same reason. With a fake Vertex, the variable of each GCPCredentials
policy's key Secret is set to a generated test service-account key whose token_uri is a loopback
fake token endpoint (cryptography makes the RSA key). `main` is examples/with_fakes.py: it writes
the rewritten files, by their names in the example, to a temporary directory, which `aigw-xds run`
then watches. The tests (tests/examples/) use `for_fakes()` the same way, with fakes they start
themselves.

This module reads and writes YAML (and makes test keys); it needs no aiohttp.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
import yaml

from .annotated import FAKE_PROVIDER_ANNOTATION, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY
from .service_account_key import make_service_account_key

SUBSTITUTION_ENV = "substitution.aigw.run/env/"
# AIServiceBackend schema -> the bundled fake that speaks it.
FAKE_FOR_SCHEMA = {
    "OpenAI": "openai",
    "AzureOpenAI": "azure",
    "Anthropic": "anthropic",
    "AWSBedrock": "bedrock",
    "AWSAnthropic": "bedrock",
    "GCPVertexAI": "vertex",
    "GCPAnthropic": "vertex",
    "Cohere": "cohere",
}
# What FAKE_FOR_SCHEMA calls an MCPRoute's backend.
MCP_SERVER = "MCP server"
FAKE_FOR_SCHEMA[MCP_SERVER] = "mcp"
DUMMY_KEY = "sk-fake-key"


@dataclass
class Rewritten:
    # One per document given, in order; None where one was dropped (or was empty).
    documents: list[Any]
    env: dict[str, str] = field(default_factory=dict)  # substituted variable -> dummy key
    fakes: dict[str, tuple[str, int]] = field(default_factory=dict)  # Backend name -> (fake provider, port)

    def text(self) -> str:
        return yaml_text(self.documents)


def yaml_text(documents: list[Any]) -> str:
    """Documents as one YAML stream, each at its number (None: an empty one, `null`)."""
    return "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)


def load_files(example: Path, unreadable: dict[Path, str] | None = None) -> dict[Path, list[Any]]:
    """Every YAML document of an example (a file, or a directory's files, recursively) by its file's
    path in the example (a file: its name), empty ones as None (they count in a document's number).
    A file that is not YAML is a ValueError naming it, its line and column (not PyYAML's
    "<unicode string>"); given `unreadable`, its text goes there instead, by its path."""
    files = [example] if example.is_file() else sorted(p for p in example.rglob("*.y*ml") if p.is_file())
    found = {}
    for file in files:
        path = file.relative_to(example) if file != example else Path(file.name)
        text = file.read_text()
        try:
            found[path] = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            if unreadable is not None:
                unreadable[path] = text
                continue
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{file}: invalid YAML{where}: {problem}") from None
    return found


def load_documents(example: Path) -> list[dict[str, Any]]:
    """Every YAML document of an example that is a mapping (load_files), in one list."""
    return [d for documents in load_files(example).values() for d in documents if isinstance(d, dict)]


def rewrite_files(
    files: Mapping[Path, list[Any]], ports: Mapping[str, int] | None = None, *, listener_port: int | None = None
) -> tuple[Rewritten, dict[Path, str]]:
    """for_fakes over an example's files (load_files), and each file's rewritten text."""
    rewritten = for_fakes([d for documents in files.values() for d in documents], ports, listener_port=listener_port)
    texts, at = {}, 0
    for path, documents in files.items():
        texts[path] = yaml_text(rewritten.documents[at : at + len(documents)])
        at += len(documents)
    return rewritten, texts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def for_fakes(
    documents: list[Any],
    ports: Mapping[str, int] | None = None,
    *,
    listener_port: int | None = None,
    annotate: bool = True,
    keys: Mapping[str, str] | None = None,
) -> Rewritten:
    """The documents with their provider Backends pointed at loopback fakes.

    ports: Backend name -> port (a free port for the others). listener_port: replaces every
    Gateway listener's port. annotate: add the fake-provider annotation so `aigw-xds run` starts
    the fakes itself (leave it off when the caller runs the fakes). keys: substituted variable ->
    value (DUMMY_KEY for the others)."""
    ports = dict(ports or {})
    keys = dict(keys or {})
    schemas = {}
    mappings = [d for d in documents if isinstance(d, dict)]
    for doc in mappings:
        if doc.get("kind") == "AIServiceBackend":
            spec = doc.get("spec") or {}
            schema = (spec.get("schema") or {}).get("name")
            backend = (spec.get("backendRef") or {}).get("name")
            if schema in FAKE_FOR_SCHEMA and backend:
                schemas.setdefault(backend, schema)
        elif doc.get("kind") == "MCPRoute":
            for ref in (doc.get("spec") or {}).get("backendRefs") or []:
                if ref.get("kind") == "Backend" and ref.get("name"):
                    schemas.setdefault(ref["name"], MCP_SERVER)
    out = Rewritten(documents=[])
    for doc in documents:
        if not isinstance(doc, dict):  # empty, or not a resource (the gateway says so)
            out.documents.append(doc)
            continue
        kind = doc.get("kind")
        name = (doc.get("metadata") or {}).get("name")
        if kind == "BackendTLSPolicy":
            targets = {r.get("name") for r in (doc.get("spec") or {}).get("targetRefs") or []}
            if targets & set(schemas):
                out.documents.append(None)  # the fakes speak plain HTTP (its number stays taken)
                continue
        doc = yaml.safe_load(yaml.safe_dump(doc))  # a deep copy
        if kind == "Backend" and name in schemas:
            port = ports.get(name) or free_port()
            provider = FAKE_FOR_SCHEMA[schemas[name]]
            doc["spec"]["endpoints"] = [{"ip": {"address": "127.0.0.1", "port": port}}]
            if annotate:
                doc["metadata"].setdefault("annotations", {})[FAKE_PROVIDER_ANNOTATION] = provider
            out.fakes[name] = (provider, port)
        elif kind == "Gateway" and listener_port is not None:
            for listener in doc["spec"]["listeners"]:
                listener["port"] = listener_port
        elif kind == "Secret":
            for annotation, variable in ((doc.get("metadata") or {}).get("annotations") or {}).items():
                if annotation.startswith(SUBSTITUTION_ENV):
                    out.env[variable] = keys.get(variable, DUMMY_KEY)
        out.documents.append(doc)
    if "bedrock" in {provider for provider, _ in out.fakes.values()}:
        # The gateway signs with the AWS default chain unless a policy names a credentials file:
        # the fake's test keys, never the user's.
        out.env.update(
            AWS_ACCESS_KEY_ID=TEST_ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY=TEST_SECRET_ACCESS_KEY,
            AWS_SESSION_TOKEN="",
            AWS_SECURITY_TOKEN="",
        )
    if "vertex" in {provider for provider, _ in out.fakes.values()}:
        _service_account_keys(out, mappings, keys)
    return out


def _service_account_keys(out: Rewritten, documents: list[dict[str, Any]], keys: Mapping[str, str]) -> None:
    """The variable filling each GCPCredentials policy's key Secret (`service_account.json`) gets a
    test service-account key (one per rewrite, never the user's) whose token_uri is a free loopback
    port: `aigw-xds run` starts the fake Google token endpoint there (see `annotated`). A value the
    caller gave in `keys` is kept (tests that run their own token endpoint)."""
    refs = set()
    for doc in documents:
        if doc.get("kind") == "BackendSecurityPolicy":
            file = ((doc.get("spec") or {}).get("gcpCredentials") or {}).get("credentialsFile") or {}
            refs.add((file.get("secretRef") or {}).get("name"))
    key = ""
    for doc in documents:
        metadata = doc.get("metadata") or {}
        if doc.get("kind") != "Secret" or metadata.get("name") not in refs:
            continue
        variable = (metadata.get("annotations") or {}).get(SUBSTITUTION_ENV + "service_account.json")
        if variable and variable not in keys:
            key = key or json.dumps(make_service_account_key(f"http://127.0.0.1:{free_port()}/token"))
            out.env[variable] = key


def _libc_prctl() -> Any:
    """libc's prctl, looked up here in the parent (not in a child between fork and exec); None
    where there is none. (The fakes share no code with the gateway they stand in front of.)"""
    import ctypes

    try:
        return ctypes.CDLL(None).prctl
    except (AttributeError, OSError):
        return None


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the child of `aigw-xds run`, before exec: SIGTERM when this script goes (Linux)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`aigw-xds run` on the rewritten example until Ctrl-C; the exit status is its."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run an example against the bundled fake providers instead of the real ones.",
        epilog="Other options (e.g. --admin-port 9902) are passed to `aigw-xds run`. Edits of the example "
        "are followed while it runs.",
    )
    p.add_argument("example", type=Path, help="an example directory (or file)")
    p.add_argument("--port", type=int, default=None, help="listener port (default: the example's, 1975)")
    args, run_args = p.parse_known_args(argv)
    if not args.example.exists():  # (a typo: not "no Backend has a fake")
        print(f"with_fakes: error: {args.example}: no such file or directory", file=sys.stderr)
        return 1
    try:
        rewritten, texts = rewrite_files(load_files(args.example), listener_port=args.port)
    except (OSError, ValueError) as exc:
        print(f"with_fakes: error: {exc}", file=sys.stderr)
        return 1
    if not rewritten.fakes:
        schemas = ", ".join(s for s in FAKE_FOR_SCHEMA if s != MCP_SERVER)
        print(
            f"with_fakes: no Backend of {args.example} has a fake (fakes exist for {schemas}, and MCP servers)",
            file=sys.stderr,
        )
        return 1
    for backend, (provider, port) in sorted(rewritten.fakes.items()):
        print(f"with_fakes: Backend {backend} -> fake {provider} provider on http://127.0.0.1:{port}", flush=True)
    with tempfile.TemporaryDirectory(prefix="aigw-fakes-") as workdir:
        config = Path(workdir) / args.example.resolve().stem  # (a file's copy in a directory of its name)
        _write_files(config, texts)
        print(
            f"with_fakes: running a rewritten copy of {args.example} in {workdir} (its files by the same names, "
            f"documents by the same numbers; its messages name {args.example}); edit {args.example}, whose edits "
            "are copied there. Listener port taken? Choose another with --port.",
            flush=True,
        )
        command = [sys.executable, "-m", "aigw_xds", "run", str(config), *run_args]
        # It goes if this script is killed (its Envoy with it): nothing left holding the ports.
        process = subprocess.Popen(
            command,
            env={**os.environ, **rewritten.env},
            preexec_fn=_die_with_parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Its output, naming the example's own files where it names their copies.
        copy = str(config / args.example.name) if args.example.is_file() else str(config)
        relays = [
            threading.Thread(target=_relay, args=(pipe, out, copy, str(args.example).rstrip("/")), daemon=True)
            for pipe, out in ((process.stdout, sys.stdout), (process.stderr, sys.stderr))
        ]
        for relay in relays:
            relay.start()
        stop = threading.Event()
        follower = threading.Thread(
            target=_follow_edits, args=(args.example, config, rewritten, texts, args.port, stop), daemon=True
        )
        follower.start()

        def forward(signum: int, _frame: object) -> None:  # Ctrl-C, or a signal to this process only
            if process.poll() is None:
                process.send_signal(signal.SIGINT)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        try:
            return process.wait()
        finally:
            stop.set()
            follower.join(timeout=5)
            for relay in relays:
                relay.join(timeout=5)


def _relay(pipe: Any, out: Any, copy: str, example: str) -> None:
    """Lines of `aigw-xds run`'s output to this script's, the copy's path replaced by the example's."""
    for line in iter(pipe.readline, b""):
        out.write(line.decode("utf-8", "replace").replace(copy, example))
        out.flush()


def _follow_edits(
    example: Path,
    config: Path,
    first: Rewritten,
    texts: dict[Path, str],
    listener_port: int | None,
    stop: threading.Event,
) -> None:
    """Rewrites `config` (which `aigw-xds run` watches) each time the example changes, the fakes
    keeping their ports, so an edit of the example is live as with `aigw-xds run` itself. A Backend
    added by the edit has no fake (they start with the run): it is named, to restart for it. A file
    that does not read is copied as it is, for `aigw-xds run` to say where (by its own reading, as
    `validate` says it), the others kept as they were (a Backend's rewrite may hang on a document
    of the file that does not read)."""
    ports = {backend: port for backend, (_provider, port) in first.fakes.items()}
    broken = False
    for _changes in watchfiles.watch(example, stop_event=stop, debounce=200, raise_interrupt=False):
        unreadable: dict[Path, str] = {}
        try:
            files = load_files(example, unreadable)
        except OSError as exc:
            print(f"with_fakes: {example} not rewritten, the last good copy stays: {exc}", file=sys.stderr, flush=True)
            continue
        if unreadable:
            texts = {**texts, **unreadable}
            _write_files(config, texts)
            broken = True
            continue
        if broken:
            print(f"with_fakes: {example} reads again: rewritten", flush=True)
            broken = False
        rewritten, texts = rewrite_files(files, ports, listener_port=listener_port)
        for backend in sorted(set(rewritten.fakes) - set(ports)):
            print(f"with_fakes: Backend {backend} is new and has no fake: restart to start one", flush=True)
        _write_files(config, texts)


def _write_files(directory: Path, texts: Mapping[Path, str]) -> None:
    """The rewritten files under `directory` (which `aigw-xds run` watches), each written whole
    (never half a file for the watcher), and the files the example no longer has removed."""
    for path, text in texts.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.read_text() == text:
            continue
        staged = target.with_name(target.name + ".staged")
        staged.write_text(text)
        staged.replace(target)
    for stale in [p for p in directory.rglob("*") if p.is_file() and p.relative_to(directory) not in texts]:
        stale.unlink()
