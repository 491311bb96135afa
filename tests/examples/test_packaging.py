"""pyproject.toml as setuptools reads it when `make` installs the project."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

from .running import ROOT


def test_pyproject_metadata_gives_setuptools_no_warning():
    """The license is an SPDX expression (the table form is deprecated and warned about on every
    install), and the build requires a setuptools that reads it."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert not [str(w.message) for w in caught if "license" in str(w.message).lower()]
    assert dist.metadata.license_expression == "Apache-2.0"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first setuptools that reads `license = "<SPDX>"`


def test_fake_providers_are_an_extra():
    """The fake providers' own needs (PyJWT for their token issuers) are the `fakes` extra, which dev
    and `make install` add; aiohttp, their server, is a dependency (the translator's MCP proxy)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [d for d in project["dependencies"] if d.startswith("aiohttp")]
    assert [d for d in project["optional-dependencies"]["fakes"] if d.startswith("pyjwt")]
    assert "aigw-xds[fakes]" in project["optional-dependencies"]["dev"]
    assert "'.[dev,fakes]'" in (ROOT / "Makefile").read_text()


def test_the_commands_load_without_importing_aiohttp(tmp_path: Path):
    """aiohttp is imported when the MCP proxy starts, not before: the control plane, the translator
    and the console script load with it unimportable (a sitecustomize puts None in its sys.modules
    slot), so a translator without --mcp-listen never pays for it."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['aiohttp'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    imports = (
        "import aigw_xds.cli, aigw_xds.control_plane, aigw_xds.run, aigw_translator.server, aigw_translator.__main__"
    )
    for code, ok in (("import aiohttp", False), (imports, True)):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert (done.returncode == 0) == ok, done.stderr
    script = Path(sys.executable).with_name("aigw-xds")
    done = subprocess.run([str(script), "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
