"""`connection_options`: the five connection flags stand where a command's `connection`
parameter stands, and reach it gathered into one `Connection` (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from railyard.cli.app import app
from railyard.cli.common import (
    DEFAULT_CONNECTION,
    Connection,
    Output,
    OutputOption,
    TlsFiles,
    connection_options,
)

CONNECTION_FLAGS = ["config", "endpoints", "cacert", "cert", "key"]


def params(*command: str) -> list[str]:
    group = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]  # type: ignore[attr-defined]
    return [p.name for p in group.params if p.name is not None]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("status",), [*CONNECTION_FLAGS, "output"]),
        (("top",), [*CONNECTION_FLAGS, "interval"]),
        (("snapshot", "save"), ["file", *CONNECTION_FLAGS, "timeout", "output"]),
        (
            ("member", "add"),
            ["node_id", "address", "peer_address", "learner", "wait", *CONNECTION_FLAGS, "output"],
        ),
        (("stream", "delete"), ["name", "yes", *CONNECTION_FLAGS, "output"]),
    ],
)
def test_the_flags_stand_where_the_connection_parameter_stands(
    command: tuple[str, ...], expected: list[str]
) -> None:
    assert params(*command) == expected


def test_the_command_gets_the_flags_as_one_connection(tmp_path: Path) -> None:
    seen: list[Connection] = []
    probe = typer.Typer()

    @probe.command()
    @connection_options
    def show(
        connection: Connection = DEFAULT_CONNECTION, output: OutputOption = Output.table
    ) -> None:
        seen.append(connection)

    ca, cert, key = (tmp_path / name for name in ("ca.pem", "c.pem", "k.pem"))
    args = ["-c", "x.toml", "--endpoints", "h:1", "--cacert", str(ca), "--cert", str(cert)]
    result = CliRunner().invoke(probe, [*args, "--key", str(key), "-o", "json"])
    assert result.exit_code == 0, result.output
    assert seen == [Connection(Path("x.toml"), "h:1", TlsFiles(ca, cert, key))]


def test_a_command_without_a_connection_parameter_is_refused_at_once() -> None:
    def lonely(output: OutputOption = Output.table) -> None:
        pass

    with pytest.raises(TypeError, match="lonely: expected a `connection: Connection` parameter"):
        connection_options(lonely)
