"""The `railyard` Typer application: commands registered in one place.

The CLI is thin: parse, call the client (or start nodes), render. Every
client command takes -c/--config or --endpoints and -o/--output; see
railyard.cli.common for the exit-code and error rules.
"""

from __future__ import annotations

from typing import Annotated

import typer

from railyard.cli import cluster, records
from railyard.cli.bench import bench_app
from railyard.cli.certs import cert_app
from railyard.cli.members import member_app
from railyard.cli.nodes import node_app
from railyard.cli.snapshot import snapshot_app
from railyard.cli.streams import stream_app

HELP = """\
railyard: a replicated, durable stream store built on Raft.

Start a local 3-node cluster, then use it from another terminal:

  railyard node start

  railyard put orders 'order 17 shipped'

  railyard get orders --from-start

  railyard status

Client commands find the cluster with -c FILE (or RAILYARD_CONFIG), or
--endpoints host:port,... (or RAILYARD_ENDPOINTS); by default ./railyard.toml
if present, else the built-in local cluster (configs/local.toml).
"""

app = typer.Typer(
    name="railyard",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version() -> str:
    # importlib.metadata is slow to import: only --version pays for it.
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("railyard")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        print(f"railyard {_version()}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Options of the program itself (the commands' own come after their name)."""


app.add_typer(node_app)
app.add_typer(stream_app)
app.add_typer(bench_app)
app.add_typer(cert_app)
app.add_typer(snapshot_app)
app.add_typer(member_app)
app.command("put", epilog=records.PUT_EPILOG)(records.put)
app.command("get", epilog=records.GET_EPILOG)(records.get)
app.command("status", epilog=cluster.STATUS_EPILOG)(cluster.status)
app.command("force-election", epilog=cluster.FORCE_ELECTION_EPILOG)(cluster.force_election)
app.command("top", epilog=cluster.TOP_EPILOG)(cluster.top)
