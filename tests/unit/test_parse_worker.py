"""The file source parses part of a large read in a worker process (api/parse_worker.py): what it
loads must be exactly what one process loads, errors included, and any failure of the worker must
only make it slower."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import aigw_xds.api.decode as decode
import aigw_xds.sources.files as files
from aigw_xds.api import parse_worker
from aigw_xds.resources import ResourceSet
from aigw_xds.sources.files import FileSource
from tests.resource_text import backend, gateway, route

ANCHORS = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: &meta {name: anchored, namespace: default, labels: {team: a}}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 9000}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {<<: *meta, name: merged}
spec: {endpoints: [{ip: {address: 127.0.0.1, port: 9001}}]}
"""

# An unquoted timestamp is a datetime to YAML, which marshal cannot carry: the parent parses it.
TIMESTAMP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: stamped, namespace: default, creationTimestamp: 2025-01-02T03:04:05Z}
"""

SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: key, namespace: default}
stringData: {apiKey: "${PARSE_WORKER_TEST_KEY}"}
"""

BROKEN = """
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: broken, namespace: default
"""


def write_configuration(directory: Path) -> None:
    (directory / "a-gateway.yaml").write_text(gateway())
    for i in range(6):
        text = "".join(route(f"r{i}-{j}", {f"m{i}-{j}": f"b{i}"}) for j in range(5)) + backend(f"b{i}", 9000 + i)
        (directory / f"routes-{i}.yaml").write_text(text)
    (directory / "z-anchors.yaml").write_text(ANCHORS)
    (directory / "z-broken.yaml").write_text(BROKEN)
    (directory / "z-secret.yaml").write_text(SECRET)
    (directory / "z-timestamp.yaml").write_text(TIMESTAMP)
    (directory / "z-invalid.yaml").write_text(backend("bad", 9100).replace("port: 9100", "port: not-a-port"))
    (directory / "z-crlf.yaml").write_bytes(backend("crlf", 9200).replace("\n", "\r\n").encode())
    (directory / "z-bom.yaml").write_bytes("\ufeff".encode() + backend("bom", 9300).encode())
    (directory / "z-latin1.yaml").write_bytes(backend("latin", 9400).replace("latin", "lat\xe9n").encode("latin-1"))


def load(directory: Path, monkeypatch: pytest.MonkeyPatch, *, parallel: bool) -> tuple[ResourceSet, int]:
    """The source's first load, and how many pieces this process parsed itself."""
    monkeypatch.setattr(files, "PARALLEL_PARSE_BYTES", 1 if parallel else 1 << 60)
    parsed_here = 0
    parse = decode.parse_piece

    def counted(text: str) -> Any:
        nonlocal parsed_here
        parsed_here += 1
        return parse(text)

    monkeypatch.setattr(decode, "parse_piece", counted)
    resources = FileSource(directory).load()
    monkeypatch.setattr(decode, "parse_piece", parse)
    return resources, parsed_here


@pytest.fixture
def configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PARSE_WORKER_TEST_KEY", "sk-parse-worker")
    monkeypatch.setattr(files, "_cores", lambda: 2)
    write_configuration(tmp_path)
    return tmp_path


def test_a_load_parsed_in_two_processes_is_the_load_of_one(
    configuration: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alone, pieces = load(configuration, monkeypatch, parallel=False)
    shared, parsed_here = load(configuration, monkeypatch, parallel=True)
    assert shared == alone
    assert [str(d) for d in shared.diagnostics] == [str(d) for d in alone.diagnostics]
    # The worker did parse part of it (else this test would compare a load with itself).
    assert 0 < parsed_here < pieces
    messages = " ".join(str(d) for d in shared.diagnostics)
    assert "z-broken.yaml" in messages and "invalid YAML" in messages
    assert "z-invalid.yaml" in messages and "port" in messages
    assert shared.get("Secret", "default", "key") is not None
    assert shared.get("Backend", "default", "crlf") is not None and shared.get("Backend", "default", "bom") is not None
    assert "z-latin1.yaml" in messages


@pytest.mark.parametrize("broken_at", [None, "start", "end"])
def test_one_large_file_is_cut_between_the_processes_where_a_document_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken_at: str | None
) -> None:
    """The worker parses the file's last pieces; a YAML error in either part is reported as a read
    in one process reports it (the file parsed whole, the line counted from its start)."""
    monkeypatch.setattr(files, "_cores", lambda: 2)
    documents = [backend(f"b{i}", 9000 + i) for i in range(40)]
    if broken_at == "start":
        documents.insert(3, BROKEN)
    elif broken_at == "end":
        documents.insert(37, BROKEN)
    (tmp_path / "all.yaml").write_text(gateway() + "---\n" + "---\n".join(documents))
    alone, pieces = load(tmp_path, monkeypatch, parallel=False)
    shared, parsed_here = load(tmp_path, monkeypatch, parallel=True)
    assert shared == alone
    assert [str(d) for d in shared.diagnostics] == [str(d) for d in alone.diagnostics]
    if broken_at is None:
        assert 0 < parsed_here < pieces
        assert shared.get("Backend", "default", "b39") is not None
    else:
        assert "invalid YAML at line" in " ".join(str(d) for d in shared.diagnostics)


@pytest.mark.parametrize(
    "breaks",
    [
        pytest.param(lambda m: m.setattr(sys, "executable", "/nonexistent/python"), id="no-interpreter"),
        pytest.param(lambda m: m.setattr(sys, "executable", "/bin/false"), id="worker-fails"),
        pytest.param(lambda m: m.setattr(parse_worker, "_HEADER", parse_worker.struct.Struct("<I")), id="garbled"),
    ],
)
def test_a_worker_that_fails_leaves_every_file_to_this_process(
    configuration: Path, monkeypatch: pytest.MonkeyPatch, breaks: Callable[[pytest.MonkeyPatch], None]
) -> None:
    alone, pieces = load(configuration, monkeypatch, parallel=False)
    breaks(monkeypatch)
    shared, parsed_here = load(configuration, monkeypatch, parallel=True)
    assert shared == alone
    assert parsed_here == pieces


def test_the_worker_parses_what_this_process_read_and_never_opens_the_files(
    configuration: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is replaced by a FIFO as soon as it is read: a worker that read the files itself
    (as it once did) would wait on the FIFO for a writer, and the load with it (review: the load
    runs on the event loop). It is given the texts read instead."""
    alone, pieces = load(configuration, monkeypatch, parallel=False)
    read = FileSource._read

    def read_then_replaced_by_a_fifo(source: FileSource, file: Path) -> Any:
        result = read(source, file)
        file.unlink()
        os.mkfifo(file)
        return result

    monkeypatch.setattr(FileSource, "_read", read_then_replaced_by_a_fifo)
    shared, parsed_here = load(configuration, monkeypatch, parallel=True)
    assert shared == alone
    assert [str(d) for d in shared.diagnostics] == [str(d) for d in alone.diagnostics]
    assert 0 < parsed_here < pieces


def test_a_file_with_directives_loads_as_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """%TAG changes what a tag means in every document after it: such a file is never cut; the
    worker leaves it to this process, which parses it whole."""
    monkeypatch.setattr(files, "_cores", lambda: 2)
    (tmp_path / "a.yaml").write_text("".join(backend(f"b{i}", 9000 + i) for i in range(10)))
    tagged = (
        "%TAG !b! tag:yaml.org,2002:\n--- !b!map\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\n"
        "metadata: {name: tagged, namespace: default}\n"
        "spec: {endpoints: [{ip: {address: 127.0.0.1, port: !b!int 9100}}]}\n"
    )
    (tmp_path / "b.yaml").write_text(tagged + "".join(backend(f"b{i}", 9000 + i) for i in range(10, 20)))
    alone, pieces = load(tmp_path, monkeypatch, parallel=False)
    shared, parsed_here = load(tmp_path, monkeypatch, parallel=True)
    assert shared == alone and alone.diagnostics == ()
    assert shared.get("Backend", "default", "tagged").resource.spec.endpoints[0].ip.port == 9100


def test_a_piece_the_worker_cut_otherwise_is_parsed_here(configuration: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each piece the worker parsed is taken only where its text's digest is the piece's (a worker
    that cuts otherwise, say an upgrade installed while the control plane runs, costs time only).
    Here every file's pieces are handed over one place off."""
    alone, pieces = load(configuration, monkeypatch, parallel=False)
    parsing = files.Parsing
    off_by_one = lambda given: parsing([(name, start + 1, text) for name, start, text in given])  # noqa: E731
    monkeypatch.setattr(files, "Parsing", off_by_one)
    shared, parsed_here = load(configuration, monkeypatch, parallel=True)
    assert shared == alone
    assert [str(d) for d in shared.diagnostics] == [str(d) for d in alone.diagnostics]
    assert parsed_here == pieces


def test_an_edited_file_is_parsed_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file decoded before and edited reuses its unchanged pieces and parses the changed ones
    here: a worker would parse the whole file (its tail) while this process waits (review: an
    edit near the end of a 2.3 MB file took 0.87 s instead of 0.16)."""
    monkeypatch.setattr(files, "_cores", lambda: 2)
    monkeypatch.setattr(files, "PARALLEL_PARSE_BYTES", 1)
    path = tmp_path / "backends.yaml"
    path.write_text("".join(backend(f"b{i}", 9000 + i) for i in range(10)))
    source = FileSource(tmp_path)
    source.load()
    started: list[object] = []
    monkeypatch.setattr(files, "Parsing", lambda given: started.append(given))
    path.write_text(path.read_text().replace("port: 9009", "port: 9109", 1))
    again = source.load()
    assert started == []
    assert again.get("Backend", "default", "b9").resource.spec.endpoints[0].ip.port == 9109


def test_a_worker_that_never_answers_is_stopped_at_the_deadline(
    configuration: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load runs on the event loop: a worker that has not begun its output by the deadline is
    killed and its files are parsed here."""
    alone, pieces = load(configuration, monkeypatch, parallel=False)
    hung = tmp_path_factory.mktemp("bin") / "python"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hung))
    monkeypatch.setattr(parse_worker, "WORKER_DEADLINE_S", 0.5)
    started: list[parse_worker.Parsing] = []
    parsing = files.Parsing

    def kept(given: Any) -> parse_worker.Parsing:
        started.append(parsing(given))
        return started[-1]

    monkeypatch.setattr(files, "Parsing", kept)
    shared, parsed_here = load(configuration, monkeypatch, parallel=True)
    assert shared == alone
    assert parsed_here == pieces
    [worker] = started
    assert worker._process is None  # killed and reaped


def test_the_worker_is_waited_for_on_a_descriptor_past_1023(
    configuration: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A control plane with a thousand Envoy streams open holds descriptors past 1023, which select()
    refuses (review: the load raised, and every reload with a large new file failed)."""
    import resource

    alone, pieces = load(configuration, monkeypatch, parallel=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        shared, parsed_here = load(configuration, monkeypatch, parallel=True)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert shared == alone
    assert 0 < parsed_here < pieces  # the worker's parse was taken
