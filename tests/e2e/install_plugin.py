"""Install the GIMP 3 plug-in into a throwaway profile with the project's installer code
(installer.plugin_install.install_plugins, which copies what gimp_plugin/manifest.py lists).
Usage: python install_plugin.py PROFILE_DIR SERVER_ADDRESS  (prints the installed entry file)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from gimp_plugin import manifest
from installer.plugin_install import install_plugins


def main(argv: list[str]) -> int:
    profile, address = Path(argv[1]), argv[2]
    entries = install_plugins(profile, address, None, gimp_version="3.0")
    entry = Path(entries[0])
    problems = []
    if entry.name != manifest.GIMP3.entry_name or not os.access(entry, os.X_OK):
        problems.append(f"entry {entry} is not an executable {manifest.GIMP3.entry_name}")
    config = json.loads((entry.parent / manifest.CONFIG_FILE).read_text())
    if config.get("server_address") != address:
        problems.append(f"{manifest.CONFIG_FILE} has {config!r}")
    for _src, rel in manifest.GIMP3.files():
        if not (entry.parent / rel).is_file():
            problems.append(f"{rel} was not installed")
    for p in problems:
        print(f"install_plugin: {p}", file=sys.stderr)
    print(entry)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
