"""The file source: a YAML file or a directory of them (recursive, *.yaml / *.yml, multi-document),
read into a resource set and watched for edits.

A file that stops parsing (or is left empty for a moment, as editors do while saving) keeps
contributing its last good content, marked stale, and a resource whose new version is invalid keeps
its last good version: the Gateways built from them keep their last good configuration instead of
losing resources. Deleting a file (or a document) is how resources are removed; a file deleted is
read as removed once it has stayed away for DELETION_GRACE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import structlog
import watchfiles

from ..api.decode import Decoded, DecodedFile, decode_file
from ..api.parse_worker import Parsing
from ..api.yaml_text import YAMLSyntaxError, pieces
from ..diagnostics import Diagnostic, Origin, error, warning
from ..keys import ResourceKey
from ..resources import ResourceSet, build_resource_set, build_resource_set_by_file
from . import reload

log = structlog.get_logger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")


# How long a deleted file may take to come back before the read takes it as removed.
DELETION_GRACE_S = 0.5


def yaml_files(path: Path) -> list[Path]:
    """The YAML files under path (or path itself), in a stable order; hidden entries are skipped."""
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.suffix in YAML_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


# The most a configuration file, or a file a Secret takes a value from, may hold.
FILE_LIMIT_BYTES = 64 * 1024 * 1024
SECRET_FILE_LIMIT_BYTES = 1024 * 1024  # a Kubernetes Secret's own limit


def read_regular(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """A regular file's bytes and its stat, read without waiting on anything else: a FIFO (opened
    without blocking: no writer comes), a device or a directory is an OSError, and so is a file
    larger than `limit` (/dev/zero, a log growing without end). Loads run on the event loop."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        chunks, size, want = [], 0, min(st.st_size, limit) + 1  # one read, unless it grew meanwhile
        while chunk := os.read(fd, want):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
            want = 1 << 20
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _reader(base: Path, inputs: dict[str, str]) -> Callable[[str], str]:
    """What a Secret's file substitution reads a value with (substitution.py); each file it reads
    goes into `inputs` with the digest of what it read (a key replaced in it is seen:
    _Read.inputs_changed)."""

    def read(path: str) -> str:
        file = base / Path(path).expanduser()
        try:
            data, _ = read_regular(file, SECRET_FILE_LIMIT_BYTES)
        except OSError:
            inputs[str(file)] = ""
            raise
        inputs[str(file)] = hashlib.sha256(data).hexdigest()
        try:
            return data.decode("utf-8").replace("\r\n", "\n")  # a PEM written on Windows reads as one
        except UnicodeDecodeError:
            raise OSError(errno.EINVAL, "not UTF-8 text", str(file)) from None

    return read


# A file whose inode change time is within this of when it was last read may have been written again
# in the same tick of the filesystem's clock (so with the same times): it is read again to be sure.
RACY_NS = 1_000_000_000


class _Read(NamedTuple):
    """A file as last read and decoded good."""

    signature: tuple[int, int, int, int]  # inode, size, modification and inode change times (ns)
    read_at: int  # the wall clock (ns) just before its signature was taken
    digest: str
    documents: DecodedFile
    # The files its Secrets' substitutions read (`substitution.aigw.run/file/...`), by path, with
    # the digest of what they held ("" when unreadable): a key replaced there decodes it anew.
    inputs: Mapping[str, str] = MappingProxyType({})

    def inputs_changed(self) -> bool:
        return any(_file_digest(path) != digest for path, digest in self.inputs.items())

    def unchanged(self, signature: tuple[int, int, int, int]) -> bool:
        """Surely the same content: same signature, and its last change well before it was read (a
        write changes the inode change time, which no tool can set back; the margin covers writes
        within one tick of a coarse filesystem clock)."""
        return signature == self.signature and signature[3] < self.read_at - RACY_NS


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Text(NamedTuple):
    """A file read whose content must be decoded."""

    signature: tuple[int, int, int, int]
    read_at: int
    digest: str
    text: str
    anew: bool = False  # a file a Secret of it read changed: nothing of its last decoding is reused


def _file_digest(path: str) -> str:
    """The digest of a small file's content ("" when it cannot be read)."""
    try:
        data, _ = read_regular(Path(path), SECRET_FILE_LIMIT_BYTES)
    except OSError:
        return ""
    return hashlib.sha256(data).hexdigest()


# The file source parses part of a read in a second process (api/parse_worker.py) when it has this
# many characters of YAML to decode at once and a second core to do it on: below, starting the worker
# costs more than it saves (about 50 ms against a parse of ~0.7 s per MB).
PARALLEL_PARSE_BYTES = 256 * 1024


def _parsing_elsewhere(reads: Sequence[tuple[str, object]]) -> Parsing | None:
    """The last 3/5 (by size) of the text to decode, whole files and the tail of one, parsed in a
    worker process while this one decodes the rest (it validates the worker's parse after); None
    when that would not pay."""
    texts = [(name, read.text) for name, read in reads if isinstance(read, _Text)]
    total = sum(len(text) for _, text in texts)
    if total < PARALLEL_PARSE_BYTES or _cores() < 2:
        return None
    left, theirs = total * 3 // 5, []  # what the worker is still to take
    for name, text in reversed(texts):
        if len(text) <= left:
            theirs.append((name, 0, text))
            left -= len(text)
            continue
        cut = pieces(text)  # of this one, the last pieces that fit
        start, offset = len(cut), len(text)
        while start > 0 and len(cut[start - 1]) <= left:
            start -= 1
            left -= len(cut[start])
            offset -= len(cut[start])
        if start < len(cut):
            theirs.append((name, start, text[offset:]))
        break
    return Parsing(theirs) if theirs else None


def _cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class _EmptyFile(Exception):
    """A file that had resources holds no document now."""


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, YAMLSyntaxError):
        return str(exc)
    if isinstance(exc, _EmptyFile):
        return "the file holds no document now (delete the file to remove its resources)"
    return f"cannot read: {exc}"


class FileSource:
    """Reads resources from a path; remembers each file's last good documents."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # Per file: its last good read. A file whose stat signature is unchanged is not read again; one
        # whose text has the same digest is not parsed again; in an edited one only the documents
        # that changed are built and validated again (DecodedFile): an edit costs what it changed.
        self._last_good: dict[str, _Read] = {}
        # The last resource set: where a resource's new version is invalid, the version there stays.
        self._last: ResourceSet | None = None
        self._reading = asyncio.Lock()  # read_again: the watch's reads and a SIGHUP's, one at a time
        # The files the Secrets read (absolute paths), as of the last load: an edit of one is an edit
        # of the configuration (seen when it is under the watched path). Replaced whole by a load,
        # which runs in a thread of its own, while the watch reads it.
        self._inputs: frozenset[str] = frozenset()

    @property
    def description(self) -> str:
        return str(self.path)

    def load(self) -> ResourceSet:
        decoded: list[Sequence[Decoded]] = []  # by file
        extra: list[Diagnostic] = []
        unreadable: set[str] = set()  # files that stopped parsing: their last good content stays
        if not self.path.exists():
            # Gone for a moment (an editor replacing the file) or for good: either way the last good
            # resources keep serving, stale, until the path is back.
            missing = error(f"{self.path}: no such file or directory")
            kept = list(self._last.items) if self._last is not None else []
            return build_resource_set([], [missing], kept, self._last)
        reads = [self._read(file) for file in yaml_files(self.path)]
        # The last new files, while this process decodes the first (an edited file reuses what it
        # decoded before: its changed pieces are few, and parsed here).
        parsing = _parsing_elsewhere([(n, r) for n, r in reads if n not in self._last_good])
        try:
            for name, read in reads:
                cached = self._last_good.get(name)
                try:
                    if isinstance(read, Exception):
                        raise read
                    if isinstance(read, _Read):  # unchanged
                        self._last_good[name] = read
                        decoded.append(read.documents.documents)
                        continue
                    earlier = cached.documents if cached and not read.anew else None
                    parsed = parsing.parsed(name) if parsing is not None else None
                    inputs: dict[str, str] = {}
                    reader = _reader(Path(name).parent, inputs)
                    documents = decode_file(read.text, name, os.environ, reader, earlier, parsed)
                    if earlier is not None and cached is not None:  # its reused pieces read theirs before
                        inputs = {**cached.inputs, **inputs}
                    if not documents.documents and earlier and earlier.documents:
                        raise _EmptyFile
                except (YAMLSyntaxError, UnicodeDecodeError, OSError, _EmptyFile) as exc:
                    extra.append(error(_unreadable(exc), Origin(name)))
                    if cached:
                        # Its valid documents stay; their errors of its last parse are not reported
                        # again: the text they were about is not the file's any more.
                        decoded.append(tuple(d for d in cached.documents.documents if d.resource is not None))
                        unreadable.add(name)
                        stays = warning("the file's last good content stays in use until it is fixed", Origin(name))
                        extra.append(stays)
                    continue
                self._last_good[name] = _Read(read.signature, read.read_at, read.digest, documents, inputs)
                decoded.append(documents.documents)
        finally:
            if parsing is not None:
                parsing.close()
        seen = {name for name, _ in reads}
        for gone in set(self._last_good) - seen:
            del self._last_good[gone]
        self._inputs = frozenset(os.path.abspath(p) for read in self._last_good.values() for p in read.inputs)
        stale = self._stale(unreadable, decoded)
        resources = self._last = build_resource_set_by_file(decoded, extra, stale, self._last)
        return resources

    def changed_since_load(self) -> bool:
        """Whether a file under the path is not what the last load read (its signature: a write
        within one tick of a coarse clock after the read can go unseen here, as by the load), or a
        file a Secret reads changed, or a file is new, or gone."""
        try:
            files = {str(file): file for file in yaml_files(self.path)} if self.path.exists() else {}
            return files.keys() != self._last_good.keys() or any(
                read.inputs_changed() or read.signature != _signature(files[name].stat())
                for name, read in self._last_good.items()
            )
        except OSError:
            return True

    def _read(self, file: Path) -> tuple[str, _Read | _Text | OSError | UnicodeDecodeError]:
        """A file as it is now: its last good read when surely unchanged (same signature) or
        unchanged in content (same digest; then with its new signature), else its text."""
        name = str(file)
        cached = self._last_good.get(name)
        anew = cached is not None and cached.inputs_changed()
        try:
            read_at = time.time_ns()
            if cached and not anew and cached.unchanged(_signature(file.stat())):
                return name, cached
            data, st = read_regular(file, FILE_LIMIT_BYTES)
            signature = _signature(st)
        except OSError as exc:
            return name, exc
        digest = hashlib.sha256(data).hexdigest()
        if cached and not anew and cached.digest == digest:
            return name, cached._replace(signature=signature, read_at=read_at)
        try:
            return name, _Text(signature, read_at, digest, data.decode("utf-8"), anew)
        except UnicodeDecodeError as exc:
            return name, exc

    def _stale(self, unreadable: set[str], decoded: list[Sequence[Decoded]]) -> set[ResourceKey]:
        """What the unreadable files gave the last set, which stays stale: the resources of their
        valid documents and the last good versions of their invalid ones; not a resource defined now
        by a document of a file that reads (moved there, it is that document's)."""
        if not unreadable or self._last is None:
            return set()
        kept = {k for k, loaded in self._last.items.items() if loaded.origin.file in unreadable}
        defined_elsewhere = {
            d.key for documents in decoded for d in documents if d.key is not None and d.origin.file not in unreadable
        }
        return kept - defined_elsewhere

    async def watch(
        self,
        on_change: Callable[[ResourceSet], Awaitable[None]],
        *,
        debounce_ms: int = 50,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Call on_change with a fresh resource set after every (debounced) edit under the path."""
        # Looked at once: the filter runs on the event loop for every change under the directory.
        single = None if self.path.is_dir() else self.path.resolve()
        target = self.path if single is None else self.path.parent

        def relevant(_change: watchfiles.Change, changed: str) -> bool:
            p = Path(changed)
            if os.path.abspath(changed) in self._inputs:  # a key file a Secret reads
                return True
            if single is not None:
                return p.resolve() == single
            return p.suffix in YAML_SUFFIXES or p.is_dir()

        async def catch_up() -> None:
            # The watch below is armed (its inotify watches added) by its first step, before its
            # first wait; an edit between the last load and then would never be seen (serve and run
            # start it after their first apply): one is looked for once it is armed.
            await asyncio.sleep(0)
            if self._last is not None and self.changed_since_load():
                log.info("configuration_changed", files=[], when="while the watch started")
                await self.read_again(on_change)

        caught_up = asyncio.create_task(catch_up())
        try:
            async for changes in watchfiles.awatch(
                target, watch_filter=relevant, debounce=debounce_ms, step=10, stop_event=stop, recursive=True
            ):
                log.info("configuration_changed", files=sorted({c[1] for c in changes}))
                if any(change is watchfiles.Change.deleted and not Path(path).exists() for change, path in changes):
                    # A file deleted and written again (a checkout, a script's rm then cp) is an edit: a
                    # Gateway read as gone for a moment would remove its Envoys' listeners.
                    await asyncio.sleep(DELETION_GRACE_S)
                await self.read_again(on_change)
        finally:
            caught_up.cancel()

    async def read_again(self, on_change: Callable[[ResourceSet], Awaitable[None]]) -> None:
        """on_change with the path read again now (after an edit the watch saw, or on `serve`'s
        SIGHUP), one read at a time: two at once would both update the last good reads."""
        async with self._reading:
            await reload(self._load_in_thread, on_change)

    async def _load_in_thread(self) -> ResourceSet:
        """load() in a thread of its own: while a read is slow (a network mount) or never returns, the
        event loop goes on serving the last good configuration to every node. A daemon thread, not
        the loop's executor, which the process joins at its exit: a read that never returns does not
        hold the exit either."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[ResourceSet] = loop.create_future()

        def read() -> None:
            try:
                outcome: tuple[Callable[[Any], None], Any] = (done.set_result, self.load())
            except StopIteration as exc:  # a future refuses it (and the watch would wait forever)
                outcome = (done.set_exception, RuntimeError(f"the load raised StopIteration: {exc}"))
            except BaseException as exc:  # handed to the one who waits
                outcome = (done.set_exception, exc)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, done, *outcome)

        context = contextvars.copy_context()  # the log's bound context, as asyncio.to_thread passes it
        threading.Thread(target=context.run, args=(read,), name="aigw-config-read", daemon=True).start()
        return await done


def _settle(future: asyncio.Future[Any], setter: Callable[[Any], None], value: Any) -> None:
    if not future.done():  # not cancelled meanwhile (the watch stopped)
        setter(value)
