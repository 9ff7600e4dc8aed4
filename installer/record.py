"""Install records: what the installer wrote, so a second install changes nothing and uninstall
removes exactly that.

A plug-in folder holds `.magic-install.json`: {"files": {relative path: sha256}, "created_dirs":
[folders the install created, relative to the profile]}. The data folder holds `install.json`:
{"profiles": [...], "venv": path or null, "systemd_unit": path or null, "weights_added": bool}.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

PLUGIN_RECORD = ".magic-install.json"
GLOBAL_RECORD = "install.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_if_changed(path: Path, data: dict) -> bool:
    return write_if_changed(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def write_if_changed(path: Path, data: bytes, executable: bool = False) -> bool:
    """Write only when the content (or the executable bit) differs; True if something changed."""
    changed = False
    try:
        same = path.read_bytes() == data
    except OSError:
        same = False
    if not same:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        changed = True
    if executable:
        mode = path.stat().st_mode
        wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
        if mode != wanted:
            path.chmod(wanted)
            changed = True
    return changed


def make_dirs(path: Path, created: list[Path]) -> None:
    """mkdir -p that remembers which folders it created (outermost first)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)


def remove_empty_dirs(dirs: list[Path]) -> list[Path]:
    removed = []
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only if empty: what the user put there stays
            removed.append(d)
        except OSError:
            pass
    return removed
