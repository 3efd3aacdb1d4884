"""`python -m tests.conformance.daemon serve ...`: the real daemon with the conformance apps.

Exactly `tcpstack serve` (same command line, same `tcpstack.cli.main`), with
the servers of `apps.py` added to the app registry first. They are test
fixtures, not features, so they stay out of the product's `tcpstack.apps`.
"""

from __future__ import annotations

import sys

from tcpstack import apps as product_apps
from tcpstack import cli
from tests.conformance.apps import APPS


def main() -> int:
    """Register the conformance apps, then run the ordinary CLI."""
    for name, handler in APPS.items():
        product_apps.APPS.setdefault(name, handler)
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
