"""`railyard snapshot save/restore`: bad input ends in one line and changes nothing.

The commands against running clusters are in tests/cluster/test_backup.py.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from railyard.cli.app import app

CLUSTER = """
[cluster]
name = "new"
data_dir = "data"
[[nodes]]
id = "n1"
address = "127.0.0.1:7001"
"""


def test_save_into_a_missing_directory_is_refused_before_asking_the_cluster(
    tmp_path: Path,
) -> None:
    target = tmp_path / "missing" / "b.ryb"
    # No node listens on this port: the refusal comes first, without a call.
    result = CliRunner().invoke(
        app, ["snapshot", "save", str(target), "--endpoints", "127.0.0.1:1"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {target.parent}: no such directory; create it or write the backup elsewhere"
    )
    assert not target.parent.exists()


def test_restore_of_a_missing_file_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "new.toml"
    config.write_text(CLUSTER)
    missing = tmp_path / "nothing.ryb"
    result = CliRunner().invoke(app, ["snapshot", "restore", str(missing), "-c", str(config)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {missing}: no such backup file; expected a file made by `railyard snapshot save`"
    )
    assert not (tmp_path / "data").exists()


def test_restore_needs_the_new_cluster_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["snapshot", "restore", str(tmp_path / "b.ryb")])
    assert result.exit_code == 2
    assert "--config" in result.stderr


def test_restore_of_a_file_that_is_no_backup_names_it(tmp_path: Path) -> None:
    config = tmp_path / "new.toml"
    config.write_text(CLUSTER)
    bogus = tmp_path / "notes.txt"
    bogus.write_text("shopping list\n")
    result = CliRunner().invoke(app, ["snapshot", "restore", str(bogus), "-c", str(config)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot restore: {bogus}: corrupt snapshot: not a railyard")
    assert not (tmp_path / "data").exists()
