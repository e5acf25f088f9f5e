"""The traps an operator fell into (issue 13): each test here failed before its fix.

Tests that need a cluster use the shared `cli_cluster`, or a cluster of
their own when they stop nodes.
"""

from __future__ import annotations

import sys

from typer.testing import CliRunner

from railyard.cli.app import app

RAILYARD = [sys.executable, "-m", "railyard"]
SUBPROCESS_TIMEOUT_S = 60


def test_version_long_and_short() -> None:
    from importlib.metadata import version

    for flag in ("--version", "-V"):
        result = CliRunner().invoke(app, [flag])
        assert result.exit_code == 0, result.stderr
        assert result.stdout == f"railyard {version('railyard')}\n"
