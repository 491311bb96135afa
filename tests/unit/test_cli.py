"""The command line: validate, translate and bootstrap as a user runs them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from aigw_xds.cli import main
from aigw_xds.envoy.process import envoy_binary
from tests.resource_text import api_key, backend, gateway, route


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "gw.yaml").write_text(
        gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk-secret-1")
    )
    return tmp_path


def test_validate_ok_and_status(config: Path, capsys):
    assert main(["validate", "--config", str(config), "--status"]) == 0
    out = capsys.readouterr().out
    assert "1 Gateway compiled: default/gw; 0 errors" in out
    assert "status: AIGatewayRoute default/r: Accepted=True" in out


@pytest.mark.parametrize("command", ["validate", "translate"])
def test_path_is_given_as_an_argument_or_with_config(config: Path, capsys, command: str):
    """`validate PATH` and `validate --config PATH` (as `run PATH`) say the same; both, or neither,
    is a usage error naming the arguments."""
    assert main([command, str(config)]) == 0
    positional = capsys.readouterr().out
    assert main([command, "--config", str(config)]) == 0
    assert capsys.readouterr().out == positional and positional
    for wrong, said in (([str(config), "--config", str(config)], "not allowed with"), ([], "one of the arguments")):
        with pytest.raises(SystemExit) as exit_:
            main([command, *wrong])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_serve_takes_a_path_or_kubernetes_not_both(config: Path, capsys):
    for wrong, said in (([str(config), "--kubernetes"], "not allowed with"), ([], "PATH --config --kubernetes")):
        with pytest.raises(SystemExit) as exit_:
            main(["serve", *wrong])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_serve_refuses_tls_flags_that_would_not_make_tls(config: Path, tmp_path: Path, capsys):
    """A platform team's trial: --tls-client-ca alone served plaintext without a word, --tls-cert
    without --tls-key ended in a traceback, and a key of another certificate was reported as a
    port that could not be bound. Each is now one line naming the flags or the files."""
    from tests.e2e.harness.certs import CertificateAuthority

    ca = CertificateAuthority()
    (tmp_path / "ca.crt").write_text(ca.pem)
    cert, key = ca.issue("aigw-xds").write(tmp_path, "server")
    other_cert, _ = ca.issue("other").write(tmp_path, "other")
    cases = [
        (["--tls-client-ca", str(tmp_path / "ca.crt")], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", str(cert)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(other_cert), "--tls-key", str(key)], f"{other_cert} with --tls-key {key}: the key is not"),
        (["--tls-cert", str(cert), "--tls-key", str(tmp_path / "gone.key")], f"--tls-key {tmp_path / 'gone.key'}: can"),
        (["--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(key)], f"-ca {key}: not a PEM CA"),
        (["--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", "/gone"], "--tls-client-ca /gone: cannot"),
        (["--tls-cert", str(tmp_path / "ca.crt"), "--tls-key", str(tmp_path / "ca.crt")], "not a PEM certificate and"),
    ]
    for flags, said in cases:
        assert main(["serve", str(config), "--listen", "127.0.0.1:18999", *flags]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aigw-xds: error:")]
        assert len(errors) == 1 and said in errors[0], (flags, errors)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--kubeconfig", "kube.yaml"], "--kubeconfig"),
        (["--controller-name", "example.com/x"], "--controller-name"),
        (["--watch-namespaces", "a,b"], "--watch-namespaces"),
        (["--leader-election-timings", "6,4,1"], "--leader-election-timings"),
        (["--tls-service-name", "cp"], "--tls-service-name"),
    ],
)
def test_serve_of_files_refuses_the_kubernetes_flags(config: Path, capsys, flags: list[str], named: str):
    """A platform team's trial: these were taken without a word by a serve of files (where they do
    nothing), while --tls-secret was refused."""
    assert main(["serve", str(config), "--listen", "127.0.0.1:18999", *flags]) == 1
    [error] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aigw-xds: error:")]
    assert error.startswith(f"aigw-xds: error: {named} needs --kubernetes (serving PATH, there is no API server")


def test_validate_reports_precise_errors_and_exits_1(config: Path, capsys):
    (config / "gw.yaml").write_text(
        (config / "gw.yaml").read_text().replace("{name: b, priority", "{name: nope, priority")
    )
    assert main(["validate", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    # The whole report on stdout (`validate > report.txt` held the summary and the warnings only).
    assert "gw.yaml#3: AIGatewayRoute default/r spec.rules[0].backendRefs[0].name: AIServiceBackend default/nope" in out
    assert out.splitlines()[-1] == "0 Gateways compiled: none; 1 error, 0 warnings" and err == ""
    # A document that does not decode is left out and the Gateway compiles without it: the summary
    # says how the two go together (it read as a contradiction to a new user).
    (config / "gw.yaml").write_text(
        (config / "gw.yaml").read_text().replace("{name: nope, priority", "{name: b, priority")
        + route("other", {"m2": "b"}).replace("weight: 1", "weight: heavy")
    )
    assert main(["validate", "--config", str(config)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "1 Gateway compiled: default/gw, without what the errors name; 1 error, 0 warnings"
    )


def test_validate_of_a_directory_without_yaml_files_is_an_error(tmp_path: Path, capsys):
    """A mistyped directory (or one holding .json, .txt) is not "nothing wrong": exit 1, one line."""
    (tmp_path / "notes.txt").write_text("kind: Gateway\n")
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"aigw-xds: error: {tmp_path}: a directory without YAML files (*.yaml, *.yml)\n"


def test_validate_of_empty_yaml_says_it_holds_no_resource(tmp_path: Path, capsys):
    """A new user's empty file got "0 Gateways compiled: none; 0 errors, 0 warnings" alone (and run
    refuses it): a warning says there was nothing to check; the summary stays."""
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert main(["validate", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    # In the report on stdout, counted (a second trial found it on stderr, and the summary said 0).
    assert (out, err) == (
        f"warning: {tmp_path} holds no resource (its YAML files are empty)\n"
        "0 Gateways compiled: none; 0 errors, 1 warning\n",
        "",
    )


def test_validate_says_a_missing_path_as_it_says_an_empty_directory(tmp_path: Path, capsys):
    """Both give nothing to check: one line, exit 1, no summary (a new user read the summary's
    "0 Gateways compiled: none" under the missing path's error as a second finding)."""
    assert main(["validate", str(tmp_path / "nope")]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"aigw-xds: error: {tmp_path / 'nope'}: no such file or directory\n")


def test_translate_prints_envoy_resources_without_secrets(config: Path, capsys):
    assert main(["translate", "--config", str(config), "--gateway", "default/gw", "-o", "json"]) == 0
    text = capsys.readouterr().out
    resources = json.loads(text)["default/gw"]
    assert [c["name"] for c in resources["CDS"]] == ["aigw-translator", "default/r/rule/0"]
    assert "sk-secret-1" not in text


def test_translate_shows_what_trusted_envoys_get_with_the_flag(config: Path, capsys):
    """--trusted-envoys: as `run`'s Envoy or one of a loopback or mTLS `serve` gets it (found by
    review: translate could only show the other case); the key is an SDS secret shown redacted."""
    args = ["translate", "--config", str(config), "--gateway", "default/gw", "-o", "json"]
    assert main([*args, "--trusted-envoys"]) == 0
    text = capsys.readouterr().out
    trusted = json.loads(text)["default/gw"]
    assert main(args) == 0
    untrusted = json.loads(capsys.readouterr().out)["default/gw"]
    assert untrusted["SDS"] == [] and trusted["SDS"], trusted["SDS"]
    assert "[redacted]" in json.dumps(trusted["SDS"]) and "sk-secret-1" not in text
    assert "credential_injector" in json.dumps(trusted["LDS"]) + json.dumps(trusted["CDS"])


def test_bootstrap_is_accepted_by_envoy(tmp_path: Path, capsys):
    for delta in (False, True):
        args = ["bootstrap", "--server", "127.0.0.1:18000", "--gateway", "default/gw", "-o", "json"]
        assert main([*args, "--delta"] if delta else args) == 0
        path = tmp_path / f"bootstrap-{delta}.json"
        path.write_text(capsys.readouterr().out)
        checked = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stderr[-2000:]
        assert json.loads(path.read_text())["dynamic_resources"]["ads_config"]["api_type"] == (
            "DELTA_GRPC" if delta else "GRPC"
        )


def test_serve_reports_a_port_in_use_and_exits_1(config: Path, capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", "--config", str(config), "--listen", f"127.0.0.1:{port}", "--translator-listen", ""])
    assert code == 1
    assert (
        f"aigw-xds: error: the xDS server cannot listen on 127.0.0.1:{port}: address already in use "
        "(choose another with --listen)" in capsys.readouterr().err
    )


@pytest.mark.parametrize("flag", ["--translator-listen", "--health-listen"])
def test_serve_names_the_flag_of_a_busy_translator_or_health_port(config: Path, capsys, flag: str):
    """The translator's default port (1063) or the health port taken by another process: the error
    names the flag that chooses another."""
    import socket

    from tests.e2e.harness.processes import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["serve", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}", flag, f"127.0.0.1:{port}"]
        code = main(args + (["--translator-listen", ""] if flag == "--health-listen" else []))
    assert code == 1
    what = "the translator" if flag == "--translator-listen" else "the health endpoint"
    said = f"aigw-xds: error: {what} cannot listen on 127.0.0.1:{port}: address already in use"
    assert f"{said} (choose another with {flag})\n" in capsys.readouterr().err


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "command", ["run", "serve", "translator", "translate", "validate", "proxy-status", "bootstrap", "crds"]
)
def test_every_command_has_help(command: str, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    listing = capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: aigw-xds {command}" in out
    # It says what the command does: the line of the command list (translator: its own parser's).
    summary = next(line for line in listing.splitlines() if line.strip().startswith(command + " "))
    first_words = " ".join(summary.split()[1:4])
    assert command == "translator" or first_words in " ".join(out.split()), (first_words, out[:600])


def test_translate_names_a_gateway_that_is_not_there(config: Path, capsys):
    assert main(["translate", "--config", str(config), "--gateway", "default/nope"]) == 1
    assert "no Gateway default/nope in the configuration (gateways: default/gw)" in capsys.readouterr().err
    out = config.parent / "translator.pb"
    args = ["translate", "--config", str(config), "--gateway", "default/nope", "--translator-config-out", str(out)]
    assert main(args) == 1
    assert "no Gateway default/nope in the configuration" in capsys.readouterr().err and not out.exists()


def test_translate_yaml_is_the_default_output(config: Path, capsys):
    import yaml

    assert main(["translate", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    resources = yaml.safe_load(text)["default/gw"]
    assert [c["name"] for c in resources["CDS"]] == ["aigw-translator", "default/r/rule/0"]
    assert "sk-secret-1" not in text


def test_validate_and_translate_need_no_secret_values(tmp_path: Path, monkeypatch, capsys):
    """An unset substituted variable is a warning naming it; run and serve still fail on it."""
    from aigw_xds.compile import compile_resources
    from aigw_xds.sources.files import FileSource

    monkeypatch.delenv("AIGW_TEST_UNSET_KEY", raising=False)
    _write_unset_variable_config(tmp_path)
    assert main(["validate", "--config", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "environment variable AIGW_TEST_UNSET_KEY is not set" in out
    assert "0 errors, 1 warning" in out
    assert main(["translate", "--config", str(tmp_path), "-o", "json"]) == 0
    out, err = capsys.readouterr()
    assert "default/gw" in json.loads(out) and "AIGW_TEST_UNSET_KEY is not set" in err
    strict = compile_resources(FileSource(tmp_path).load())  # what run and serve compile
    assert not strict.gateways
    assert any("AIGW_TEST_UNSET_KEY is not set" in d.message for d in strict.errors)
    assert main(["run", str(tmp_path), "--admin-port", "1"]) == 1  # fails before starting Envoy
    err = capsys.readouterr().err
    assert "aigw-xds: error: no Gateway compiled" in err and "AIGW_TEST_UNSET_KEY is not set" in err
    # In a checkout, how to try it without an account (a new user's trial met an example's key missing).
    assert f"examples/with_fakes.py {tmp_path} runs it against the bundled fake providers)" in err


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_secret_variable_is_reported_as_an_unset_one_is(tmp_path: Path, monkeypatch, capsys, value: str):
    """From a new-user trial: `OPENAI_API_KEY= aigw-xds run` served with an empty key (validate said
    nothing), where autoconfig takes the same empty variable for unset."""
    monkeypatch.setenv("AIGW_TEST_UNSET_KEY", value)
    _write_unset_variable_config(tmp_path)
    assert main(["validate", "--config", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "environment variable AIGW_TEST_UNSET_KEY is empty" in out and "0 errors, 1 warning" in out
    assert main(["run", str(tmp_path), "--admin-port", "1"]) == 1
    assert "AIGW_TEST_UNSET_KEY is empty" in capsys.readouterr().err


def _write_unset_variable_config(directory: Path) -> None:
    """A Gateway whose only Secret fills its key from the unset variable AIGW_TEST_UNSET_KEY."""
    (directory / "gw.yaml").write_text(
        gateway()
        + route("r", {"m": "b"})
        + backend("b", 9000)
        + api_key("b", "masked").replace(
            "metadata: {name: b-key, namespace: default}\nstringData",
            "metadata:\n  {name: b-key, namespace: default,\n"
            "   annotations: {substitution.aigw.run/env/apiKey: AIGW_TEST_UNSET_KEY}}\nstringData",
        )
    )


def _serve(log: Path, *args: str) -> subprocess.Popen:
    """`python -m aigw_xds ARGS` (a serve command line), its output in `log`."""
    import os
    import sys

    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aigw_xds", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_serve_exits_1_on_a_configuration_path_that_is_not_there(tmp_path: Path, capsys):
    from tests.e2e.harness.processes import free_port

    config, needle = tmp_path / "nope.yaml", f"{tmp_path / 'nope.yaml'}: no such file or directory"
    args = ["serve", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}", "--translator-listen", ""]
    assert main(args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aigw-xds: error:")]
    assert len(errors) == 1 and needle in errors[0], errors


def test_serve_started_on_its_only_gateway_broken_withholds_it_until_the_fix(tmp_path: Path, monkeypatch):
    """A platform team's trial: serve restarted on a broken file exited ("no Gateway compiled"), a
    restart loop under any supervisor, and the withheld fleet the README promises could never be.
    It now serves, withholds the fleet (its Envoys keep what they serve) and says so; the fix is
    taken as an edit."""
    import signal

    from tests.e2e.harness.processes import accepting, free_port, json_lines, wait_for

    monkeypatch.delenv("AIGW_TEST_UNSET_KEY", raising=False)
    _write_unset_variable_config(tmp_path)
    port, log = free_port(), tmp_path / "serve.log"
    command = ["--log-format", "json", "serve", str(tmp_path)]
    process = _serve(log, *command, "--listen", f"127.0.0.1:{port}", "--translator-listen", "")
    try:
        said = lambda: [e for e in json_lines(log) if e.get("event") == "no_gateway_compiled"]  # noqa: E731
        wait_for(lambda: (accepting(port) and said()) or process.poll() is not None, timeout=30, what="the load")
        assert process.poll() is None, log.read_text()[-2000:]
        assert said()[0]["status"] == "withholding default/gw until the errors are fixed"
        (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
        applied = lambda: [e for e in json_lines(log) if e.get("event") == "configuration_applied"]  # noqa: E731
        wait_for(lambda: any(e["published"] == ["default/gw"] for e in applied()), timeout=30, what="the fix")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, log.read_text()[-2000:]


def test_serve_waits_for_gateways_on_an_error_free_empty_directory(tmp_path: Path):
    """An empty directory is no error: serve listens, says it waits for Gateways, and stops on SIGTERM."""
    import signal

    from tests.e2e.harness.processes import accepting, free_port, wait_for

    (tmp_path / "gateways").mkdir()
    port, log = free_port(), tmp_path / "serve.log"
    command = ["serve", "--config", str(tmp_path / "gateways")]
    process = _serve(log, *command, "--listen", f"127.0.0.1:{port}", "--translator-listen", "")
    try:
        # serve binds its port before the first load: wait for the load's log line too, or the
        # check below (and the SIGTERM) could come before serve has finished starting.
        started = lambda: accepting(port) and '"no_gateway_compiled"' in log.read_text()  # noqa: E731
        wait_for(lambda: started() or process.poll() is not None, timeout=30, what=f"port {port} and first load")
        assert process.poll() is None, log.read_text()
        assert '"no_gateway_compiled"' in log.read_text() and "waiting for Gateways" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, log.read_text()
    assert '"shutting_down"' in log.read_text()  # as run says it


def test_serve_reads_its_configuration_again_on_sighup(tmp_path: Path):
    """From a platform team's trial: SIGHUP killed serve (status 129, no log line). A daemon's
    SIGHUP reads the configuration again (with --no-watch the one way to apply an edit), and serve
    goes on serving."""
    import signal

    from tests.e2e.harness.processes import accepting, free_port, json_lines, wait_for

    (tmp_path / "gateways").mkdir()
    (tmp_path / "gateways" / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9001))
    port, log = free_port(), tmp_path / "serve.log"
    command = ["--log-format", "json", "serve", str(tmp_path / "gateways")]
    process = _serve(log, *command, "--listen", f"127.0.0.1:{port}", "--translator-listen", "", "--no-watch")
    try:
        events = lambda: [e.get("event") for e in json_lines(log)]  # noqa: E731
        wait_for(lambda: accepting(port) and "configuration_loaded" in events(), timeout=30, what="serve started")
        (tmp_path / "gateways" / "gw.yaml").write_text(gateway() + route("r", {"m": "a"}) + backend("a", 9002))
        process.send_signal(signal.SIGHUP)
        applied = lambda: [e for e in json_lines(log) if e.get("event") == "configuration_applied"]  # noqa: E731
        wait_for(lambda: applied() or process.poll() is not None, timeout=30, what="the configuration read again")
        assert process.poll() is None, log.read_text()[-2000:]
        assert applied()[0]["published"] == ["default/gw"]
        assert "configuration_read_requested" in events()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, log.read_text()[-2000:]


def test_serve_stops_on_sigterm_while_still_starting(tmp_path: Path):
    """A pod deleted while serve still waits for its API server (here one that refuses every
    connection) ends with status 0 at once: the signal is no longer left to kill it mid-start, nor
    answered only once the start is done."""
    import os
    import signal
    import sys

    from tests.e2e.harness.processes import free_port, wait_for

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{free_port()}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "aigw_xds", "serve", "--kubernetes", "--kubeconfig", str(kubeconfig)]
    command += ["--listen", f"127.0.0.1:{free_port()}", "--translator-listen", "", "--health-listen", ""]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    try:
        waiting = lambda: '"kubernetes_unreachable"' in log.read_text() or process.poll() is not None  # noqa: E731
        wait_for(waiting, timeout=30, what="serve waiting for its API server")
        assert process.poll() is None, log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, log.read_text()[-2000:]
    assert '"xds_server_listening"' not in log.read_text()  # it had not started: stopped while starting


def test_translate_prints_nothing_on_stdout_when_there_are_errors(config: Path, capsys):
    assert main(["translate", "--config", str(config / "nope.yaml")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "no such file or directory" in err
    (config / "broken.yaml").write_text(route("broken", {"m": "missing-backend"}))  # default/gw still compiles
    assert main(["translate", "--config", str(config), "-o", "json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "missing-backend" in err


def test_run_logs_in_console_format_even_when_its_output_is_not_a_terminal(tmp_path: Path, capsys):
    """pytest's stderr is no terminal: run still writes console lines; --log-format json selects JSON."""
    (tmp_path / "broken.yaml").write_text("kind: [")
    assert main(["run", str(tmp_path), "--admin-port", "1"]) == 1
    err = capsys.readouterr().err
    assert "broken.yaml" in err
    assert not [line for line in err.splitlines() if line.startswith("{")], err
    assert "waiting for Gateways" not in err  # run stops at once: only serve waits (a new user's confusion)
    assert main(["--log-format", "json", "run", str(tmp_path), "--admin-port", "1"]) == 1
    out, err = capsys.readouterr()
    [starting] = [json.loads(line) for line in out.splitlines()]  # every line is one JSON object
    assert starting["event"] == "starting" and starting["config"] == str(tmp_path)
    *_, failed = [json.loads(line) for line in err.splitlines()]
    assert failed["event"] == "error" and failed["message"].startswith("no Gateway compiled:")
    assert "broken.yaml" in failed["message"]
    assert main(["--log-format", "json", "run", str(tmp_path), "--listen-address", "x"]) == 1  # the command line's
    [refused] = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert refused["event"] == "error" and refused["message"].startswith("--listen-address 'x' must be an IP address")


def test_translator_config_out_holds_the_credentials_in_a_0600_file(config: Path, tmp_path: Path, capsys, monkeypatch):
    from aigw_translator.config import load_config

    out = tmp_path / "translator.pb"
    out.write_bytes(b"old")
    out.chmod(0o644)  # an existing file is made private too
    args = ["translate", "--config", str(config), "--gateway", "gw", "--translator-config-out", str(out)]
    assert main(args) == 0
    stdout, err = capsys.readouterr()
    assert stdout == "" and "mode 0600" in err
    assert out.stat().st_mode & 0o777 == 0o600
    translator_config = load_config(out)
    assert [b.auth.api_key.key for b in translator_config.backends] == ["sk-secret-1"]
    # the real values are needed: an unset variable is an error here, and nothing is written
    monkeypatch.delenv("AIGW_TEST_UNSET_KEY", raising=False)
    unset = tmp_path / "unset"
    unset.mkdir()
    _write_unset_variable_config(unset)
    assert main(["translate", "--config", str(unset), "--translator-config-out", str(tmp_path / "x.pb")]) == 1
    assert "AIGW_TEST_UNSET_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "x.pb").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["bootstrap", "--server", "nocolon", "--gateway", "default/gw"], ["--server 'nocolon' must be host:port"]),
        (
            ["bootstrap", "--server", "127.0.0.1:18000", "--gateway", "a/b/c"],
            ["--gateway 'a/b/c' must be \"<namespace>/<name>\""],
        ),
        (
            ["proxy-status", "--server", "http://127.0.0.1:42817"],
            ["--server 'http://127.0.0.1:42817' must be host:port"],
        ),
        (["translator", "--xds", "nocolon"], ["aigw-xds translator: error: --xds 'nocolon' must be host:port"]),
        (["translator", "--xds", "127.0.0.1:99999"], ["--xds '127.0.0.1:99999' must be host:port"]),
        (
            ["translator", "--xds", "127.0.0.1:18000", "--listen", "bogus"],
            ["--listen 'bogus' must be host:port or unix:PATH"],
        ),
        (
            ["translator", "--xds", "127.0.0.1:18000", "--listen", "192.0.2.1:1063", "--insecure-listen"],
            ["cannot listen on 192.0.2.1:1063: 192.0.2.1 is not an address of this machine"],
        ),
        (
            ["serve", "--config", ".", "--listen", "127.0.0.1:18000", "--translator-listen", "bogus"],
            ["--translator-listen 'bogus' must be host:port or unix:PATH"],
        ),
        # A translator's answers hold the backends' keys and its port asks no one who they are.
        (
            ["serve", "--config", ".", "--listen", "127.0.0.1:18000", "--translator-listen", "0.0.0.0:1064"],
            ["--translator-listen 0.0.0.0:1064 is reachable from other hosts", "--insecure-translator-listen"],
        ),
        (
            ["translator", "--xds", "127.0.0.1:18000", "--listen", "[::]:1063"],
            ["--listen [::]:1063 is reachable from other hosts", "unix: socket", "--insecure-listen"],
        ),
        (["bootstrap", "--server", "host:http", "--gateway", "default/gw"], ["--server 'host:http'"]),
        (["proxy-status", "--server", "nocolon"], ["--server 'nocolon' must be host:port"]),
        (["serve", "--config", ".", "--listen", "nocolon"], ["--listen 'nocolon' must be host:port"]),
        (["translate", "--config", "/nonexistent-aigw"], ["/nonexistent-aigw"]),
        (["run", "examples/quickstart", "--listen-address", "all"], ["--listen-address 'all' must be an IP address"]),
        (["translator", "--config", "/nonexistent-aigw.json"], ["cannot read --config /nonexistent-aigw.json"]),
        (["translator", "--config", "t.json", "--fleet", "default/gw"], ["--fleet needs --xds"]),
        (["translator", "--config", "t.json", "--xds-ca", "ca.crt"], ["--xds-ca needs --xds"]),
    ],
)
def test_command_line_errors_are_one_line(args: list[str], needles: list[str], capsys):
    assert main(args) == 1
    _one_error_line(capsys.readouterr().err, "error", *needles)


def test_a_port_out_of_range_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "examples/quickstart", "--xds-port", "99999"])
    assert exited.value.code == 2
    assert "argument --xds-port: '99999' is not a port (0-65535)" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_a_drain_time_that_is_not_seconds_is_a_usage_error(config: Path, value: str, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", str(config), "--envoy-drain-time", value])
    assert exited.value.code == 2
    assert f"argument --envoy-drain-time: '{value}' is not a number of seconds (0 or more)" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "what"), [("--listen", ""), ("--health-listen", "the health endpoint ")])
def test_translator_reports_a_port_in_use(flag: str, what: str, tmp_path: Path, capsys):
    import socket

    (tmp_path / "empty.json").write_text("{}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["translator", "--config", str(tmp_path / "empty.json"), flag, f"127.0.0.1:{port}"])
    assert code == 1
    expected = f"aigw-xds translator: error: {what}cannot listen on 127.0.0.1:{port}: address already in use"
    _one_error_line(capsys.readouterr().err, expected)


def test_translator_rejects_a_file_that_is_not_a_translator_config(tmp_path: Path, capsys):
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["translator", "--config", str(tmp_path / "bad.json")]) == 1
    _one_error_line(capsys.readouterr().err, "aigw-xds translator: error:", "is not a TranslatorConfig")


def test_translator_sidecar_commands_from_the_readme(config: Path, tmp_path: Path):
    """`aigw-xds translate PATH --gateway NS/NAME --translator-config-out FILE`, then
    `aigw-xds translator --config FILE --listen ADDR` and, beside `serve PATH --translator-listen ""`,
    `aigw-xds translator --xds CP --fleet NS/NAME --listen ADDR`: all listen and stop on SIGTERM."""
    import os
    import signal
    import sys

    from tests.e2e.harness.processes import accepting, free_port, wait_for

    xds, from_file, from_xds = free_port(), free_port(), free_port()
    cli = [sys.executable, "-m", "aigw_xds"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "translator.pb"
    produced = subprocess.run(
        [*cli, "translate", str(config), "--gateway", "default/gw", "--translator-config-out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert produced.returncode == 0, produced.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    commands = [
        [*cli, "translator", "--config", str(out), "--listen", f"127.0.0.1:{from_file}"],
        [*cli, "serve", str(config), "--listen", f"127.0.0.1:{xds}", "--translator-listen", ""],
        [*cli, "translator", "--xds", f"127.0.0.1:{xds}", "--fleet", "default/gw", "--listen", f"127.0.0.1:{from_xds}"],
    ]
    logs = [tmp_path / f"{i}.log" for i in range(len(commands))]
    processes = []
    try:
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as out:
                processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env))
        for port in (from_file, xds, from_xds):
            wait_for(lambda p=port: accepting(p), timeout=30, what=f"port {port} ({[p.read_text() for p in logs]})")

        def translator_synced() -> bool:  # the sidecar's own row, its configuration in the last column
            status = [*cli, "proxy-status", "--server", f"127.0.0.1:{xds}"]
            shown = subprocess.run(status, capture_output=True, text=True, timeout=30, env=env).stdout
            return re.search(r"^translator-\S+\s+default/gw\s.*\sSYNCED \(1\) \w+$", shown, re.M) is not None

        wait_for(translator_synced, timeout=30, what="the translator's configuration SYNCED in proxy-status")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=20) for process in processes]
    assert codes == [0, 0, 0], [log.read_text()[-1000:] for log in logs]


def test_a_translator_waiting_for_its_first_configuration_stops_gracefully_on_sigterm(tmp_path: Path):
    """A sidecar told to stop while its control plane is still unreachable (a pod deleted at start)
    ends with status 0, not killed by the signal."""
    import os
    import signal
    import sys

    from tests.e2e.harness.processes import free_port, wait_for

    log = tmp_path / "translator.log"
    command = [sys.executable, "-m", "aigw_xds", "translator", "--xds", f"127.0.0.1:{free_port()}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--listen", f"127.0.0.1:{free_port()}"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_for(lambda: "xds_stream_failed" in log.read_text(), timeout=30, what="a first attempt to connect")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, log.read_text()[-1000:]


def _probe(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_the_translator_sidecars_probes_say_when_it_serves(config: Path, tmp_path: Path):
    """`translator --xds CP --health-listen ADDR` (the sidecar's startup and liveness probes,
    deploy/kubernetes/envoy-deployment.yaml): /healthz answers from the start; /readyz is 503 while
    the control plane is out of reach, then 200 once its configuration is taken and Envoy's address
    listens, which it does only then. A sidecar whose --fleet names no Gateway (a typo: found by a
    platform review, Ready and answering every request with a 503) stays not ready."""
    import os
    import signal
    import sys

    from tests.e2e.harness.processes import accepting, free_port, wait_for

    xds, health, listen, typo_health = free_port(), free_port(), free_port(), free_port()
    cli = [sys.executable, "-m", "aigw_xds"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    translator = [*cli, "translator", "--xds", f"127.0.0.1:{xds}", "--fleet", "default/gw"]
    translator += ["--listen", f"127.0.0.1:{listen}", "--health-listen", f"127.0.0.1:{health}"]
    misspelt = [*cli, "translator", "--xds", f"127.0.0.1:{xds}", "--fleet", "default/gww"]
    misspelt += ["--listen", f"127.0.0.1:{free_port()}", "--health-listen", f"127.0.0.1:{typo_health}"]
    serve = [*cli, "serve", str(config), "--listen", f"127.0.0.1:{xds}", "--translator-listen", ""]
    logs = [tmp_path / "translator.log", tmp_path / "misspelt.log", tmp_path / "serve.log"]
    processes = []
    try:
        for command, log in zip((translator, misspelt), logs, strict=False):
            with log.open("wb") as out:
                processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env))
        wait_for(lambda: "xds_stream_failed" in logs[0].read_text(), timeout=30, what="a first attempt to connect")
        assert _probe(health, "/healthz") == (200, "ok")
        assert _probe(health, "/readyz") == (503, "not ready: waiting for the configuration of default/gw")
        assert not accepting(listen)
        with logs[2].open("wb") as out:
            processes.append(subprocess.Popen(serve, stdout=out, stderr=subprocess.STDOUT, env=env))
        wait_for(lambda: _probe(health, "/readyz")[0] == 200, timeout=60, what=f"ready ({logs[0].read_text()})")
        assert accepting(listen) and _probe(health, "/readyz") == (200, "ready")
        assert _probe(health, "/metrics")[0] == 404  # the control plane's are metrics; the sidecar has none
        wait_for(lambda: "xds_config_applied" in logs[1].read_text(), timeout=30, what="the misspelt one's sync")
        assert _probe(typo_health, "/readyz") == (503, "not ready: waiting for the configuration of default/gww")
        assert "xds_fleet_unknown" in logs[1].read_text()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=20) for process in processes]
    assert codes == [0, 0, 0], [log.read_text()[-1000:] for log in logs]
    assert not accepting(health)


def test_translator_follows_aigw_xds_log_flags_unless_given_its_own(tmp_path: Path):
    """`aigw-xds --log-format console translator ...` writes console lines (the flag was ignored:
    found by a new user); a --log-format after `translator` still decides."""
    import json
    import os
    import signal
    import sys

    from tests.e2e.harness.processes import free_port, wait_for

    translator = ["translator", "--xds", f"127.0.0.1:{free_port()}"]
    commands = {
        "console": ["--log-format", "console", *translator],
        "json": ["--log-format", "console", *translator, "--log-format", "json"],
    }
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs, processes = {}, []
    for name, args in commands.items():
        logs[name] = tmp_path / f"{name}.log"  # stderr, where it logs (as the control plane does)
        with logs[name].open("wb") as err, (tmp_path / f"{name}.out").open("wb") as out:
            command = [sys.executable, "-m", "aigw_xds", *args, "--listen", f"127.0.0.1:{free_port()}"]
            processes.append(subprocess.Popen(command, stdout=out, stderr=err, env=env))
    try:
        for log in logs.values():
            wait_for(lambda log=log: "xds_stream_failed" in log.read_text(), timeout=30, what=f"a line in {log}")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
    [console] = [line for line in logs["console"].read_text().splitlines() if "xds_stream_failed" in line][:1]
    assert console.split(" ", 1)[1].startswith("[warning  ] xds_stream_failed"), console  # no colour codes in a file
    [line] = [line for line in logs["json"].read_text().splitlines() if "xds_stream_failed" in line][:1]
    assert json.loads(line)["event"] == "xds_stream_failed"
    assert all((tmp_path / f"{name}.out").read_text() == "" for name in commands)


def test_listen_problem_accepts_a_name_any_of_whose_addresses_binds(monkeypatch):
    """gRPC listens when any resolved address binds (localhost on a host without ::1): no problem then."""
    import socket

    from aigw_translator import arguments

    unusable = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 0))
    usable = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))
    monkeypatch.setattr(arguments.socket, "getaddrinfo", lambda *_a, **_k: [unusable, usable])
    assert arguments.listen_problem("somehost:0") is None
    monkeypatch.setattr(arguments.socket, "getaddrinfo", lambda *_a, **_k: [unusable])
    assert arguments.listen_problem("somehost:0") == "somehost is not an address of this machine"


def test_translate_prints_the_same_text_in_every_process():
    """A Struct's fields (the access log's format) come out of protobuf in an order that changes
    from process to process: translate's output, which users diff and keep as golden files, differed
    on every run (found by a new user). Three processes, one text."""
    import sys

    command = [sys.executable, "-m", "aigw_xds", "translate", "examples/quickstart"]
    root = Path(__file__).resolve().parents[2]
    outputs = {subprocess.run(command, capture_output=True, text=True, cwd=root, check=True).stdout for _ in range(3)}
    assert len(outputs) == 1
    assert "jsonFormat" in next(iter(outputs))  # the access log's Struct is in what was compared


def test_proxy_status_shows_a_translator_process_in_a_column_of_its_own():
    """A translator process fetches its configuration over xDS like an Envoy: its row shows the
    state of that configuration, and an Envoy's row shows none there."""
    from envoy.service.status.v3 import csds_pb2

    from aigw_xds.cli import format_proxy_status
    from aigw_xds.xds import type_urls

    response = csds_pb2.ClientStatusResponse()
    for node, fleet, type_url, name, status in (
        ("envoy-1", "default/gw", type_urls.CLUSTER, "default/r/rule/0", csds_pb2.SYNCED),
        ("translator-1", "aigw:translators", type_urls.TRANSLATOR, "default/gw", csds_pb2.STALE),
    ):
        config = response.config.add()
        config.node.id = node
        config.node.metadata.fields["aigw.fleet"].string_value = fleet
        config.node.metadata.fields["aigw.mode"].string_value = "delta"
        config.generic_xds_configs.add(type_url=type_url, name=name, version_info="v1", config_status=status)
    header, envoy, translator = (line.split() for line in format_proxy_status(response).splitlines())
    assert header[-1] == "TRANSLATOR"
    assert envoy[1] == "default/gw" and envoy[3] == "SYNCED" and envoy[-1] == "-"
    # a translator's fleet is the Gateways whose configuration it holds
    assert translator[1] == "default/gw" and translator[3:9] == ["-"] * 6 and translator[9] == "STALE"


def test_proxy_status_does_not_count_the_empty_assignment_of_a_cluster_gone():
    """A platform team's trial removed a backend and read `EDS SYNCED (1)`: the SotW node still
    named the cluster, and was answered the empty assignment of version "missing"."""
    from envoy.service.status.v3 import csds_pb2

    from aigw_xds.cli import format_proxy_status
    from aigw_xds.xds import type_urls

    response = csds_pb2.ClientStatusResponse()
    config = response.config.add()
    config.node.id = "envoy-1"
    config.node.metadata.fields["aigw.fleet"].string_value = "default/gw"
    config.node.metadata.fields["aigw.mode"].string_value = "sotw"
    for name, version in (("default/r/rule/0", "v1"), ("default/r/rule/1", "missing")):
        config.generic_xds_configs.add(
            type_url=type_urls.ENDPOINT, name=name, version_info=version, config_status=csds_pb2.SYNCED
        )
    _, row = format_proxy_status(response).splitlines()
    assert row.split()[4:6] == ["SYNCED", "(1)"]


def test_proxy_status_without_a_server_says_where_run_serves(capsys):
    """Its default is serve's port: against `run` (whose xDS port is free-picked) it cannot reach
    it, and says where to look; with --server given, no such hint."""
    from tests.e2e.harness.processes import accepting, free_port

    assert not accepting(18000), "serve's default port is taken on this machine"
    assert main(["proxy-status"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach 127.0.0.1:18000" in err and "--server the xDS address of its ready line" in err
    port = free_port()
    assert main(["proxy-status", "--server", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach 127.0.0.1:{port}" in err and "ready line" not in err


def test_proxy_status_against_a_server_that_is_not_the_xds_one_says_so(capsys):
    """A new user gave it the listener's or Envoy's admin port: it reached them, and said it could
    not ("cannot reach ... status: 404"). A gRPC server without the status service stands in."""
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert main(["proxy-status", "--server", f"127.0.0.1:{port}"]) == 1
    finally:
        server.stop(None)
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port} answered, but is not aigw-xds's xDS server" in err and "cannot reach" not in err


def test_proxy_status_with_no_node_says_so():
    """Not a bare header (a new user took it for a failure)."""
    from envoy.service.status.v3 import csds_pb2

    from aigw_xds.cli import format_proxy_status

    header, said = format_proxy_status(csds_pb2.ClientStatusResponse()).splitlines()
    assert header.split()[:3] == ["NODE", "FLEET", "MODE"] and said == "(no node is connected)"


def test_validate_claims_no_last_good_configuration_it_does_not_know_of(tmp_path: Path, capsys):
    """A Gateway built from an invalid resource is not applied as it is; validate (and a first
    start) have no last good configuration to keep, so the message does not say one is kept (a new
    user read 'keeping the last good configuration' where there was none), nor that one may be (a
    later one read 'if there is one' while run was serving it: the controller says when it keeps one)."""
    text = gateway() + route("r", {"m": "b"}) + backend("b", 9000).replace("{name: OpenAI}", "{name: OpenAl}")
    (tmp_path / "gw.yaml").write_text(text + api_key("b", "sk"))
    assert main(["validate", str(tmp_path), "--status"]) == 1
    out, err = capsys.readouterr()
    report = out.split("status:", 1)[0]
    assert "Gateway default/gw: this version is not served until the errors above are fixed (they concern" in report
    assert "last good" not in report and err == ""
    assert "Programmed=False (Invalid: its last good configuration, if any, is served instead:" in out
    # A valid one: Programmed=True is not validate's to say (no Envoy has it).
    (tmp_path / "gw.yaml").write_text(gateway() + route("r", {"m": "b"}) + backend("b", 9000) + api_key("b", "sk"))
    assert main(["validate", str(tmp_path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "status: Gateway default/gw: Accepted=True" in out and "Programmed" not in out


@pytest.mark.parametrize(
    ("flags", "address"),
    [
        ([], "127.0.0.1:1063"),
        (["--translator-listen", "127.0.0.1:1064"], "127.0.0.1:1064"),  # a new user followed the hint
        (["--translator-listen", "0.0.0.0:1064", "--insecure-translator-listen"], "127.0.0.1:1064"),
        (["--translator-listen", "[::]:1064", "--insecure-translator-listen"], "[::1]:1064"),
        (["--translator-listen", "localhost:1064"], "127.0.0.1:1064"),  # Envoy's cluster takes IPs only
        (["--translator-listen", "unix:/run/t.sock"], "unix:/run/t.sock"),
        (["--translator-listen", ""], "127.0.0.1:1063"),  # the translator runs elsewhere
        (["--translator-listen", "127.0.0.1:1064", "--translator-address", "10.0.0.7:1063"], "10.0.0.7:1063"),
    ],
)
def test_serve_tells_envoy_the_translator_address_it_listens_on(flags: list[str], address: str):
    """Moved with --translator-listen (as serve's busy-port error suggests), the in-process
    translator is where Envoy is told to reach it, unless --translator-address says otherwise."""
    from aigw_xds.cli import _settings, parser

    assert _settings(parser().parse_args(["serve", "config", *flags])).translator_address == address


def test_the_log_options_are_taken_after_the_command_too(capsys):
    """From a new-user trial: `aigw-xds run --log-format json` was a bare "unrecognized arguments",
    though `aigw-xds translator` takes them there; after the command, they win."""
    from aigw_xds.cli import parser

    args = parser().parse_args(["--log-level", "debug", "validate", "x", "--log-format", "json"])
    assert (args.log_level, args.log_format) == ("debug", "json")
    args = parser().parse_args(["--log-format", "console", "run", "x", "--log-format", "json"])
    assert args.log_format == "json"
    assert parser().parse_args(["serve", "x"]).log_format == "auto"


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_path_that_does_not_exist_is_said_before_anything_starts(command: str, tmp_path: Path, capsys):
    """From a new-user trial: `run examples/quickstar` started the translator, then printed the
    error twice; `serve ./gateways/` reported a busy port rather than the missing path."""
    missing = str(tmp_path / "quickstar")
    assert main([command, missing]) == 1
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [f"aigw-xds: error: {missing}: no such file or directory"], err


def test_a_gateway_name_kubernetes_would_refuse_is_refused(capsys):
    """From a new-user trial: `bootstrap --gateway Default/Q_1` was taken (no Gateway can have that
    name, so the Envoy would wait for a fleet that never comes)."""
    for value in ("Default/Q_1", "default/Gw", "a/b/c", "default/"):
        assert main(["bootstrap", "--gateway", value]) == 1
        assert "as Kubernetes names are" in capsys.readouterr().err
    assert main(["bootstrap", "--gateway", "team-a/gw.v2"]) == 0
    capsys.readouterr()
    # A bare name is namespace default's Gateway: the node id says so too (the README's promise).
    assert main(["bootstrap", "--gateway", "quickstart", "-o", "json"]) == 0
    node = json.loads(capsys.readouterr().out)["node"]
    assert node == {"id": "default/quickstart", "cluster": "default/quickstart"}


def test_sighup_reads_the_translators_config_again_and_never_ends_it(config: Path, tmp_path: Path, capsys):
    """From a platform review: SIGHUP (a closed terminal, or an operator hoping to reload --config)
    killed `aigw-xds translator` without a word. It reads --config again (a file that does not read
    leaves the served one in use), as serve reads its configuration again."""
    import os
    import signal
    import sys

    from tests.e2e.harness.processes import accepting, free_port, wait_for

    out = tmp_path / "translator.pb"
    assert main(["translate", "--config", str(config), "--gateway", "gw", "--translator-config-out", str(out)]) == 0
    capsys.readouterr()
    listen = free_port()
    log = tmp_path / "translator.log"
    command = [sys.executable, "-m", "aigw_xds", "translator", "--config", str(out), "--listen", f"127.0.0.1:{listen}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: accepting(listen), timeout=30, what="the translator listening")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "config_read_again" in log.read_text(), timeout=10, what="the config read again")
        out.write_bytes(b"\xff not a config")
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "config_not_read" in log.read_text(), timeout=10, what="the bad file reported")
        assert process.poll() is None and accepting(listen)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    assert code == 0, log.read_text()[-1000:]


@pytest.mark.parametrize("forgotten", [True, False])
def test_a_ctrl_c_caught_in_module_set_up_code_leaves_python_m_its_exit_status(tmp_path: Path, forgotten: bool):
    """`python -m aigw_xds` interrupted while a Cython module (uvloop, gRPC) runs its set-up code
    through PyRun_String: CPython noted the KeyboardInterrupt and ended the process by SIGINT,
    although the entry point caught it and asked for status 130 (CI's rare exit -2). The entry
    point clears the note; without that (the second case), the exit is SIGINT's, as before."""
    import sys

    (tmp_path / "interrupted.py").write_text(
        "import ctypes, os, signal, sys\n"
        "from aigw_xds.__main__ import _forget_caught_interrupts\n"
        "run = ctypes.pythonapi.PyRun_String\n"
        "run.restype = ctypes.py_object\n"
        "run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]\n"
        "FILE_INPUT = 257  # Py_file_input\n"
        "try:\n"
        "    code = b'import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**6): pass\\n'\n"
        "    run(code, FILE_INPUT, {}, {})\n"
        "except KeyboardInterrupt:\n"
        "    status = 130\n"
        f"if {forgotten}:\n"
        "    _forget_caught_interrupts()\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run([sys.executable, "-m", "interrupted"], cwd=tmp_path, capture_output=True, timeout=60)
    assert done.returncode == (130 if forgotten else -2), done.stderr.decode()
