"""`python -m magic_server.sample`: the bundled sample edit under the name `make sample` and the
README run (the command itself: magic_server/cli/sample.py)."""

import sys

from magic_server.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
