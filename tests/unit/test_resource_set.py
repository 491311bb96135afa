"""A resource set built after another (a source's next load) knows which keys changed and takes the
previous set's indexes for the kinds that did not: both must be what a set built from nothing has.
A set built by file (the file source's) is the set the general path builds from the same documents."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aigw_xds.api.decode import Decoded, decode_text
from aigw_xds.keys import ResourceKey
from aigw_xds.resources import ResourceSet, build_resource_set, build_resource_set_by_file
from aigw_xds.sources.files import FileSource
from tests.resource_text import api_key, backend, route

NAMES = [f"n{i}" for i in range(6)]


def slice_doc(name: str, service: str) -> str:
    return f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
endpoints: [{{addresses: [10.0.0.1]}}]
ports: [{{port: 8000}}]
"""


def random_file(rng: random.Random) -> str:
    text = ""
    for name in rng.sample(NAMES, rng.randrange(0, 4)):
        kind = rng.randrange(4)
        if kind == 0:
            text += route(f"r-{name}", {f"m{rng.randrange(3)}": rng.choice(NAMES)})
        elif kind == 1:
            text += backend(name, 8000 + rng.randrange(2))
        elif kind == 2:
            text += api_key(rng.choice(NAMES), f"sk-{rng.randrange(2)}")
        else:
            text += slice_doc(f"s-{name}", rng.choice(NAMES))
    return text


def from_nothing(resources: ResourceSet) -> ResourceSet:
    return ResourceSet(dict(resources.items), resources.bad_keys, resources.diagnostics, resources.stale_keys)


@pytest.mark.parametrize("seed", range(10))
def test_a_set_built_after_another_has_the_indexes_of_one_built_from_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    files = {f"f{i}.yaml": random_file(rng) for i in range(4)}
    source = FileSource(tmp_path)
    previous: ResourceSet | None = None
    adopted = 0
    for _ in range(25):
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        resources = source.load()
        fresh = from_nothing(resources)
        if previous is not None and resources is not previous:  # the same set: nothing changed
            assert resources.changes is not None and resources.changes.since(previous) is not None
            both = previous.items.keys() | resources.items.keys()
            assert resources.changes.keys == {k for k in both if previous.items.get(k) is not resources.items.get(k)}
        kinds = {key.kind for key in resources.items} | {"AIGatewayRoute", "EndpointSlice"}
        for kind in kinds:
            assert list(resources.of_kind(kind)) == list(fresh.of_kind(kind)), kind
        targets = [ResourceKey("AIServiceBackend", "default", n) for n in NAMES]
        for target in targets:
            policies = resources.policies_for("BackendSecurityPolicy", target)
            assert policies == fresh.policies_for("BackendSecurityPolicy", target)
        for service in NAMES:
            labelled = resources.with_label("EndpointSlice", "kubernetes.io/service-name", "default", service)
            assert labelled == fresh.with_label("EndpointSlice", "kubernetes.io/service-name", "default", service)
        if previous is not None:
            adopted += sum(resources.of_kind(k) is not None and kinds_kept(previous, resources, k) for k in kinds)
        previous = resources
        files[rng.choice(list(files))] = random_file(rng)  # one file rewritten: some documents kept
    assert adopted  # the previous set's indexes were taken, not only built again


def kinds_kept(previous: ResourceSet, resources: ResourceSet, kind: str) -> bool:
    """Whether the set holds the previous set's very index of a kind (it did not change)."""
    return bool(resources._by_kind.get(kind)) and resources._by_kind.get(kind) is previous._by_kind.get(kind)


def broken_doc(name: str) -> str:
    """A document that names its resource but does not validate."""
    return f"""
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}, namespace: default}}
spec: {{schema: {{name: OpenAI}}, bogus: 1}}
"""


@pytest.mark.parametrize("seed", range(12))
def test_a_set_built_by_file_is_the_set_built_from_all_documents(seed: int) -> None:
    rng = random.Random(seed)
    files: dict[str, tuple[Decoded, ...]] = {}

    def rewrite(name: str) -> None:
        text = random_file(rng)
        if rng.random() < 0.15:
            text += broken_doc(rng.choice(NAMES))
        files[name] = tuple(decode_text(text, name))

    for i in range(4):
        rewrite(f"f{i}.yaml")
    by_file: ResourceSet | None = None
    general: ResourceSet | None = None
    fast = 0
    for _ in range(30):
        stale = {files["f0.yaml"][0].key} if files["f0.yaml"] and rng.random() < 0.1 else set()
        stale.discard(None)
        documents = list(files.values())
        after = build_resource_set_by_file(documents, (), stale, by_file)
        expected = build_resource_set([d for file in documents for d in file], (), stale, general)
        assert after.items == expected.items
        assert (after.bad_keys, after.stale_keys, after.diagnostics) == (
            expected.bad_keys,
            expected.stale_keys,
            expected.diagnostics,
        )
        if by_file is not None and after is not by_file:  # the same set: nothing changed
            assert after.changes is not None and after.changes.since(by_file) is not None
            both = by_file.items.keys() | after.items.keys()
            assert after.changes.keys == {k for k in both if by_file.items.get(k) is not after.items.get(k)}
        for kind in {key.kind for key in after.items}:
            assert list(after.of_kind(kind)) == list(expected.of_kind(kind))
        fast += after.by_file is not None
        by_file, general = after, expected
        rewrite(rng.choice(list(files)))
    assert fast  # some loads took the by-file path (and some the general one: broken documents)


def test_an_unchanged_file_keeps_its_items_and_a_set_by_file_reports_only_the_edited_ones() -> None:
    first = tuple(decode_text(route("r1", {"m": "b"}) + backend("b", 8000), "a.yaml"))
    second = tuple(decode_text(route("r2", {"m": "b"}), "b.yaml"))
    before = build_resource_set_by_file([first, second])
    assert before.by_file is not None
    edited = tuple(decode_text(route("r2", {"m2": "b"}), "b.yaml"))
    after = build_resource_set_by_file([first, edited], previous=before)
    assert after.by_file is not None and after.changes is not None
    assert after.changes.keys == {ResourceKey("AIGatewayRoute", "default", "r2")}
    assert after.by_file[id(first)] is before.by_file[id(first)]
    # The same key in two files: the general path refuses both, as it always did.
    twice = build_resource_set_by_file([first, tuple(decode_text(route("r1", {"m": "b"}), "c.yaml"))], previous=after)
    assert twice.by_file is None
    assert ResourceKey("AIGatewayRoute", "default", "r1") in twice.bad_keys


def test_an_edited_file_keeps_the_items_of_its_unchanged_documents(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(route("r1", {"m": "b"}) + route("r2", {"m2": "b"}))
    source = FileSource(tmp_path)
    before = source.load()
    (tmp_path / "routes.yaml").write_text(route("r1", {"m": "b"}) + route("r2", {"m3": "b"}))
    after = source.load()
    assert after.by_file is not None and after.changes is not None
    assert after.changes.keys == {ResourceKey("AIGatewayRoute", "default", "r2")}
    r1 = ResourceKey("AIGatewayRoute", "default", "r1")
    assert after.items[r1] is before.items[r1]  # what was compiled from it is reused


def test_a_load_that_changes_nothing_is_the_same_set(tmp_path: Path) -> None:
    """A load after an event that changed nothing (a file saved as it was, a Kubernetes event for
    an object as it was) returns the previous set itself: nothing is compiled again."""
    (tmp_path / "routes.yaml").write_text("# a comment\n" + route("r1", {"m": "b"}))
    source = FileSource(tmp_path)
    first = source.load()
    (tmp_path / "routes.yaml").write_text("# another comment\n" + route("r1", {"m": "b"}))
    assert source.load() is first
    (tmp_path / "routes.yaml").write_text(route("r1", {"m": "b2"}))
    assert source.load() is not first


@asynccontextmanager
async def _watching(source: FileSource, on_change: Callable[[ResourceSet], Awaitable[None]]) -> AsyncIterator[None]:
    """source.watch(on_change) running, set up (its first 0.3 s waited), and stopped at the end."""
    stop = asyncio.Event()
    watcher = asyncio.create_task(source.watch(on_change, debounce_ms=20, stop=stop))
    try:
        await asyncio.sleep(0.3)
        yield
        assert not watcher.done()
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10)


async def test_an_edit_between_the_load_and_the_watch_is_read_once_the_watch_is_armed(tmp_path: Path) -> None:
    """serve and run start the watch after their first apply: an edit made meanwhile was never
    seen (CI met one: serve withheld a Gateway whose fix was written as it started). The watch
    looks once it is armed; nothing changed, it reads nothing."""
    (tmp_path / "a.yaml").write_text(backend("b", 9000))
    source, seen = FileSource(tmp_path), []

    async def on_change(resources: ResourceSet) -> None:
        seen.append(resources)

    source.load()
    async with _watching(source, on_change):
        pass
    assert seen == []  # nothing changed since the load
    (tmp_path / "a.yaml").write_text(backend("b", 9001))  # after the load, before the watch
    async with _watching(source, on_change):
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
    [caught] = seen
    assert caught.get("Backend", "default", "b").resource.spec.endpoints[0].ip.port == 9001


async def test_the_watch_outlives_a_reload_that_fails(tmp_path: Path) -> None:
    """A reload that raises (a defect, not a YAML error, which is a diagnostic) is logged and the
    watch goes on: it used to end the watcher's task, and no later edit was ever applied."""
    (tmp_path / "a.yaml").write_text(backend("b", 9000))
    source, seen = FileSource(tmp_path), []

    async def on_change(resources: ResourceSet) -> None:
        seen.append(resources)
        if len(seen) == 1:
            raise RuntimeError("a defect in applying the change")

    async with _watching(source, on_change):
        for port, count in ((9001, 1), (9002, 2)):
            await asyncio.sleep(0.3)  # the previous change taken
            (tmp_path / "a.yaml").write_text(backend("b", port))
            for _ in range(300):
                if len(seen) >= count:
                    break
                await asyncio.sleep(0.05)
        assert len(seen) == 2


async def test_a_read_that_hangs_does_not_stop_the_event_loop(tmp_path: Path, monkeypatch) -> None:
    """The watch reads in a thread: while a read does not return (a hung network mount, here a
    load held on an Event) the event loop goes on (the xDS streams keep the last good
    configuration), and the change is applied once the read returns. (A read on the loop would
    hold it for HUNG_S: the loop's ticks would come late and the change before them.)"""
    import threading
    import time

    hung_s = 5.0
    (tmp_path / "a.yaml").write_text(backend("b", 9000))
    source, seen = FileSource(tmp_path), []
    source.load()
    release, reading = threading.Event(), threading.Event()
    load = source.load

    def hung_load() -> ResourceSet:
        reading.set()
        release.wait(hung_s)
        return load()

    monkeypatch.setattr(source, "load", hung_load)

    async def on_change(resources: ResourceSet) -> None:
        seen.append(resources)

    async with _watching(source, on_change):
        try:
            (tmp_path / "a.yaml").write_text(backend("b", 9001))
            deadline = time.monotonic() + 15
            while not reading.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert reading.is_set(), "the change was never read"
            started = time.monotonic()
            for _ in range(10):  # the loop runs while the read hangs
                await asyncio.sleep(0.01)
            assert time.monotonic() - started < hung_s / 2 and not seen
            release.set()
            while not seen and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert "9001" in str(seen[0].get("Backend", "default", "b").resource.spec)
        finally:
            release.set()


def test_a_read_that_never_returns_does_not_hold_the_process_exit(tmp_path: Path) -> None:
    """The read's thread is a daemon: a process whose watch stops while a read hangs exits (the
    loop's default executor is joined at exit, and a read there kept the process forever)."""
    import subprocess
    import sys

    (tmp_path / "a.yaml").write_text(backend("b", 9000))
    script = f"""
import asyncio, threading
from pathlib import Path
from aigw_xds.sources.files import FileSource

async def main():
    source = FileSource(Path({str(tmp_path)!r}))
    source.load()
    reading = threading.Event()
    def hung_load():
        reading.set()
        threading.Event().wait()  # never returns
    source.load = hung_load
    async def on_change(resources):
        pass
    stop = asyncio.Event()
    watcher = asyncio.create_task(source.watch(on_change, debounce_ms=20, stop=stop))
    await asyncio.sleep(0.3)
    (Path({str(tmp_path)!r}) / "a.yaml").write_text("# changed")
    while not reading.is_set():
        await asyncio.sleep(0.02)
    watcher.cancel()

asyncio.run(main())
print("exited")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "exited" in done.stdout, done.stderr[-2000:]


async def test_a_watch_of_one_file_reloads_for_that_file_only(tmp_path: Path) -> None:
    """PATH a file: an edit of it is a reload; an edit of another YAML file beside it is not."""
    (tmp_path / "a.yaml").write_text(backend("b", 9000))
    (tmp_path / "other.yaml").write_text(backend("o", 9000))
    source, seen = FileSource(tmp_path / "a.yaml"), []

    async def on_change(resources: ResourceSet) -> None:
        seen.append(resources)

    async with _watching(source, on_change):
        (tmp_path / "other.yaml").write_text(backend("o", 9001))
        await asyncio.sleep(0.5)
        assert not seen
        (tmp_path / "a.yaml").write_text(backend("b", 9001))
        for _ in range(300):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert len(seen) == 1 and "9001" in str(seen[0].get("Backend", "default", "b").resource.spec)


async def test_what_a_load_in_its_thread_raises_reaches_the_one_who_waits(tmp_path: Path) -> None:
    """Even StopIteration, which a future refuses (set_exception raised inside the loop's callback,
    and the watch waited forever)."""

    source = FileSource(tmp_path)
    for raised, expected in ((ValueError("bad"), ValueError), (StopIteration("x"), RuntimeError)):

        def load(raised: BaseException = raised) -> ResourceSet:
            raise raised

        source.load = load  # type: ignore[method-assign]
        with pytest.raises(expected):
            await asyncio.wait_for(source._load_in_thread(), 10)


async def test_a_file_deleted_and_written_again_at_once_is_read_as_an_edit(tmp_path: Path) -> None:
    """From a platform team's trial: `rm gw.yaml; cp backup gw.yaml` (or a checkout) removed the
    Gateway for a moment, and its Envoys dropped their listeners. A deletion is read once the file
    has stayed away for the grace; one that stays away is a removal."""
    (tmp_path / "a.yaml").write_text(backend("b", 9000))
    source, seen = FileSource(tmp_path), []

    async def on_change(resources: ResourceSet) -> None:
        seen.append(resources)

    async with _watching(source, on_change):
        (tmp_path / "a.yaml").unlink()
        await asyncio.sleep(0.05)
        (tmp_path / "a.yaml").write_text(backend("b", 9001))
        for _ in range(300):
            if seen and "9001" in str(seen[-1].items):
                break
            await asyncio.sleep(0.05)
        assert all(r.get("Backend", "default", "b") is not None for r in seen), "read as removed"
        assert "9001" in str(seen[-1].get("Backend", "default", "b").resource.spec)
        (tmp_path / "a.yaml").unlink()
        for _ in range(300):
            if seen[-1].get("Backend", "default", "b") is None:
                break
            await asyncio.sleep(0.05)
        assert seen[-1].get("Backend", "default", "b") is None


def _key_file_secret(path: str) -> str:
    """An APIKey policy's Secret whose key is read from `path` (relative to the YAML file)."""
    return f"""
---
apiVersion: v1
kind: Secret
metadata:
  name: k
  annotations: {{substitution.aigw.run/file/apiKey: {path}}}
stringData: {{apiKey: "********"}}
"""


def _secret_value(resources: ResourceSet) -> str:
    loaded = resources.get("Secret", "default", "k")
    assert loaded is not None
    return str(loaded.resource.value("apiKey"))


async def test_a_key_replaced_in_its_file_is_read_again_and_the_watch_sees_it(tmp_path: Path) -> None:
    """From a new-user trial: a key written anew into the file a Secret's substitution reads was not
    seen (neither the watch nor a read looked at it: the YAML file, unchanged, was not decoded
    again), so a rotated key never took effect until the YAML was edited."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "openai.txt").write_text("sk-first")
    (tmp_path / "secret.yaml").write_text(_key_file_secret("keys/openai.txt"))
    source, seen = FileSource(tmp_path), []
    assert _secret_value(source.load()) == "sk-first"
    (tmp_path / "keys" / "openai.txt").write_text("sk-second")
    assert _secret_value(source.load()) == "sk-second"

    async def on_change(resources: ResourceSet) -> None:
        seen.append(resources)

    async with _watching(source, on_change):
        (tmp_path / "keys" / "openai.txt").write_text("sk-third")
        for _ in range(300):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen and _secret_value(seen[-1]) == "sk-third"
