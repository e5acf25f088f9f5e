"""What every command shares: where the cluster is, how results print, how errors end.

Rules the commands keep:

- Results go to stdout, diagnostics to stderr.
- Exit 0 on success, 1 on an error, 2 on a usage error (Typer/Click's own).
- An error is one line on stderr -- what went wrong and what to do -- never
  a traceback: `fail()` raises `CliError`, and `errors_end_cleanly` turns
  `CliError`, `ConfigError`, `CertError` and the client's `RailyardError` into that line
  and exit code 1, in one place.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from railyard.certs import CertError
from railyard.client import ClientTls, NotFound, RailyardClient, RailyardError
from railyard.config import ClusterConfig, ConfigError, default_config, load_config, split_address

# A cluster file in the current directory is picked up without -c.
LOCAL_CONFIG_FILE = Path("railyard.toml")
CONFIG_ENV = "RAILYARD_CONFIG"
ENDPOINTS_ENV = "RAILYARD_ENDPOINTS"
CACERT_ENV = "RAILYARD_CACERT"
CERT_ENV = "RAILYARD_CERT"
KEY_ENV = "RAILYARD_KEY"
EXIT_ERROR = 1

T = TypeVar("T")


class Output(enum.StrEnum):
    table = "table"
    json = "json"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar=CONFIG_ENV,
        help="Cluster file (TOML). Default: ./railyard.toml if present, "
        "else the built-in local cluster (configs/local.toml).",
        show_default=False,
        dir_okay=False,
    ),
]
EndpointsOption = Annotated[
    str | None,
    typer.Option(
        "--endpoints",
        envvar=ENDPOINTS_ENV,
        help="Comma-separated host:port of nodes to talk to; takes precedence over -c.",
        show_default=False,
    ),
]
CacertOption = Annotated[
    Path | None,
    typer.Option(
        "--cacert",
        envvar=CACERT_ENV,
        help="CA certificate of a TLS cluster (PEM). Default: [tls] ca_file of the cluster file.",
        show_default=False,
        dir_okay=False,
    ),
]
CertOption = Annotated[
    Path | None,
    typer.Option(
        "--cert",
        envvar=CERT_ENV,
        help="Client certificate (PEM) for a TLS cluster. Default: [tls] client_cert_file.",
        show_default=False,
        dir_okay=False,
    ),
]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key",
        envvar=KEY_ENV,
        help="The client certificate's key (PEM). Default: [tls] client_key_file.",
        show_default=False,
        dir_okay=False,
    ),
]
# `put` has --key for the record's key already: its TLS key is --tls-key.
PutKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--tls-key",
        envvar=KEY_ENV,
        help="The client certificate's key (PEM; --key is the record's key here). "
        "Default: [tls] client_key_file.",
        show_default=False,
        dir_okay=False,
    ),
]
OutputOption = Annotated[
    Output,
    typer.Option("--output", "-o", help="table for people, json for scripts."),
]


class CliError(Exception):
    """An error the user can act on; the message is the whole story (one line)."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def eprint(message: str) -> None:
    """One diagnostic line on stderr."""
    print(message, file=sys.stderr, flush=True)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


@contextmanager
def errors_end_cleanly() -> Iterator[None]:
    """Turn known errors into one stderr line and exit code 1."""
    try:
        yield
    except BrokenPipeError:
        # The reader went away (`railyard get s | head`): not an error of ours.
        _silence_stdout()
        raise typer.Exit(0) from None
    except KNOWN_ERRORS as e:
        eprint(error_line(e))
        raise typer.Exit(EXIT_ERROR) from None
    except BaseExceptionGroup as group:
        # A task group wraps what its tasks raised; report the first known one.
        known = _first_known(group)
        if known is None:
            raise
        eprint(error_line(known))
        raise typer.Exit(EXIT_ERROR) from None


def error_line(error: BaseException) -> str:
    """The one line an error prints: what went wrong, and what to do where we can tell."""
    text = one_line(str(error))
    if isinstance(error, NotFound) and "stream" in text:
        text += "; `railyard stream list` shows the streams"
    return f"error: {text}"


KNOWN_ERRORS = (CliError, ConfigError, CertError, RailyardError, OSError)


def _first_known(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            inner = _first_known(e)
            if inner is not None:
                return inner
        elif isinstance(e, KNOWN_ERRORS):
            return e
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine with the one-line error handling."""
    with errors_end_cleanly():
        return asyncio.run(coro)


@dataclass(frozen=True)
class TlsFiles:
    """--cacert, --cert and --key as given (each may be None)."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Target:
    """Where a command talks to: endpoints, the cluster file when there is one, and TLS."""

    endpoints: list[str]
    config: ClusterConfig | None
    tls: ClientTls | None = None

    def client(self, **options: Any) -> RailyardClient:
        """A client for these endpoints, over TLS when the cluster uses it."""
        return RailyardClient(self.endpoints, tls=self.tls, **options)

    @property
    def node_ids(self) -> dict[str, str]:
        """address -> node id, as far as the cluster file tells."""
        if self.config is None:
            return {}
        return {n.address: n.id for n in self.config.nodes}


@dataclass(frozen=True)
class Connection:
    """-c/--config, --endpoints, --cacert, --cert and --key as given: where to reach the cluster."""

    config: Path | None = None
    endpoints: str | None = None
    tls: TlsFiles = TlsFiles()

    def target(self) -> Target:
        return resolve_target(self.config, self.endpoints, self.tls)


# A command's `connection` parameter defaults to this: no flag given.
DEFAULT_CONNECTION = Connection()
# The options a `connection: Connection` parameter stands for, in the order they are listed.
_CONNECTION_OPTIONS = (
    ("config", ConfigOption),
    ("endpoints", EndpointsOption),
    ("cacert", CacertOption),
    ("cert", CertOption),
    ("key", KeyOption),
)


def connection_options(command: Callable[..., T]) -> Callable[..., T]:
    """Give a command -c/--config, --endpoints, --cacert, --cert and --key as one parameter.

    Typer sees the five options where the command's `connection: Connection`
    parameter stands (so its help lists them there), and the command is
    called with them gathered into that `Connection`, resolved by the
    command itself, where its errors end cleanly.
    """
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.name != "connection":
            parameters.append(parameter)
            continue
        parameters += [
            parameter.replace(name=name, default=None, annotation=option)
            for name, option in _CONNECTION_OPTIONS
        ]
    if len(parameters) == len(signature.parameters):
        raise TypeError(f"{command.__name__}: expected a `connection: Connection` parameter")

    @functools.wraps(command)
    def with_connection(
        *,
        config: Path | None,
        endpoints: str | None,
        cacert: Path | None,
        cert: Path | None,
        key: Path | None,
        **other: Any,
    ) -> T:
        tls = TlsFiles(cacert, cert, key)
        return command(connection=Connection(config, endpoints, tls), **other)

    with_connection.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_connection.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_connection


def resolve_config(path: Path | None) -> ClusterConfig:
    """-c FILE (or RAILYARD_CONFIG), else ./railyard.toml, else the built-in cluster."""
    if path is not None:
        config = load_config(path)
    elif LOCAL_CONFIG_FILE.is_file():
        config = load_config(LOCAL_CONFIG_FILE)
    else:
        config = default_config()
    for warning in config.warnings:
        eprint(f"warning: {warning}")
    return config


def parse_endpoints(text: str) -> list[str]:
    endpoints = [e.strip() for e in text.split(",") if e.strip()]
    if not endpoints:
        fail("--endpoints: expected host:port[,host:port...]")
    for endpoint in endpoints:
        try:
            split_address(endpoint)
        except ValueError as e:
            fail(f"--endpoints: {e}")
    return endpoints


def resolve_target(
    config: Path | None, endpoints: str | None, tls: TlsFiles | None = None
) -> Target:
    """Endpoints from --endpoints or the cluster file; TLS from the flags, else its [tls]."""
    tls = tls or TlsFiles()
    if endpoints:
        return Target(parse_endpoints(endpoints), None, client_tls(tls, None))
    cluster = resolve_config(config)
    return Target(cluster.endpoints, cluster, client_tls(tls, cluster))


def client_tls(flags: TlsFiles, cluster: ClusterConfig | None) -> ClientTls | None:
    """What the client presents: --cacert/--cert/--key, else the file's [tls] client keys."""
    file_tls = cluster.tls if cluster is not None else None
    cacert = flags.cacert or (file_tls.ca_file if file_tls else None)
    if flags.cert or flags.key:
        cert, key = flags.cert, flags.key
    elif file_tls is not None:
        cert, key = file_tls.client_cert_file, file_tls.client_key_file
    else:
        cert = key = None
    if cacert is None:
        if cert or key:
            fail("--cert/--key: a TLS client also needs the cluster's CA: add --cacert")
        return None
    return ClientTls.from_files(cacert, cert, key)


def print_json(obj: object) -> None:
    print(json.dumps(obj, separators=(", ", ": ")), flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain aligned table (no colours: it must read the same when piped)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    print("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.flush()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def examples(*lines: str) -> str:
    """A command's help epilog; the \\b keeps Click from re-wrapping the lines."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)
