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
               python: str | None = None, curve: dict | None = None) -> dict:
    """magic_gimp.json. curve: {"server_public_key", "client_public_key", "client_secret_key"}
    (Z85 text) for a server bound with CurveZMQ (GIMP 3)."""
    config = {"server_address": server_address, "server_command": server_command}
    if python:
        config["python"] = python  # the GIMP 2.10 plug-in's Python 3 bridge
    if curve:
        config.update(curve)
    return config


def read_key_file(path: Path, secret: bool = False) -> str:
    """The Z85 public (or secret) key of a ZeroMQ certificate file (`magic-server --keygen`
    writes server.key, client.key and client.key_secret), read without pyzmq."""
    want = "secret-key" if secret else "public-key"
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == want:
            key = value.strip().strip('"')
            if len(key) == 40:
                return key
    kind = "secret key (a .key_secret file)" if secret else "public key"
    raise ValueError(f"{path} holds no CurveZMQ {kind}")


def curve_config(server_key: Path | None, client_keys: Path | None) -> dict | None:
    """magic_gimp.json's CurveZMQ fields from --server-key FILE and --client-keys FILE."""
    if server_key is None and client_keys is None:
        return None
    if server_key is None or client_keys is None:
        raise ValueError("CurveZMQ needs both --server-key (the server's server.key) and "
                         "--client-keys (a client.key_secret the server authorises)")
    return {"server_public_key": read_key_file(server_key),
            "client_public_key": read_key_file(client_keys),
            "client_secret_key": read_key_file(client_keys, secret=True)}


def install_plugins(profile_dir: Path, server_address: str, server_command: list[str] | None,
                    *, gimp_version: str | None = None, python: str | None = None,
                    curve: dict | None = None,
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
                        python if profile.gimp_version == "2.10" else None, curve)
    data = (json.dumps(config, indent=2) + "\n").encode()
    rec.write_if_changed(folder / variant.config_file, data)
    if curve:
        os.chmod(folder / variant.config_file, 0o600)  # it holds a secret key
    files[variant.config_file] = rec.sha256_bytes(data)
    for rel, data in (extra_files or {}).items():
        rec.write_if_changed(folder / rel, data)
        files[rel] = rec.sha256_bytes(data)
    # files a previous install wrote and this one does not are ours to remove
    for rel in set(old.get("files", {})) - set(files):
        (folder / rel).unlink(missing_ok=True)
    # relative to the profile; folders above it (a profile that did not exist yet) as "..", "../.."
    created_rel = [Path(os.path.relpath(d, profile.path)).as_posix() for d in created]
    record = {
        "gimp_version": profile.gimp_version,
        "files": files,
        "vendored": old.get("vendored", {}),
        "created_dirs": sorted(set(old.get("created_dirs", [])) | set(created_rel)),
    }
    rec.write_json_if_changed(folder / rec.PLUGIN_RECORD, record)
    _remove_empty_subdirs(folder)
    return [folder / variant.entry_name]


def remove_vendored(folder: Path, keep_prefix: str | None = None) -> list[str]:
    """Remove vendored files (all, or those outside keep_prefix) from a plug-in folder: a pyzmq
    wheel that an older install put at the folder's top would shadow GIMP's own pyzmq."""
    record = rec.read_json(folder / rec.PLUGIN_RECORD)
    listed = record.get("vendored", {})
    gone = [rel for rel in listed if keep_prefix is None or not rel.startswith(keep_prefix)]
    for rel in gone:
        (folder / rel).unlink(missing_ok=True)
        del listed[rel]
    if gone:
        rec.write_json_if_changed(folder / rec.PLUGIN_RECORD, record)
        for sub in sorted(folder.rglob("__pycache__"), reverse=True):
            for f in sub.glob("*.pyc"):
                f.unlink()
        _remove_empty_subdirs(folder)
        folder.mkdir(parents=True, exist_ok=True)
    return gone


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
        created = [Path(os.path.normpath(profile_dir / d))
                   for d in record.get("created_dirs", [])]
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
