"""Parsing YAML files in a second process: the file source's read of a large configuration (a first
read, or a checkout that changed many files) parses about half of its files there while it parses
and validates the others itself (docs/performance.md: libyaml's parse and the documents' building
are most of a first read, and one process cannot use a second core for them).

The worker imports nothing but yaml_text and reads the files itself; a file whose bytes are not the
ones the parent read (its digest), or that does not parse, comes back as None and the parent
decodes it as it decodes any file (and reports its errors). Any failure of the worker leaves every
file to the parent: the result is the same, only slower.

The documents come back in marshal's format, one file each in one buffer, taken in by the parent
one file at a time as it validates them (as its own parses are: their dicts are garbage a moment later, and the
heap stays as compact as a read in one process leaves it); marshal also keeps a string interned
(yaml_text interns short ones: one object per distinct text in every document), where pickle
would make a copy per file. What marshal cannot hold (a timestamp) leaves that file to the parent.

Run as `python -m aigw_xds.api.parse_worker`: stdin a pickle of [(path, sha256 hex digest)];
stdout each file's parsed pieces (yaml_text.parse_pieces) in marshal's format, after a header
(_HEADER).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .yaml_text import ParsedPiece, parse_pieces

ParsedFile = list[ParsedPiece] | None

# The package's parent directory: the worker imports the same aigw_xds as the parent.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def parse_file(path: str, digest: str) -> ParsedFile:
    """The file's pieces parsed, if its bytes are still the ones of `digest` and it parses."""
    try:
        data = Path(path).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            return None  # written again since the parent read it: the parent decodes what it read
        return parse_pieces(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


class Parsing:
    """Files being parsed in a worker process; `result()` waits for them."""

    def __init__(self, files: Sequence[tuple[str, str]]) -> None:
        self.files = list(files)
        self._given = {path for path, _ in self.files}
        self._output: bytes | None = None
        self._spans: dict[str, tuple[int, int]] | None = None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._process: subprocess.Popen[bytes] | None = None
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            # A few dozen bytes a file: a request larger than the pipe's buffer waits for the
            # worker to start reading (its output waits for `take`: it comes at the end, at once).
            # No thread: its malloc arena would keep the output's pages after it.
            with self._process.stdin as request:  # type: ignore[union-attr]  # a pipe: asked for above
                request.write(pickle.dumps(self.files, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # no interpreter to run, or it died at once: the parent decodes every file
            self._stop()

    def take(self, path: str) -> ParsedFile:
        """The file's parse (waiting for the worker the first time), handed over once; None for a
        file the parent must decode: not given to the worker, not parsed by it, or the worker
        failed."""
        if path not in self._given:
            return None
        if self._spans is None:
            self._spans = self._read()
        span = self._spans.pop(path, None)
        data = self._output
        if not self._spans:  # the last one: the worker's output goes with it
            self._output = None
        if span is None or data is None:
            return None
        try:
            return marshal.loads(memoryview(data)[span[0] : span[1]])  # type: ignore[no-any-return]
        except (ValueError, EOFError, TypeError):
            return None

    def _read(self) -> dict[str, tuple[int, int]]:
        """The worker's output; where each file's parse is in it (none: the worker failed)."""
        if self._process is None:
            return {}
        try:
            with self._process.stdout as output:  # type: ignore[union-attr]  # a pipe: asked for above
                self._output = output.read()
            if self._process.wait() != 0:
                self._output = None
        except OSError:
            self._stop()
            self._output = None
        try:
            lengths = _lengths(self._output) if self._output is not None else None
        except (ValueError, EOFError, TypeError, struct.error):  # a worker that died mid-write
            lengths = None
        if not isinstance(lengths, list) or len(lengths) != len(self.files) or self._output is None:
            self._output = None
            return {}
        spans, at = {}, _HEADER.size + _HEADER.unpack_from(self._output)[0]
        for (path, _), length in zip(self.files, lengths, strict=True):
            if length >= 0:
                spans[path] = (at, at + length)
                at += length
        return spans

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


# The worker's output: the length of the header, the header (marshal's bytes of each file's length,
# -1 for a file left to the parent), then each file's parse.
_HEADER = struct.Struct("<Q")


def _lengths(output: bytes) -> object:
    (size,) = _HEADER.unpack_from(output)
    return marshal.loads(memoryview(output)[_HEADER.size : _HEADER.size + size])


def marshalled(parsed: ParsedFile) -> bytes:
    """The parse in marshal's format; empty when there is none or it holds what marshal cannot
    (timestamps)."""
    if parsed is None:
        return b""
    try:
        return marshal.dumps(parsed)
    except (ValueError, RecursionError):
        return b""


def main() -> None:
    requests = pickle.load(sys.stdin.buffer)
    parses = [marshalled(parse_file(path, digest)) for path, digest in requests]
    header = marshal.dumps([len(p) if p else -1 for p in parses])
    sys.stdout.buffer.write(b"".join((_HEADER.pack(len(header)), header, *parses)))


if __name__ == "__main__":
    main()
