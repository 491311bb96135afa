"""`aigw-xds run` as a user runs it: a subprocess on the quickstart example, the official openai SDK
as the client, an edit while it runs, and a clean shutdown with no orphan processes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from openai import APIStatusError, NotFoundError, OpenAI

from .harness.control_plane import run_command, stop_run, wait_run_ready
from .harness.processes import accepting, free_port, json_lines, launch, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "quickstart.yaml"


def _quickstart(listen: int) -> str:
    """The quickstart example on the given listener port, its fake providers on free ports."""
    text = EXAMPLE.read_text().replace("port: 1975", f"port: {listen}")
    return text.replace("port: 19080", f"port: {free_port()}").replace("port: 19081", f"port: {free_port()}")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    return pids + [c for p in pids for c in _children(p)]


def test_run_quickstart_serves_the_openai_sdk_reloads_and_shuts_down_cleanly(tmp_path: Path):
    listen = free_port()
    text = _quickstart(listen)
    config = tmp_path / "quickstart.yaml"
    config.write_text(text)
    log = tmp_path / "run.log"
    temp = tmp_path / "tmp"  # the run's temporary files: none may be left behind
    temp.mkdir()
    admin = free_port()
    process = launch(run_command(str(tmp_path), admin_port=admin), log, {**os.environ, "TMPDIR": str(temp)})
    try:
        wait_run_ready(process, log)
        ready = next(line for line in log.read_text().splitlines() if line.startswith("aigw-xds ready:"))
        assert f"http://localhost:{listen}" in ready
        assert "gpt-4o-mini" in log.read_text() and "local-a (0:1)" in log.read_text()
        children = _children(process.pid)
        assert children, "Envoy runs as a child of aigw-xds run"

        client = OpenAI(base_url=f"http://127.0.0.1:{listen}/v1", api_key="client-key", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content and reply.model == "gpt-4o-mini"
        override = client.chat.completions.create(model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}])
        assert override.model == "llama3.1:8b"  # modelNameOverride reached the backend
        assert sorted(m.id for m in client.models.list()) == ["gpt-4o-mini", "llama-3.1-8b"]

        config.write_text(text.replace("value: gpt-4o-mini", "value: gpt-4.1-nano"))

        def renamed() -> bool:
            reply = client.chat.completions.create(model="gpt-4.1-nano", messages=[{"role": "user", "content": "x"}])
            return reply.model == "gpt-4.1-nano"

        wait_for(renamed, timeout=30, what="edited model served")
        # what the edit changed in the model table (the console is where a developer looks)
        changed = (
            r"^aigw-xds: the model table changed:\n"
            r"  - gpt-4o-mini +local-a \(0:1\)\n  \+ gpt-4\.1-nano +local-a \(0:1\)$"
        )
        wait_for(lambda: re.search(changed, log.read_text(), re.M), what="the changed rows")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/listeners", timeout=5) as response:
            assert f"::127.0.0.1:{listen}" in response.read().decode()  # loopback only by default
        # The access line README shows: method, path, status, model, backend, latency, usage.
        line = (
            r"^access: POST /v1/chat/completions 200 model=gpt-4o-mini backend=local-a \d+ms "
            r"gen_ai\.response\.model=gpt-4o-mini gen_ai\.usage\.input_tokens=\d+ gen_ai\.usage\.output_tokens=\d+$"
        )
        wait_for(lambda: re.search(line, log.read_text(), re.M), timeout=10, what="access line")
        # The Gateway's port edited to one something else holds: refused before Envoy sees it (Envoy
        # would drop the listener it serves and fail to bind the new one), the error names the
        # file, the Gateway, the field and the port, and the old port keeps serving.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            config.write_text(  # the model renamed too: which configuration serves shows
                text.replace("value: gpt-4o-mini", "value: gpt-4.1-mini").replace(f"port: {listen}", f"port: {taken}")
            )
            refused = (
                f"error: {config}#2: Gateway default/quickstart spec.listeners[0].port: port {taken} on 127.0.0.1: "
                "address already in use (the configuration served before keeps serving: free the port or choose "
                "another, and save again)"
            )
            wait_for(lambda: refused in log.read_text(), what="the busy port named")
            assert renamed(), "the last good configuration keeps serving on the old port"
            with pytest.raises(NotFoundError):  # the refused configuration's model is not served
                client.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "x"}])
            assert f"aigw-xds listening: http://localhost:{taken}" not in log.read_text()
        # The Gateway's port edited: served there, and said (the ready line's URL is no longer true).
        moved = free_port()
        config.write_text(
            text.replace("value: gpt-4o-mini", "value: gpt-4.1-nano").replace(f"port: {listen}", f"port: {moved}")
        )
        wait_for(lambda: f"aigw-xds listening: http://localhost:{moved}" in log.read_text(), what="new listener line")
        moved_client = OpenAI(base_url=f"http://127.0.0.1:{moved}/v1", api_key="client-key", max_retries=0)
        wait_for(
            lambda: sorted(m.id for m in moved_client.models.list()) == ["gpt-4.1-nano", "llama-3.1-8b"], timeout=30
        )
        # The file deleted: said on the console (from a new-user trial: only info lines said it), and
        # when it is back, what it serves again.
        config.unlink()
        gone = (
            f"aigw-xds: Gateway default/quickstart is no longer in {config.parent}: nothing is served until it is back"
        )
        wait_for(lambda: gone in log.read_text(), what="the Gateway gone")
        config.write_text(text.replace(f"port: {listen}", f"port: {moved}"))
        wait_for(lambda: log.read_text().count(f"aigw-xds listening: http://localhost:{moved}") == 2, what="back")
        wait_for(lambda: "gpt-4o-mini" in [m.id for m in moved_client.models.list()], timeout=30)
        on_disk = [p for p in temp.rglob("*") if p.is_file() and p.stat().st_size > 0 and "stdout" in p.name]
        assert on_disk == [], "the access log goes to the console, not to a file that grows"
    finally:
        stop_run(process, log)
    assert process.returncode == 0, log.read_text()[-2000:]
    assert list(temp.iterdir()) == [], "run removes its temporary files (Envoy's bootstrap and output)"
    time.sleep(0.5)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()]
    assert alive == [], f"orphans left behind: {alive}"


def test_the_fake_providers_follow_an_edit_of_their_backends(tmp_path: Path):
    """From a new-user trial: a fake Backend's port edited while run ran was routed there, but the fake
    stayed on the old port (503s, and nothing said). The fakes are started anew as edited, and said."""
    listen, fake_port, moved = free_port(), free_port(), free_port()
    text = EXAMPLE.read_text().replace("port: 1975", f"port: {listen}")
    text = text.replace("port: 19080", f"port: {fake_port}").replace("port: 19081", f"port: {free_port()}")
    config = tmp_path / "quickstart.yaml"
    config.write_text(text)
    log = tmp_path / "run.log"
    process = launch(run_command(str(tmp_path), admin_port=free_port()), log, dict(os.environ))
    try:
        wait_run_ready(process, log)
        client = OpenAI(base_url=f"http://127.0.0.1:{listen}/v1", api_key="client-key", max_retries=0)
        hi = [{"role": "user", "content": "hi"}]
        assert client.chat.completions.create(model="gpt-4o-mini", messages=hi).model == "gpt-4o-mini"
        config.write_text(text.replace(f"port: {fake_port}", f"port: {moved}"))
        said = "aigw-xds: fake providers started again as edited: openai on 127.0.0.1:"
        wait_for(lambda: said in log.read_text() and f":{moved}" in log.read_text(), what="the fakes started anew")

        def answered() -> bool:
            try:
                return client.chat.completions.create(model="gpt-4o-mini", messages=hi).model == "gpt-4o-mini"
            except APIStatusError:
                return False

        wait_for(answered, timeout=30, what="the moved fake answers")
        # Only local-b's annotation removed: no Envoy resource changes, nothing is published, yet the
        # fake it asked for stops (a new-user trial saw it serve on until run was restarted).
        annotated = "name: local-b\n  namespace: default\n  annotations:\n    aigw-xds.dev/fake-provider: openai\n"
        assert annotated in text
        edited = text.replace(f"port: {fake_port}", f"port: {moved}").replace(
            annotated, "name: local-b\n  namespace: default\n"
        )
        config.write_text(edited)
        wait_for(lambda: log.read_text().count(said) == 2, what="the fakes started again without local-b's")
        last = log.read_text().rsplit(said, 1)[1].splitlines()[0]
        assert last == f"{moved}", last  # local-a's fake alone
        with pytest.raises(APIStatusError) as refused:
            client.chat.completions.create(model="llama-3.1-8b", messages=hi)
        assert refused.value.status_code == 503
        # An edit not served (a misspelt policy target: its fleet kept as it was) leaves the fakes as
        # they serve it: from a new-user trial, local-a's fake started again taking requests without
        # a key while the gateway still sent one.
        target = "      kind: AIServiceBackend\n      name: local-a\n"
        assert target in edited
        config.write_text(edited.replace(target, target.replace("local-a", "local-aa")))
        wait_for(lambda: "last_good_configuration_kept" in log.read_text(), what="the edit kept out")
        time.sleep(1)  # (what follows a reload runs on the loop's next turn)
        assert log.read_text().count(said) == 2
        assert client.chat.completions.create(model="gpt-4o-mini", messages=hi).model == "gpt-4o-mini"
        keyless = OpenAI(base_url=f"http://127.0.0.1:{moved}/v1", api_key="not-the-key", max_retries=0)
        with pytest.raises(APIStatusError) as unkeyed:
            keyless.chat.completions.create(model="gpt-4o-mini", messages=hi)
        assert unkeyed.value.status_code == 401
    finally:
        stop_run(process, log)
    assert process.returncode == 0, log.read_text()[-2000:]


def _refused_run(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`aigw-xds run PATH FLAGS`, which fails before serving (Envoy's admin on a free port unless
    the flags name one)."""
    admin = [] if "--admin-port" in flags else ["--admin-port", str(free_port())]
    command = [sys.executable, "-m", "aigw_xds", "run", str(path), *admin, *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_run_reports_a_port_in_use_in_one_line(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "q.yaml").write_text(_quickstart(port))
        result = _refused_run(tmp_path)
    assert result.returncode == 1
    # As an edit's refusal says it (from a new-user trial: the start named no file or field).
    said = (
        f"aigw-xds: error: {tmp_path / 'q.yaml'}#2: Gateway default/quickstart spec.listeners[0].port: "
        f"port {port} on 127.0.0.1: address already in use (free the port or choose another)"
    )
    assert said in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        # Envoy's admin took the listener's port: run said ready, and the SDK met the admin's 404s.
        (
            ["--admin-port", "{port}"],
            "--admin-port {port} is also the port of a listener of Gateway default/quickstart",
        ),
        # run's xDS server took it: the listener's port was "in use (free the port...)", naming no flag.
        (["--xds-port", "{port}"], "--xds-port {port} is also the port of a listener of Gateway default/quickstart"),
        # Envoy's admin on any port: run waited for it on port 0, then "envoy not ready after 30.0s: ".
        (["--admin-port", "0"], "argument --admin-port: '0' is not a port (1-65535)"),
        (["--listen-address", "192.0.2.1"], "--listen-address 192.0.2.1: 192.0.2.1 is not an address of this machine"),
        (["--admin-port", "24950", "--xds-port", "24950"], "--admin-port and --xds-port are both 24950"),
    ],
)
def test_run_refuses_ports_and_addresses_that_cannot_serve_at_once(tmp_path: Path, flags: list[str], said: str):
    """A new user's trial: each of these started, or waited, before failing (or did not fail)."""
    port = free_port()
    (tmp_path / "q.yaml").write_text(_quickstart(port))
    result = _refused_run(tmp_path, *(f.format(port=port) for f in flags))
    assert result.returncode in (1, 2)
    assert said.format(port=port) in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ({}, "{path}: a directory without YAML files (*.yaml, *.yml)"),
        ({"b.yaml": "kind: Secret\napiVersion: v1\nmetadata: {name: s}\nstringData: {k: v}\n"}, "no Gateway in {path}"),
    ],
)
def test_run_of_a_configuration_without_a_gateway_says_so_once(tmp_path: Path, written: dict[str, str], said: str):
    """It logged "waiting for Gateways", then exited with "no Gateway compiled" (a new user's trial)."""
    for name, text in written.items():
        (tmp_path / name).write_text(text)
    result = _refused_run(tmp_path)
    assert result.returncode == 1
    assert f"aigw-xds: error: {said.format(path=tmp_path)}" in result.stderr, result.stderr
    assert "waiting for Gateways" not in result.stderr + result.stdout


def test_run_of_a_configuration_that_does_not_compile_says_each_error_once(tmp_path: Path):
    """The errors are the refusal's list, not also log lines before it (a new user read each twice)."""
    text = _quickstart(free_port()).replace("name: OpenAI\n", "name: OpenAIX\n", 1)
    (tmp_path / "q.yaml").write_text(text)
    result = _refused_run(tmp_path)
    assert result.returncode == 1
    output = result.stderr + result.stdout
    assert "aigw-xds: error: no Gateway compiled:" in result.stderr, result.stderr
    assert output.count("spec.schema.name: Input should be 'OpenAI'") == 1, output
    # In JSON, each is a diagnostic event with its file and field, as README says, besides the error.
    command = [sys.executable, "-m", "aigw_xds", "--log-format", "json", "run", str(tmp_path)]
    command += ["--admin-port", str(free_port())]
    as_json = subprocess.run(command, capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in (as_json.stdout + as_json.stderr).splitlines() if line.startswith("{")]
    said = [e for e in events if e.get("event") == "diagnostic" and e.get("field") == "spec.schema.name"]
    assert len(said) == 1 and said[0]["file"].endswith("q.yaml"), events
    assert as_json.returncode == 1 and any(e.get("event") == "error" for e in events)


def test_run_with_the_json_log_format_writes_one_json_object_a_line(tmp_path: Path):
    """`aigw-xds --log-format json run` (README): its own messages, Envoy's access log and Envoy's
    warnings are JSON events like its log's, on stdout and stderr alike; the ready event names
    the listener, the access event carries Envoy's record."""
    listen, admin = free_port(), free_port()
    (tmp_path / "quickstart.yaml").write_text(_quickstart(listen))
    # A second route with a misspelt field: left out, and said so beside the model table.
    (tmp_path / "broken.yaml").write_text(
        "apiVersion: aigateway.envoyproxy.io/v1beta1\nkind: AIGatewayRoute\nmetadata: {name: broken}\n"
        "spec:\n  parentRefs: [{name: quickstart}]\n  rulez: []\n"
    )
    log = tmp_path / "run.log"  # stdout and stderr
    command = [*run_command(str(tmp_path), admin_port=admin, json_log=True), "--translator-workers", "1"]
    process = launch(command, log, dict(os.environ))
    try:
        wait_run_ready(process, log)
        client = OpenAI(base_url=f"http://127.0.0.1:{listen}/v1", api_key="client-key", max_retries=0)
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert reply.model == "gpt-4o-mini"

        def access() -> list[dict]:
            return [e for e in json_lines(log) if e.get("event") == "access"]

        [record] = [e["record"] for e in wait_for(access, timeout=10, what="access event")]
    finally:
        stop_run(process, log)
    lines = log.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line, or a ValueError naming the first that is not
    assert all(isinstance(e, dict) and e["event"] and e["level"] and e["timestamp"] for e in events), lines
    assert not [line for line in lines if "aigw-xds:" in line or "access:" in line or line.startswith("envoy:")]
    by_name = {e["event"]: e for e in events}
    assert {"starting", "starting_envoy", "ready", "models", "access", "shutting_down"} <= set(by_name)
    ready = by_name["ready"]
    assert ready["listeners"] == [f"http://localhost:{listen}"] and ready["fleet"] == "default/quickstart"
    assert ready["admin"] == f"http://127.0.0.1:{admin}" and ready["xds"].startswith("127.0.0.1:")
    errors = by_name["serving_with_errors"]["errors"]
    assert any("broken.yaml#1: AIGatewayRoute default/broken spec.rulez: unknown field" in e for e in errors), errors
    rows = by_name["models"]["rows"]
    assert {"model": "gpt-4o-mini", "backends": [{"backend": "local-a", "priority": 0, "weight": 1}]} in rows
    # Envoy's access-log record as Envoy wrote it: the request's model and status among its fields
    assert record["gen_ai.request.model"] == "gpt-4o-mini" and record["response_code"] == 200
    assert record["method"] == "POST" and record["path"] == "/v1/chat/completions"
    assert record["gen_ai.provider.name"].startswith("default/local-a/")
    # Envoy's warnings and errors are envoy events at their level, its line kept; once run stops it,
    # its warnings (the SIGTERM it caught) are info events (a clean shutdown raises no alert).
    stopping = next(i for i, e in enumerate(events) if e["event"] == "shutting_down")
    before = [e for e in events[:stopping] if e["event"] == "envoy"]
    after = [e for e in events[stopping:] if e["event"] == "envoy"]
    assert all(f"][{e['level']}][" in e["line"] for e in before), before
    assert after and all(e["level"] == "info" and "][warning][" in e["line"] for e in after), after


@pytest.mark.parametrize("signal_name", ["SIGHUP", "SIGKILL"])
def test_run_closed_with_its_terminal_or_killed_leaves_nothing_running(tmp_path: Path, signal_name: str):
    """Its terminal closed (SIGHUP) stops `run` as Ctrl-C does, temporary files removed; killed
    outright (SIGKILL), it cannot clean up, but its Envoy (in a session of its own, not in run's
    process group) still goes with it and frees the ports."""
    import signal

    listen = free_port()
    (tmp_path / "quickstart.yaml").write_text(_quickstart(listen))
    log = tmp_path / "run.log"
    temp = tmp_path / "tmp"
    temp.mkdir()
    admin = free_port()
    process = launch(run_command(str(tmp_path), admin_port=admin), log, {**os.environ, "TMPDIR": str(temp)})
    try:
        wait_run_ready(process, log)
        [envoy] = [pid for pid in _children(process.pid) if "envoy" in Path(f"/proc/{pid}/cmdline").read_text()]
        process.send_signal(getattr(signal, signal_name))
        code = process.wait(timeout=30)
        wait_for(lambda: not Path(f"/proc/{envoy}").exists() or "Z" in _state(envoy), timeout=30, what="Envoy gone")
        wait_for(lambda: not accepting(admin) and not accepting(listen), timeout=30, what="ports freed")
    finally:
        if process.poll() is None:
            process.kill()
    if signal_name == "SIGHUP":
        assert code == 0, log.read_text()[-2000:]
        assert "shutting down" in log.read_text()
        assert not list(temp.iterdir()), list(temp.iterdir())


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize(
    "moment",
    ["_pydantic_core", "starting the control plane", "translator_listening", "aigw_translator", "starting Envoy"],
    ids=["while-importing", "while-loading", "translator-started", "worker-importing", "envoy-starting"],
)
def test_ctrl_c_while_run_starts_exits_quietly_and_leaves_nothing_running(tmp_path: Path, moment: str):
    """Ctrl-C at any moment of the start (its modules loading, the first compile, the servers
    starting, Envoy starting): no traceback, exit status 130 (while Python loads its modules; 0 once
    run has begun), and no process it started left behind (found by a mark in their environment,
    which children inherit). Caught by a new user: a traceback from the module imports, and gRPC's
    InvalidStateError from a server whose start was cut short; by review: a translator worker still
    importing got the terminal's Ctrl-C too (two workers here, whatever the host's cores)."""
    import uuid

    from .harness.processes import interrupt

    (tmp_path / "quickstart.yaml").write_text(_quickstart(free_port()))
    log = tmp_path / "run.log"
    mark = f"AIGW_TEST_RUN={uuid.uuid4()}"
    command = [*run_command(str(tmp_path), admin_port=free_port()), "--translator-workers", "3"]
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    process = launch(command, log, env, terminal=True)
    try:
        # The first moment: a module of its imports loaded (pydantic's core, mapped into the process);
        # Ctrl-C before, while Python itself starts, is Python's to report.
        # A worker's start: a process of its runs aigw_translator, and has loaded gRPC's core.
        def reached() -> bool:
            if moment == "aigw_translator":
                workers = [pid for pid in _marked(mark.encode()) if moment in _cmdline(pid)]
                return any("cygrpc" in _maps(pid) for pid in workers) or process.poll() is not None
            said = Path(f"/proc/{process.pid}/maps").read_text() if moment == "_pydantic_core" else log.read_text()
            return moment in said or process.poll() is not None

        wait_for(reached, interval=0.005, what=moment)
        interrupt(process)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 30 s after Ctrl-C:\n{log.read_text()[-3000:]}") from None
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert code in (130, 0), text
    for trace in ("Traceback", "Exception ignored", "exception was never retrieved", "InvalidStateError"):
        assert trace not in text, text
    wait_for(lambda: _marked(mark.encode()) == [], timeout=10, what="every process it started gone")


@pytest.mark.parametrize(
    "moment", ["starting the control plane", "starting Envoy"], ids=["while-loading", "envoy-starting"]
)
def test_sigterm_while_run_starts_stops_it_gracefully(tmp_path: Path, moment: str):
    """SIGTERM to run alone (`docker stop`, a supervisor) while it starts: status 0 and "shutting
    down", as once ready, and nothing it started left behind (the signal used to kill it outright:
    status -15, its workers and Envoy left to notice on their own)."""
    import signal
    import uuid

    (tmp_path / "quickstart.yaml").write_text(_quickstart(free_port()))
    log = tmp_path / "run.log"
    mark = f"AIGW_TEST_RUN={uuid.uuid4()}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    process = launch(run_command(str(tmp_path), admin_port=free_port()), log, env)
    try:
        wait_for(lambda: moment in log.read_text() or process.poll() is not None, interval=0.005, what=moment)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert code == 0, text
    assert "shutting down" in text and "Traceback" not in text, text
    wait_for(lambda: _marked(mark.encode()) == [], timeout=10, what="every process it started gone")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def _marked(mark: bytes) -> list[int]:
    """The live processes whose environment holds `mark`."""
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0") and _state(int(environ.parent.name)) != "Z":
                pids.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids


def test_run_of_a_gateway_the_configuration_does_not_have_says_so(tmp_path: Path):
    """`--gateway default/nope` was said to have not compiled (a new-user trial), as if it were there."""
    (tmp_path / "q.yaml").write_text(_quickstart(free_port()))
    result = _refused_run(tmp_path, "--gateway", "default/nope")
    assert result.returncode == 1
    assert f"gateway default/nope is not in {tmp_path} (compiled: default/quickstart)" in result.stderr, result.stderr
