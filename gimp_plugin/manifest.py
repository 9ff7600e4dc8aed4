"""What the installer copies into a GIMP profile for each GIMP version.

Layout after installation (for GIMP 3; GIMP 2.10 is the same under its own profile):

    <profile>/plug-ins/<folder>/<folder>.py      entry file, executable (GIMP 3 needs the names to match)
    <profile>/plug-ins/<folder>/gimp_plugin/...   support_files, keeping their package path
    <profile>/plug-ins/<folder>/magic_protocol/   the shared protocol + client package
    <profile>/plug-ins/<folder>/magic_gimp.json   {"server_address": ..., "server_command": [...] | null}

The entry file puts its own folder first on sys.path, so `gimp_plugin.*` and `magic_protocol` import
from the copies next to it and never from a site-packages of another Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = "magic_gimp.json"

# Pure modules shared by both variants (Python 2.7 + 3 common subset, standard library only).
_COMMON = (
    "gimp_plugin/__init__.py",
    "gimp_plugin/edit_request.py",
    "gimp_plugin/errors.py",
    "gimp_plugin/masks.py",
    "gimp_plugin/procedures.py",
    "gimp_plugin/settings.py",
    "gimp_plugin/workflow.py",
)


@dataclass(frozen=True)
class PluginVariant:
    gimp_version: str  # "3.0" or "2.10"
    folder: str  # plug-in folder name under <profile>/plug-ins/
    entry: str  # repo-relative source of the entry file, installed as <folder>/<folder>.py
    support_files: tuple[str, ...]  # repo-relative files, installed at the same relative path
    packages: tuple[str, ...]  # repo-relative packages copied whole (only their *.py files)
    config_file: str = CONFIG_FILE

    @property
    def entry_name(self) -> str:
        return f"{self.folder}.py"

    def files(self, repo_root: Path = REPO_ROOT) -> list[tuple[Path, str]]:
        """(source path, path relative to the plug-in folder) for every file to copy, entry first."""
        out = [(repo_root / self.entry, self.entry_name)]
        out += [(repo_root / rel, rel) for rel in self.support_files]
        for pkg in self.packages:
            for src in sorted((repo_root / pkg).rglob("*.py")):
                out.append((src, src.relative_to(repo_root).as_posix()))
        return out


GIMP3 = PluginVariant(
    gimp_version="3.0",
    folder="magic-gimp",
    entry="gimp_plugin/magic_gimp3.py",
    support_files=_COMMON + ("gimp_plugin/gimp3_host.py", "gimp_plugin/cancel_guard.py",
                             "gimp_plugin/memory.py"),
    packages=("magic_protocol",),
)

GIMP2 = PluginVariant(
    gimp_version="2.10",
    folder="magic-gimp",
    entry="gimp_plugin/magic_gimp2.py",
    support_files=_COMMON + ("gimp_plugin/bridge_client.py",),
    # The 2.10 plug-in runs under Python 2.7 and never imports magic_protocol itself: it starts
    # `python3 -m magic_protocol.bridge` from this folder (the python3 comes from magic_gimp.json).
    packages=("magic_protocol",),
)

VARIANTS: dict[str, PluginVariant] = {v.gimp_version: v for v in (GIMP3, GIMP2)}

# Procedure names the plug-in registers (documented, kept exact).
PROCEDURES = (
    "python-fu-magic-synthesize",
    "python-fu-magic-move-object",
    "python-fu-magic-copy-object",
    "python-fu-magic-remove-object",
    "python-fu-magic-layout",
    "python-fu-magic-label-map",
    "python-fu-magic-keep-sample",
)
