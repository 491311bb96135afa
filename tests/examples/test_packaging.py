"""pyproject.toml as setuptools reads it when `make` installs the project."""

from __future__ import annotations

import tomllib
import warnings

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
