"""`python -m installer` = `magic-installer`."""

from __future__ import annotations

import sys

from installer.cli import main

if __name__ == "__main__":
    sys.exit(main())
