"""Where GIMP keeps its per-user profile on each platform and packaging (native, Flatpak, Snap)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

FLATPAK_ID = "org.gimp.GIMP"
_VERSION_DIR = re.compile(r"^(\d+)\.(\d+)$")


@dataclass(frozen=True)
class Profile:
    path: Path
    gimp_version: str  # the plug-in variant: "3.0" (any GIMP 3.x) or "2.10"
    flavour: str  # native, flatpak, snap, windows, macos or custom

    def describe(self) -> str:
        return f"GIMP {self.gimp_version} ({self.flavour}) {self.path}"


def variant_for(dir_name: str) -> str | None:
    """'3.0', '3.2' -> '3.0'; '2.10' -> '2.10'; anything else -> None."""
    m = _VERSION_DIR.match(dir_name)
    if not m:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    if major == 3:
        return "3.0"
    if (major, minor) == (2, 10):
        return "2.10"
    return None


def gimp_roots(system: str, home: Path, env: Mapping[str, str]) -> list[tuple[Path, str]]:
    """Folders that hold GIMP version folders (GIMP/3.0, GIMP/2.10), with their flavour."""
    if system == "Windows":
        appdata = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return [(Path(appdata) / "GIMP", "windows")]
    if system == "Darwin":
        return [(home / "Library" / "Application Support" / "GIMP", "macos")]
    config = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return [
        (config / "GIMP", "native"),
        (home / ".var" / "app" / FLATPAK_ID / "config" / "GIMP", "flatpak"),
        (home / "snap" / "gimp" / "current" / ".config" / "GIMP", "snap"),
    ]


def find_profiles(system: str, home: Path, env: Mapping[str, str]) -> list[Profile]:
    """Existing GIMP 3.x and 2.10 profiles (GIMP creates its profile on first start)."""
    found = []
    for root, flavour in gimp_roots(system, home, env):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            version = variant_for(child.name)
            if version and child.is_dir():
                found.append(Profile(child, version, flavour))
    return found


def searched_places(system: str, home: Path, env: Mapping[str, str]) -> list[Path]:
    return [root for root, _ in gimp_roots(system, home, env)]


def profile_from_dir(path: Path, gimp_version: str | None = None) -> Profile:
    """A profile given with --gimp-profile. Its version comes from the folder name (3.0, 2.10);
    a folder with another name is taken as GIMP 3 unless gimp_version says otherwise."""
    path = Path(path).expanduser().resolve()
    version = gimp_version or variant_for(path.name) or "3.0"
    if version not in ("3.0", "2.10"):
        version = variant_for(version) or "3.0"
    return Profile(path, version, "custom")
