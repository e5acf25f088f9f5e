"""`python -m railyard.node -c FILE --id ID`: run one node (as `railyard node start --id`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from railyard.config import ConfigError, load_config
from railyard.node import run_node

LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m railyard.node", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, required=True, help="cluster TOML file")
    parser.add_argument("--id", required=True, help="id of the node to run")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return run_node(config, args.id, log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
