"""GIMP's own Python: find it, check that it can import zmq, vendor a pyzmq wheel if not, or say
exactly how to fix it."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from installer.profiles import FLATPAK_ID, Profile

Runner = Callable[..., subprocess.CompletedProcess]

# Prints what the installer needs to know about a Python; argv[1] (optional) goes first on sys.path
# as the plug-in's own folder does inside GIMP.
PROBE = (
    "import json, sys, sysconfig\n"
    "if len(sys.argv) > 1: sys.path.insert(0, sys.argv[1])\n"
    "try:\n"
    "    import zmq; z = zmq.__version__\n"
    "except Exception as e:\n"
    "    z = None\n"
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2],"
    " 'platform': sysconfig.get_platform(), 'zmq': z, 'executable': sys.executable}))\n"
)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run(argv, check=False, **kw)


@dataclass
class PythonInfo:
    command: list[str]
    version: str | None = None  # "3.12"
    platform: str | None = None  # sysconfig.get_platform(): linux-x86_64, win-amd64, macosx-11.0-arm64
    zmq: str | None = None  # pyzmq version if importable
    error: str | None = None


def gimp_python_command(profile: Profile, system: str, env: Mapping[str, str],
                        which: Callable[[str], str | None]) -> list[str] | None:
    """The command that runs the Python GIMP uses for this profile's plug-ins."""
    py = "python3" if profile.gimp_version == "3.0" else "python2"
    if profile.flavour == "flatpak":
        return [which("flatpak") or "flatpak", "run", f"--command={py}", FLATPAK_ID]
    if profile.flavour == "snap":
        return [f"/snap/gimp/current/usr/bin/{py}"]
    if system == "Windows":
        return _first_existing(_windows_pythons(profile.gimp_version, env))
    if system == "Darwin":
        names = ("GIMP.app", "GIMP-3.0.app") if profile.gimp_version == "3.0" else (
            "GIMP-2.10.app", "GIMP.app")
        apps = [Path("/Applications") / n / "Contents" / "MacOS" / m for n in names
                for m in ("python3", "python")]
        return _first_existing(apps)
    interp = _interpreter_from_gimp(profile.gimp_version)
    if interp:
        return [interp]
    found = which(py) or (which("python") if profile.gimp_version == "2.10" else None)
    return [found] if found else None


def _interpreter_from_gimp(gimp_version: str) -> str | None:
    """GIMP reads plug-in interpreters from lib/gimp/<api>/interpreters/*.interp (python3=/usr/...)."""
    api = "3.0" if gimp_version == "3.0" else "2.0"
    key = "python3" if gimp_version == "3.0" else "python"
    for f in sorted(glob.glob(f"/usr/lib*/gimp/{api}/interpreters/*.interp")
                    + glob.glob(f"/usr/lib/*/gimp/{api}/interpreters/*.interp")):
        try:
            for line in Path(f).read_text().splitlines():
                name, _, value = line.partition("=")
                if name.strip() == key and os.path.isfile(value.strip()):
                    return value.strip()
        except OSError:
            continue
    return None


def _windows_pythons(gimp_version: str, env: Mapping[str, str]) -> list[Path]:
    roots = [Path(env[v]) for v in ("ProgramFiles", "ProgramW6432", "LOCALAPPDATA") if env.get(v)]
    if gimp_version == "3.0":
        rels = ["GIMP 3/bin/python.exe", "GIMP 3/bin/python3.exe",
                "Programs/GIMP 3/bin/python.exe"]
    else:
        rels = ["GIMP 2/Python/python.exe", "GIMP 2/lib/gimp/2.0/python/python.exe"]
    return [r / rel for r in roots for rel in rels]


def _first_existing(paths: list[Path]) -> list[str] | None:
    for p in paths:
        if p.is_file():
            return [str(p)]
    return None


def probe(command: list[str], runner: Runner = run, plugin_dir: Path | None = None) -> PythonInfo:
    argv = [*command, "-c", PROBE] + ([str(plugin_dir)] if plugin_dir else [])
    try:
        proc = runner(argv)
    except (OSError, subprocess.SubprocessError) as e:
        return PythonInfo(command, error=f"cannot run {command[0]} ({e})")
    last = (proc.stdout or "").strip().splitlines()[-1:] or [""]
    try:
        data = json.loads(last[0])
    except ValueError:
        err = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return PythonInfo(command, error=f"{' '.join(command)} failed: {err[0]}")
    return PythonInfo(command, data.get("version"), data.get("platform"), data.get("zmq"))


def pip_platforms(platform: str) -> list[str]:
    """pip --platform tags for a sysconfig platform (pyzmq ships manylinux, win and macOS wheels)."""
    p = platform.replace("-", "_").replace(".", "_")
    if p.startswith("linux_"):
        arch = p[len("linux_"):]
        return [f"manylinux_2_28_{arch}", f"manylinux_2_17_{arch}", f"manylinux2014_{arch}",
                f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    if p.startswith("macosx_"):
        arch = p.rsplit("_", 1)[-1]
        tags = [f"macosx_{v}_{a}" for v in ("10_15", "11_0", "10_9")
                for a in (arch, "universal2")]
        return tags
    if p in ("win_amd64", "win32", "win_arm64"):
        return [p]
    return [p]


def pip_download_command(info: PythonInfo, dest: Path, pip: list[str]) -> list[str]:
    spec = "pyzmq" if info.version and not info.version.startswith("2.") else "pyzmq<20"
    argv = [*pip, "download", spec, "--only-binary=:all:", "--no-deps",
            "--python-version", info.version or "3", "--implementation", "cp", "-d", str(dest)]
    for tag in pip_platforms(info.platform or ""):
        argv += ["--platform", tag]
    return argv


def vendored_pyzmq(info: PythonInfo, pip: list[str], runner: Runner = run) -> dict[str, bytes]:
    """Download a pyzmq wheel for GIMP's Python and return its files (relative path -> bytes),
    to be placed in the plug-in folder, which the plug-in puts first on sys.path."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = runner(pip_download_command(info, Path(tmp), pip))
        wheels = sorted(Path(tmp).glob("pyzmq-*.whl"))
        if proc.returncode != 0 or not wheels:
            err = (proc.stderr or "").strip().splitlines()[-1:] or ["no wheel"]
            raise RuntimeError(f"pip could not download a pyzmq wheel for Python {info.version} "
                               f"on {info.platform}: {err[0]}")
        files = {}
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in zf.namelist():
                if not name.endswith("/") and ".." not in Path(name).parts:
                    files[name] = zf.read(name)
        return files


def fix_hint(profile: Profile, info: PythonInfo | None, system: str,
             os_release: Mapping[str, str] | None = None) -> str:
    """The exact command that gives GIMP's Python pyzmq."""
    if profile.gimp_version == "2.10":
        return ("the GIMP 2.10 plug-in talks to the server through Python 3: run "
                "`magic-installer install` again so its config names a Python 3 with pyzmq")
    if profile.flavour == "flatpak":
        return (f"run `magic-installer install` with internet access so a pyzmq wheel is placed "
                f"in the plug-in folder, or `flatpak run --command=sh {FLATPAK_ID} -c "
                "'python3 -m pip install --user pyzmq'`")
    if profile.flavour == "snap":
        return ("run `magic-installer install` with internet access so a pyzmq wheel is placed in "
                "the plug-in folder (the Snap's Python cannot install packages)")
    exe = info.command[0] if info and info.command else "python3"
    if system == "Windows":
        return f'run `"{exe}" -m pip install pyzmq` (GIMP\'s own Python), then restart GIMP'
    if system == "Darwin":
        return f"run `{exe} -m pip install --user pyzmq`, then restart GIMP"
    ids = " ".join((os_release or {}).get(k, "") for k in ("ID", "ID_LIKE")).split()
    if any(i in ("debian", "ubuntu") for i in ids):
        return "run `sudo apt install python3-zmq`, then restart GIMP"
    if any(i in ("fedora", "rhel", "centos") for i in ids):
        return "run `sudo dnf install python3-zmq`, then restart GIMP"
    if any(i in ("arch",) for i in ids):
        return "run `sudo pacman -S python-pyzmq`, then restart GIMP"
    if any(i in ("opensuse", "suse") for i in ids):
        return "run `sudo zypper install python3-pyzmq`, then restart GIMP"
    return (f"install pyzmq for {exe} (Debian/Ubuntu: `sudo apt install python3-zmq`, Fedora: "
            "`sudo dnf install python3-zmq`, Arch: `sudo pacman -S python-pyzmq`), then restart GIMP")


def read_os_release(path: Path = Path("/etc/os-release")) -> dict[str, str]:
    out = {}
    try:
        for line in path.read_text().splitlines():
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip().strip('"')
    except OSError:
        pass
    return out
