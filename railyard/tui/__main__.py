"""`python -m railyard.tui --demo`: the dashboard over the built-in demo data.

Handy to look at the layout at any terminal size without a cluster;
`python -m railyard.tui HOST:PORT ...` watches a real one.
"""

from __future__ import annotations

import sys

from railyard.tui.app import DashboardApp
from railyard.tui.fake import DEMO_NOW, demo_source
from railyard.tui.run import run_dashboard


def main(argv: list[str]) -> int:
    if argv == ["--demo"]:
        DashboardApp(demo_source(), clock=lambda: DEMO_NOW).run()
        return 0
    if not argv or argv[0].startswith("-"):
        print("usage: python -m railyard.tui (--demo | HOST:PORT ...)", file=sys.stderr)
        return 2
    run_dashboard(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
