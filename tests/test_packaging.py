"""The package metadata: `pip install` must print no setuptools deprecation warnings."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_pyproject_applies_without_deprecation_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(REPO)  # readme and package paths are relative to the project
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), os.fspath(REPO / "pyproject.toml"))
    messages = [str(w.message).splitlines()[0] for w in caught]
    assert messages == []
