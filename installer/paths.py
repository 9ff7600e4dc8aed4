"""Per-user folders of the installer: data (venv, install record) and systemd units."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def data_dir(system: str, home: Path, env: Mapping[str, str]) -> Path:
    if env.get("MAGIC_DATA_DIR"):
        return Path(env["MAGIC_DATA_DIR"]).expanduser()
    if system == "Windows":
        return Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local") / "magic-gimp"
    if system == "Darwin":
        return home / "Library" / "Application Support" / "magic-gimp"
    base = Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else home / ".local" / "share"
    return base / "magic-gimp"


def systemd_user_dir(home: Path, env: Mapping[str, str]) -> Path:
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return base / "systemd" / "user"
