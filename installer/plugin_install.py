"""Copy the plug-in into a GIMP profile (files described by gimp_plugin.manifest), write its
config, and remove exactly that again."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gimp_plugin import manifest
from installer import record as rec
from installer.profiles import profile_from_dir


def plugin_folder(profile_dir: Path, gimp_version: str) -> Path:
    return Path(profile_dir) / "plug-ins" / manifest.VARIANTS[gimp_version].folder


def config_for(server_address: str, server_command: list[str] | None,
               python: str | None = None) -> dict:
    config = {"server_address": server_address, "server_command": server_command}
    if python:
        config["python"] = python  # the GIMP 2.10 plug-in's Python 3 bridge
    return config


def install_plugins(profile_dir: Path, server_address: str, server_command: list[str] | None,
                    *, gimp_version: str | None = None, python: str | None = None,
                    extra_files: dict[str, bytes] | None = None,
                    repo_root: Path = manifest.REPO_ROOT) -> list[Path]:
    """Install the plug-in variant that fits the profile; return the installed entry file(s).

    The variant comes from gimp_version, else the folder name (3.x -> GIMP 3, 2.10 -> GIMP 2.10,
    anything else -> GIMP 3). Files whose content is already right are not touched.
    extra_files: more files for the plug-in folder (relative path -> bytes), e.g. a vendored pyzmq.
    repo_root: where the manifest's source files are (the project folder).
    """
    profile = profile_from_dir(Path(profile_dir), gimp_version)
    variant = manifest.VARIANTS[profile.gimp_version]
    folder = plugin_folder(profile.path, profile.gimp_version)
    old = rec.read_json(folder / rec.PLUGIN_RECORD)
    created: list[Path] = []
    rec.make_dirs(folder, created)
    files: dict[str, str] = {}
    for src, rel in variant.files(Path(repo_root)):
        data = src.read_bytes()
        rec.write_if_changed(folder / rel, data, executable=rel == variant.entry_name)
        files[rel] = rec.sha256_bytes(data)
    config = config_for(server_address, server_command,
                        python if profile.gimp_version == "2.10" else None)
    data = (json.dumps(config, indent=2) + "\n").encode()
    rec.write_if_changed(folder / variant.config_file, data)
    files[variant.config_file] = rec.sha256_bytes(data)
    for rel, data in (extra_files or {}).items():
        rec.write_if_changed(folder / rel, data)
        files[rel] = rec.sha256_bytes(data)
    # files a previous install wrote and this one does not are ours to remove
    for rel in set(old.get("files", {})) - set(files):
        (folder / rel).unlink(missing_ok=True)
    created_rel = [d.relative_to(profile.path).as_posix() for d in created]
    record = {
        "gimp_version": profile.gimp_version,
        "files": files,
        "vendored": old.get("vendored", {}),
        "created_dirs": sorted(set(old.get("created_dirs", [])) | set(created_rel)),
    }
    rec.write_json_if_changed(folder / rec.PLUGIN_RECORD, record)
    _remove_empty_subdirs(folder)
    return [folder / variant.entry_name]


def add_files(folder: Path, files: dict[str, bytes]) -> None:
    """Add vendored files (a pyzmq wheel's content) to an installed plug-in folder and its record;
    later installs keep them, uninstall removes them."""
    record = rec.read_json(folder / rec.PLUGIN_RECORD)
    listed = record.setdefault("vendored", {})
    for rel, data in files.items():
        rec.write_if_changed(folder / rel, data)
        listed[rel] = rec.sha256_bytes(data)
    rec.write_json_if_changed(folder / rec.PLUGIN_RECORD, record)


def uninstall_plugins(profile_dir: Path) -> list[Path]:
    """Remove what install_plugins wrote in this profile; return the removed paths."""
    removed: list[Path] = []
    profile_dir = Path(profile_dir)
    for variant in manifest.VARIANTS.values():
        folder = profile_dir / "plug-ins" / variant.folder
        record_path = folder / rec.PLUGIN_RECORD
        if not record_path.exists():
            continue
        record = rec.read_json(record_path)
        for rel in [*record.get("files", {}), *record.get("vendored", {})]:
            path = folder / rel
            if path.is_file():
                path.unlink()
                removed.append(path)
        record_path.unlink()
        removed.append(record_path)
        for sub in sorted(folder.rglob("__pycache__"), reverse=True):
            for f in sub.glob("*.pyc"):
                f.unlink()
        removed += _remove_empty_subdirs(folder)
        created = [profile_dir / d for d in record.get("created_dirs", [])]
        removed += rec.remove_empty_dirs(created)
    return removed


def check_files(folder: Path) -> list[str]:
    """Problems with an installed plug-in folder: missing or changed files, entry not executable."""
    record = rec.read_json(folder / rec.PLUGIN_RECORD)
    if not record:
        return [f"{folder} has no install record"]
    problems = []
    listed = {**record.get("vendored", {}), **record.get("files", {})}
    for rel, digest in sorted(listed.items()):
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif rec.sha256_bytes(path.read_bytes()) != digest:
            problems.append(f"{rel} was changed")
    entry = folder / f"{folder.name}.py"
    if entry.is_file() and not _executable(entry):
        problems.append(f"{entry.name} is not executable")
    return problems


def _executable(path: Path) -> bool:
    return os.access(path, os.X_OK) or path.suffix == ".py" and os.name == "nt"


def _remove_empty_subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    subdirs = [p for p in folder.rglob("*") if p.is_dir()]
    return rec.remove_empty_dirs(subdirs + [folder])
