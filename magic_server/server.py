"""`python -m magic_server.server`: the server's command line under the name installed services
and scripts start it by (the server itself: magic_server/serve/server.py)."""

import sys

from magic_server.serve.server import main

if __name__ == "__main__":
    sys.exit(main())
