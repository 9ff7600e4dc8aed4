"""`python -m magic_server.server`: the server's command line under the name installed services
and scripts start it by (the command itself: magic_server/serve/command.py)."""

import sys

from magic_server.serve.command import main

if __name__ == "__main__":
    sys.exit(main())
