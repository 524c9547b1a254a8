"""``python -m keysentry``: the command-line interface."""

from __future__ import annotations

import sys

from keysentry.cli import main

if __name__ == "__main__":
    sys.exit(main())
