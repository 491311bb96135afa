"""Parsing YAML in a second process: the file source's read of a large configuration (a first read,
or many new files) has the worker parse the last part of it, whole files and
the tail of one (cut where a document starts: yaml_text.pieces), while it parses and validates
the rest itself (docs/performance.md: libyaml's parse and the documents' building are most of a
first read, and one process cannot use a second core for them).

The worker imports nothing but yaml_text. It is given the texts this process read (a file whole,
or from the piece it starts at), in a file in memory (a memfd; a temporary file where there is
none) as its standard input: it never reads the configuration's files (a file replaced by a FIFO,
or a hung network mount, cannot stop it), and starting it never waits for it. Each piece it parses
comes back with its text's digest, and decode_file takes it only for the piece of that digest at
that place (a worker cutting otherwise, say an upgrade installed mid-run, is only slower). A file
whose pieces do not parse comes back as nothing and the parent decodes it as it decodes any file
(and reports its errors). Any failure of the worker leaves every file to the parent: the result is
the same, only slower.

The documents come back in marshal's format, each file's in one buffer, taken in by the parent one
file at a time as it validates them, as its own parses are (their dicts are garbage a moment later,
and the heap stays as compact as a read in one process leaves it); marshal also keeps a string
interned (yaml_text interns short ones: one object per distinct text in every document), where
pickle would make a copy per file. What marshal cannot hold (a timestamp) leaves that file to the
parent.

Run as `python -m aigw_xds.api.parse_worker`: stdin, in marshal's format, the list of the texts
to parse; stdout each one's digested and parsed pieces (yaml_text.parse_pieces) in marshal's
format, after a header (_HEADER).
"""

from __future__ import annotations

import marshal
import os
import selectors
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from .yaml_text import ParsedPiece, ParsedPieces, parse_pieces

ParsedFile = list[tuple[bytes, ParsedPiece]] | None

# How long the parent, done with its own part, waits for the worker to begin its output, plus a
# second per MB given; then the parent parses the worker's files too (the worker takes about 1 s
# for 3 MB of YAML).
WORKER_DEADLINE_S = 60.0

# The package's parent directory: the worker imports the same aigw_xds as the parent.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _request_file(request: bytes) -> BinaryIO:
    """A file holding the request, read from its start: in memory where Linux offers it (nothing
    written to a filesystem, which may be read-only), else a temporary file."""
    file: BinaryIO
    try:
        file = os.fdopen(os.memfd_create("aigw-xds-parse", os.MFD_CLOEXEC), "w+b")
    except (AttributeError, OSError):  # not Linux, or memfd refused (a seccomp profile)
        file = tempfile.TemporaryFile()  # noqa: SIM115  # handed to the caller, who closes it
    try:
        file.write(request)
        file.flush()
        file.seek(0)
    except BaseException:
        file.close()
        raise
    return file


class Parsing:
    """Files being parsed in a worker process; `parsed()` hands their pieces to decode_file."""

    def __init__(self, files: Sequence[tuple[str, int, str]]) -> None:
        """`files`: each file's path, the index of the first of its pieces the worker parses (those
        before are the parent's), and its text from that piece on."""
        self.files = [path for path, _, _ in files]
        self._given = {path: start for path, start, _ in files}
        self._output: bytes | None = None
        self._spans: dict[str, tuple[int, int]] | None = None
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._process: subprocess.Popen[bytes] | None = None
        texts = [text for _, _, text in files]
        # The floor, and a second per MB (the worker parses some 3 MB a second)
        self._deadline_s = WORKER_DEADLINE_S + sum(map(len, texts)) / 1e6
        try:
            with _request_file(marshal.dumps(texts)) as request:
                self._process = subprocess.Popen(
                    # -P: the working directory is not on the worker's path (a yaml.py there would run)
                    [sys.executable, "-P", "-m", __name__],
                    stdin=request,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
        except (OSError, ValueError, TypeError, MemoryError):  # no interpreter, no room: the parent decodes all
            self._stop()

    def parsed(self, path: str) -> ParsedPieces | None:
        """The file's pieces as the worker parsed them, for decode_file: None for those the parent
        parses (before the worker's first, or every piece when the worker did not parse the file
        or failed). It waits for the worker when asked for the first of the worker's pieces: the
        parent parses its own ones of the file first."""
        start = self._given.get(path)
        if start is None:
            return None
        tail: ParsedFile = None
        taken = False

        def piece(at: int, digest: bytes) -> ParsedPiece | None:
            nonlocal tail, taken
            if at < start:
                return None
            if not taken:
                tail, taken = self._take(path), True
            if tail is None or at - start >= len(tail):
                return None
            theirs, parsed = tail[at - start]
            return parsed if theirs == digest else None

        return piece

    def _take(self, path: str) -> ParsedFile:
        """The worker's parse of the file, handed over once (waiting for the worker the first time)."""
        if self._spans is None:
            self._spans = self._read()
        span = self._spans.pop(path, None)
        data = self._output
        if not self._spans:  # the last one: the worker's output goes with it
            self._output = None
        if span is None or data is None:
            return None
        try:
            parsed = marshal.loads(memoryview(data)[span[0] : span[1]])
        except (ValueError, EOFError, TypeError):
            return None
        return parsed if isinstance(parsed, list) else None

    def _read(self) -> dict[str, tuple[int, int]]:
        """The worker's output; where each file's parse is in it (none: the worker failed)."""
        if self._process is None:
            return {}
        try:
            with self._process.stdout as output:  # type: ignore[union-attr]  # a pipe: asked for above
                # The worker writes its output at once, at the end: a worker that has not begun
                # within the deadline is stopped, and the parent parses its files (the load runs on
                # the event loop: it must not wait without end).
                with selectors.DefaultSelector() as ready:  # select() takes no fd over 1023
                    ready.register(output, selectors.EVENT_READ)
                    if not ready.select(self._deadline_s):
                        raise TimeoutError
                self._output = output.read()
            if self._process.wait() != 0:
                self._output = None
            self._process = None
        except (OSError, ValueError):  # TimeoutError too
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
        for path, length in zip(self.files, lengths, strict=True):
            if length >= 0:
                spans[path] = (at, at + length)
                at += length
        return spans

    def close(self) -> None:
        """Done with the read: a worker whose output was not asked for (the read ended before the
        worker's files) is stopped."""
        self._stop()
        self._output = self._spans = None

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stdout is not None:
                self._process.stdout.close()
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
    requests = marshal.load(sys.stdin.buffer)
    parses = [marshalled(parse_pieces(text)) for text in requests]
    header = marshal.dumps([len(p) if p else -1 for p in parses])
    sys.stdout.buffer.write(b"".join((_HEADER.pack(len(header)), header, *parses)))


if __name__ == "__main__":
    main()
