"""storage.backup: the backup file is whole and verified under its final name, or absent."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from railyard.storage import BackupHeader, BackupWriter, CorruptSnapshot, read_backup
from railyard.storage.backup import extract_state

DATA = b"state database bytes " * 1000


def header(data: bytes = DATA, **changes: object) -> BackupHeader:
    fields: dict[str, object] = {
        "index": 12,
        "term": 3,
        "streams": 2,
        "records": 40,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "cluster": "c",
        "node_id": "n1",
    }
    fields.update(changes)
    return BackupHeader(**fields)  # type: ignore[arg-type]


def write(path: Path, head: BackupHeader, chunks: list[bytes]) -> BackupHeader:
    with BackupWriter(path) as writer:
        writer.start(head)
        for chunk in chunks:
            writer.write(chunk)
        return writer.finish()


def test_a_written_backup_reads_back_and_its_state_extracts(tmp_path: Path) -> None:
    path = tmp_path / "b.ryb"
    assert write(path, header(), [DATA[:5000], DATA[5000:]]) == header()
    assert read_backup(path) == header()
    assert not (tmp_path / "b.ryb.tmp").exists()
    extract_state(path, tmp_path / "state.db")
    assert (tmp_path / "state.db").read_bytes() == DATA


def test_a_restarted_download_starts_the_file_over(tmp_path: Path) -> None:
    path = tmp_path / "b.ryb"
    with BackupWriter(path) as writer:
        writer.start(header())
        writer.write(DATA[:100])
        writer.start(header())  # the attempt failed; the backup is sent again
        writer.write(DATA)
        writer.finish()
    assert read_backup(path) == header()


@pytest.mark.parametrize(
    ("head", "chunks", "problem"),
    [
        (header(), [DATA[:-1]], "bytes arrived, the header announced"),
        (header(sha256="0" * 64), [DATA], "sha256 of the bytes is"),
        (header(), [DATA, b"x"], "more than the"),
    ],
)
def test_bytes_that_do_not_match_the_header_leave_no_file(
    tmp_path: Path, head: BackupHeader, chunks: list[bytes], problem: str
) -> None:
    path = tmp_path / "b.ryb"
    with pytest.raises(CorruptSnapshot, match=problem):
        write(path, head, chunks)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda b: b[:-10], "cut short"),
        (lambda b: b[:-10] + bytes([b[-10] ^ 1]) + b[-9:], "sha256 of the state"),
        (lambda b: b"something else\n" + b, "not a railyard backup"),
        (lambda b: b[:30], "backup header is cut short|unreadable backup header"),
    ],
)
def test_a_damaged_file_is_refused_naming_it(tmp_path: Path, damage: object, problem: str) -> None:
    path = tmp_path / "b.ryb"
    write(path, header(), [DATA])
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(CorruptSnapshot, match=problem) as caught:
        read_backup(path)
    assert str(path) in str(caught.value)
