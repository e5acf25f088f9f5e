"""`railyard snapshot save` and `railyard snapshot restore`: backups of the streams state.

`save` asks the cluster (any node: a follower relays the leader's answer)
for a backup taken at a linearizable point and writes it with
`storage.BackupWriter`: to ``FILE.tmp``, checked against its header's
SHA-256, fsync'd, renamed to ``FILE``. `restore` lays out the data
directories of a cluster file from one (`node.restore`); it talks to no
node, and the nodes it prepares are started as usual.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from railyard.cli.common import (
    DEFAULT_CONNECTION,
    Connection,
    Output,
    OutputOption,
    connection_options,
    eprint,
    errors_end_cleanly,
    examples,
    fail,
    print_json,
    print_table,
    resolve_config,
    run,
)
from railyard.cli.units import parse_duration_ms
from railyard.proto import railyard_pb2 as pb

if TYPE_CHECKING:
    # The storage ring (and the Raft core under it) loads only when a backup is
    # made or restored, not for every command of the program.
    from railyard.storage import BackupHeader, BackupWriter

# A backup this large shows its progress on stderr; a small one is over at once.
PROGRESS_MIN_BYTES = 8 << 20
# At most one progress line per this many seconds.
PROGRESS_INTERVAL_S = 1.0
# A large state takes a while to copy and send: the whole save gets this long.
DEFAULT_SAVE_TIMEOUT = "10m"
MIB = 1 << 20

snapshot_app = typer.Typer(
    name="snapshot",
    help="Back up the streams state, and rebuild a cluster from a backup.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class _FileSink:
    """Writes the backup as it arrives (a `client.BackupSink`), with progress on stderr."""

    def __init__(self, writer: BackupWriter) -> None:
        self.writer = writer
        self.header: pb.BackupHeader | None = None
        self._shown_at = 0.0

    def start(self, header: pb.BackupHeader) -> None:
        self.header = header
        self.writer.start(header_of(header))
        self._shown_at = time.monotonic()

    def write(self, chunk: bytes) -> None:
        self.writer.write(chunk)
        header = self.header
        if header is None or header.bytes < PROGRESS_MIN_BYTES:
            return
        now = time.monotonic()
        done = self.writer.bytes_written
        if now - self._shown_at >= PROGRESS_INTERVAL_S or done == header.bytes:
            self._shown_at = now
            eprint(
                f"snapshot save: {done / MIB:.1f} of {header.bytes / MIB:.1f} MiB "
                f"({100 * done // max(header.bytes, 1)}%)"
            )


def header_of(header: pb.BackupHeader) -> BackupHeader:
    from railyard.storage import BackupHeader

    return BackupHeader(
        index=header.index,
        term=header.term,
        streams=header.streams,
        records=header.records,
        size=header.bytes,
        sha256=header.sha256,
        cluster=header.cluster,
        node_id=header.node_id,
    )


def summary(header: BackupHeader, file: Path) -> dict[str, Any]:
    return {
        "index": header.index,
        "term": header.term,
        "streams": header.streams,
        "records": header.records,
        "bytes": header.size,
        "sha256": header.sha256,
        "file": str(file),
    }


def _print_summary(result: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(result)
        return
    keys = ("index", "term", "streams", "records", "bytes", "file")
    print_table(list(keys), [[result[k] for k in keys]])


@snapshot_app.command(
    "save",
    epilog=examples(
        "railyard snapshot save backup.ryb",
        "railyard snapshot save /backups/$(date +%F).ryb -c cluster.toml -o json",
    ),
)
@connection_options
def save(
    file: Annotated[Path, typer.Argument(help="Where to write the backup.", dir_okay=False)],
    connection: Connection = DEFAULT_CONNECTION,
    timeout: Annotated[
        str, typer.Option(help="How long the whole save may take (e.g. 90s, 10m).")
    ] = DEFAULT_SAVE_TIMEOUT,
    output: OutputOption = Output.table,
) -> None:
    """Write a backup of every stream, taken through the leader at a linearizable point.

    The file holds every write acknowledged before the command started; it
    is written to FILE.tmp, checked against its SHA-256, fsync'd and renamed
    to FILE, so FILE is either whole or absent.
    """
    try:
        timeout_s = parse_duration_ms(timeout) / 1000
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--timeout") from None
    if timeout_s <= 0:
        raise typer.BadParameter("expected a positive duration", param_hint="--timeout")

    async def go() -> dict[str, Any]:
        if file.is_dir():
            fail(f"{file}: is a directory; expected the path of the backup file to write")
        if not file.parent.is_dir():
            fail(f"{file.parent}: no such directory; create it or write the backup elsewhere")
        from railyard.storage import BackupWriter

        target = connection.target()
        with BackupWriter(file) as writer:
            async with target.client(timeout_s=timeout_s) as client:
                await client.save_snapshot(_FileSink(writer))
            header = writer.finish()
        return summary(header, file)

    _print_summary(run(go()), output)


@snapshot_app.command(
    "restore",
    epilog=examples(
        "railyard snapshot restore backup.ryb -c new-cluster.toml",
        "railyard node start -c new-cluster.toml      # then start the restored cluster",
    ),
)
def restore(
    file: Annotated[Path, typer.Argument(help="A backup made by `railyard snapshot save`.")],
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="The cluster file of the cluster to build; its nodes' data directories "
            "must be absent or empty.",
            dir_okay=False,
        ),
    ],
    output: OutputOption = Output.table,
) -> None:
    """Lay out fresh data directories for every node of a cluster file from a backup.

    Started, those nodes form one cluster whose members are the file's nodes,
    holding exactly the backed-up streams, records and sequence numbers.
    Refuses (writing nothing) a backup that fails its checksum or checks,
    and a data directory that is not empty.
    """
    from railyard.node.restore import RestoreRefused, restore_backup
    from railyard.storage import StorageError

    with errors_end_cleanly():
        cluster = resolve_config(config)
        if not file.is_file():
            fail(f"{file}: no such backup file; expected a file made by `railyard snapshot save`")
        try:
            restored = restore_backup(file, cluster)
        except (RestoreRefused, StorageError) as e:
            fail(f"cannot restore: {e}")
    result = summary(restored.header, file)
    result["nodes"] = {node_id: str(path) for node_id, path in restored.data_dirs.items()}
    if output is Output.json:
        print_json(result)
        return
    _print_summary(result, output)
    print_table(["node", "data dir"], list(restored.data_dirs.items()))
    print(
        f"start the restored cluster with: railyard node start -c {config}",
        file=sys.stderr,
        flush=True,
    )
