"""Test helpers for the installer: a fake machine (HOME with GIMP profiles, a scripted runner)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from gimp_plugin import manifest
from installer.cli import Context

VENV_PY = sys.executable

LINUX_LAYOUTS = {
    "native-3": ".config/GIMP/3.0",
    "native-2.10": ".config/GIMP/2.10",
    "flatpak-3": ".var/app/org.gimp.GIMP/config/GIMP/3.0",
    "snap-3": "snap/gimp/current/.config/GIMP/3.0",
}


def make_profiles(home: Path, rels) -> list[Path]:
    out = []
    for rel in rels:
        (home / rel).mkdir(parents=True)
        (home / rel / "gimprc").write_text("# user settings\n")
        out.append(home / rel)
    return out


def fake_repo(dest: Path) -> Path:
    """The project's plug-in sources as the manifest lists them; files another helper has not
    written yet are stand-ins, so these tests exercise the copying, not the plug-in."""
    for variant in manifest.VARIANTS.values():
        for src, _ in variant.files(manifest.REPO_ROOT):
            rel = src.relative_to(manifest.REPO_ROOT)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.exists():
                shutil.copyfile(src, target)
            else:
                target.write_text(f"# stand-in for {rel}\n")
        for rel in [variant.entry, *variant.support_files]:
            if not (dest / rel).exists():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / rel).write_text(f"# stand-in for {rel}\n")
    (dest / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (dest / "magic_server").mkdir(exist_ok=True)
    return dest


def fake_wheel(dest: Path, version: str = "26.0.0", python: str = "3.11") -> Path:
    """A wheel shaped like pyzmq's (for `python`), with a pure-Python stand-in `zmq` package."""
    cp = "cp" + python.replace(".", "")
    path = dest / f"pyzmq-{version}-{cp}-{cp}-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("zmq/__init__.py", f"__version__ = {version!r}\n")
        zf.writestr("zmq/backend/__init__.py", "")
        zf.writestr(f"pyzmq-{version}.dist-info/RECORD", "")
    return path


class Runner:
    """Runs real Pythons for real; scripts pip download, nvidia-smi, systemctl and flatpak."""

    def __init__(self, gpu: str | None = None, pip_ok: bool = True) -> None:
        self.calls: list[list[str]] = []
        self.gpu = gpu
        self.pip_ok = pip_ok

    def __call__(self, argv, **kw):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[0] == "nvidia-smi":
            return subprocess.CompletedProcess(argv, 0 if self.gpu else 9, self.gpu or "", "")
        if argv[:2] == ["systemctl", "--user"]:
            return subprocess.CompletedProcess(argv, 0, "", "")
        if "download" in argv and "pip" in argv:
            if not self.pip_ok:
                return subprocess.CompletedProcess(argv, 1, "", "ERROR: No matching distribution")
            fake_wheel(Path(argv[argv.index("-d") + 1]),
                       python=argv[argv.index("--python-version") + 1])
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[1:3] == ["-m", "venv"]:  # a venv whose python is this one (torch is not fetched)
            py = Path(argv[3]) / "bin" / "python"
            py.parent.mkdir(parents=True)
            py.symlink_to(VENV_PY)
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[1:4] == ["-m", "pip", "install"]:
            return subprocess.CompletedProcess(argv, 0, "", "")
        if argv[0].endswith("flatpak"):  # GIMP's Flatpak Python, here with pyzmq
            out = json.dumps({"version": "3.12", "platform": "linux-x86_64", "zmq": "26.2.0"})
            return subprocess.CompletedProcess(argv, 0, out + "\n", "")
        kw.pop("capture_output", None)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                              check=False)


def which_factory(python3: list[str] | str | None):
    """which() where python3 is the given interpreter and there is no GPU tool."""
    def which(name: str) -> str | None:
        if name == "python3":
            return python3 if isinstance(python3, str) else None
        if name == "flatpak":
            return "/usr/bin/flatpak"
        return None
    return which


def no_zmq_python(tmp: Path) -> str:
    """An executable Python that cannot import zmq: the project's venv Python with -S (no site)."""
    script = tmp / "gimp-python3"
    script.write_text(f"#!/bin/sh\nexec {VENV_PY} -S \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def context(home: Path, repo: Path, *, system: str = "Linux", env=None, runner=None,
            python3: str | None = VENV_PY, validate=None, connect=None,
            os_release=None) -> tuple[Context, io.StringIO]:
    out = io.StringIO()
    env = {"HOME": str(home), "MAGIC_CACHE_DIR": str(home / "cache"),
           "MAGIC_DATA_DIR": str(home / "data"), **(env or {})}
    ctx = Context(system, "x86_64", home, env, out, runner=runner or Runner(),
                  which=which_factory(python3), pip=[VENV_PY, "-m", "pip"],
                  os_release=os_release or {"ID": "debian"}, validate=validate,
                  connect=connect, project_root=repo)
    return ctx, out


def small_ckpt(path: Path, seed: int = 0) -> Path:
    torch.save({"model": {"w": torch.randn(64, generator=torch.Generator().manual_seed(seed))}},
               path)
    return path


def small_validator(path: Path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    if set(state) != {"w"}:
        raise ValueError("wrong tensors")
    return state


def snapshot(root: Path, dir_mtimes: bool = True) -> dict[str, tuple]:
    """Every path under root with its content hash, mode and mtime (a folder's mtime changes
    whenever an entry is added or removed, so it can be left out)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() else b""
        mtime = st.st_mtime_ns if dir_mtimes or not p.is_dir() else 0
        out[p.relative_to(root).as_posix()] = (hash(data), st.st_mode, mtime)
    return out


