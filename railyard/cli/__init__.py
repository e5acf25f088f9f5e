"""The railyard command-line program (Typer); `main` is the console entry point."""

from __future__ import annotations

import os
import sys
import traceback

__all__ = ["main"]

# Set to 1 to see the traceback of an unexpected error instead of one line.
DEBUG_ENV = "RAILYARD_DEBUG"


def main() -> None:
    """Run the `railyard` program with the process's arguments.

    Known errors end in one line inside each command; this catches the
    unexpected rest, so a user never sees a traceback unless they ask for it.
    """
    from railyard.cli.app import app

    try:
        app(prog_name="railyard")
    except Exception as e:  # the last line of defence, reported below
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        detail = " ".join(str(e).split()) or "no details"
        print(
            f"error: unexpected {type(e).__name__}: {detail} "
            f"(rerun with {DEBUG_ENV}=1 for details, and please report it)",
            file=sys.stderr,
        )
        sys.exit(1)
