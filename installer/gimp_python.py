"""GIMP's own Python: find it, check that it can import zmq, vendor a pyzmq wheel if not, or say
exactly how to fix it."""

from __future__ import annotations

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

VENDOR_DIR = "vendor"  # <plug-in folder>/vendor/<tag>/: pyzmq wheels, one folder per Python


def vendor_tag(version: str, platform: str) -> str:
    """'3.13', 'linux-x86_64' -> 'cp313-linux_x86_64' (= gimp_plugin.gimp3_host.vendor_tag)."""
    return "cp" + version.replace(".", "") + "-" + platform.replace("-", "_").replace(".", "_")


# Prints what the installer needs to know about a Python. argv[1] (optional): the plug-in folder;
# like the plug-in, the probe imports the Python's own pyzmq first and only when there is none
# the one vendored for exactly this Python (vendor/<tag>/), so a vendored copy never shadows it.
PROBE = (
    "import json, os, sys, sysconfig\n"
    "tag = 'cp%d%d-' % sys.version_info[:2] + sysconfig.get_platform().replace('-', '_')"
    ".replace('.', '_')\n"
    "z, where = None, None\n"
    "try:\n"
    "    import zmq; z, where = zmq.__version__, 'system'\n"
    "except Exception:\n"
    "    if len(sys.argv) > 1:\n"
    "        sys.path.insert(0, os.path.join(sys.argv[1], 'vendor', tag))\n"
    "        try:\n"
    "            import zmq; z, where = zmq.__version__, 'vendored'\n"
    "        except Exception:\n"
    "            pass\n"
    "print(json.dumps({'version': '%d.%d' % sys.version_info[:2],"
    " 'platform': sysconfig.get_platform(), 'zmq': z, 'zmq_from': where, 'tag': tag,"
    " 'executable': sys.executable}))\n"
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
    zmq_from: str | None = None  # "system" (the Python's own) or "vendored" (the plug-in's)
    executable: str | None = None
    source: str = ""  # how the installer found this Python (an .interp file, the #! line, ...)

    @property
    def tag(self) -> str | None:
        return vendor_tag(self.version, self.platform) if self.version and self.platform else None

    def describe(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"Python {self.version} at {self.executable or ' '.join(self.command)}{where}"


def gimp_python_command(profile: Profile, system: str, env: Mapping[str, str],
                        which: Callable[[str], str | None]) -> list[str] | None:
    """The command that runs the Python GIMP uses for this profile's plug-ins."""
    return find_gimp_python(profile, system, env, which)[0]


def find_gimp_python(profile: Profile, system: str, env: Mapping[str, str],
                     which: Callable[[str], str | None],
                     prefixes: list[Path] | None = None) -> tuple[list[str] | None, str]:
    """(command, how it was found) for the Python GIMP runs this profile's plug-ins with.

    GIMP 3 starts a .py plug-in with the interpreter its lib/gimp/3.0/interpreters/*.interp
    files name for the .py extension or for "python3"/"python" (Windows and macOS builds ship
    one); with none it executes the file, whose `#!/usr/bin/env python3` line finds python3 on
    GIMP's PATH (Debian, Fedora, ...)."""
    py = "python3" if profile.gimp_version == "3.0" else "python2"
    if profile.flavour == "flatpak":
        return ([which("flatpak") or "flatpak", "run", f"--command={py}", FLATPAK_ID],
                "the Flatpak's python3")
    if profile.flavour == "snap":
        return [f"/snap/gimp/current/usr/bin/{py}"], "the Snap's python3"
    if prefixes is None:
        prefixes = gimp_prefixes(profile.gimp_version, system, env, which)
    if profile.gimp_version == "3.0":
        for prefix in prefixes:
            found = interpreter_from_interp_files(prefix, which)
            if found:
                return [found[0]], f"named in {found[1]}"
    if system == "Windows":
        exe = _first_existing(_windows_pythons(profile.gimp_version, env))
        return exe, "GIMP's bin folder" if exe else ""
    if system == "Darwin":
        names = ("GIMP.app", "GIMP-3.0.app") if profile.gimp_version == "3.0" else (
            "GIMP-2.10.app", "GIMP.app")
        apps = [Path("/Applications") / n / "Contents" / "MacOS" / m for n in names
                for m in ("python3", "python")]
        exe = _first_existing(apps)
        return exe, "inside GIMP.app" if exe else ""
    found = which(py) or (which("python") if profile.gimp_version == "2.10" else None)
    if not found:
        return None, ""
    return [found], f"the plug-in's #!/usr/bin/env {py} line on PATH (no .interp names one)"


def gimp_prefixes(gimp_version: str, system: str, env: Mapping[str, str],
                  which: Callable[[str], str | None]) -> list[Path]:
    """Installation prefixes of GIMP (where lib/gimp/<api>/ lives), the running binary's first."""
    out: list[Path] = []
    names = ("gimp-3.0", "gimp-3", "gimp") if gimp_version == "3.0" else ("gimp-2.10", "gimp")
    for name in names:
        exe = which(name)
        if exe:
            out.append(Path(os.path.realpath(exe)).parent.parent)
    if system == "Windows":
        roots = [Path(env[v]) for v in ("ProgramFiles", "ProgramW6432", "LOCALAPPDATA")
                 if env.get(v)]
        out += [r / d for r in roots for d in ("GIMP 3", "Programs/GIMP 3")]
    elif system == "Darwin":
        out += [Path("/Applications") / n / "Contents" / "Resources"
                for n in ("GIMP.app", "GIMP-3.0.app")]
    else:
        out += [Path("/usr"), Path("/usr/local")]
    return list(dict.fromkeys(out))


def interpreter_from_interp_files(prefix: Path, which: Callable[[str], str | None]
                                  ) -> tuple[str, str] | None:
    """(interpreter, file) from prefix/lib[64]/[<triplet>/]gimp/3.0/interpreters/*.interp.
    Lines: `python3=/usr/bin/python3` or binfmt-style `:Python:E::py::/usr/bin/python3:`."""
    files = sorted({*prefix.glob("lib*/gimp/3.0/interpreters/*.interp"),
                    *prefix.glob("lib*/*/gimp/3.0/interpreters/*.interp")})
    for f in files:
        try:
            lines = f.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            program = None
            if line.startswith(":"):
                fields = line[1:].split(":")
                if len(fields) >= 6 and fields[1] == "E" and fields[3] == "py":
                    program = fields[5]
            elif not line.startswith("#") and "=" in line:
                name, _, value = line.partition("=")
                if name.strip() in ("python3", "python"):
                    program = value.strip()
            if program:
                path = _resolve_program(program, prefix, which)
                if path:
                    return path, str(f)
    return None


def _resolve_program(program: str, prefix: Path, which: Callable[[str], str | None]
                     ) -> str | None:
    p = Path(program)
    if p.is_absolute():
        return str(p) if p.is_file() else None
    for candidate in (prefix / p, prefix / "bin" / p, prefix / "bin" / (program + ".exe")):
        if candidate.is_file():
            return str(candidate)
    return which(program)


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
    return PythonInfo(command, data.get("version"), data.get("platform"), data.get("zmq"),
                      zmq_from=data.get("zmq_from"), executable=data.get("executable"))


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
    """Download a pyzmq wheel built for GIMP's Python (its version and platform) and return its
    files as paths relative to the plug-in folder: vendor/<tag>/..., which the plug-in adds to
    sys.path only when that same Python has no pyzmq of its own."""
    tag = info.tag
    if not tag:
        raise RuntimeError("GIMP's Python did not say its version and platform")
    with tempfile.TemporaryDirectory() as tmp:
        proc = runner(pip_download_command(info, Path(tmp), pip))
        wheels = sorted(Path(tmp).glob("pyzmq-*.whl"))
        if proc.returncode != 0 or not wheels:
            err = (proc.stderr or "").strip().splitlines()[-1:] or ["no wheel"]
            raise RuntimeError(f"pip could not download a pyzmq wheel for Python {info.version} "
                               f"on {info.platform}: {err[0]}")
        want = "cp" + (info.version or "").replace(".", "")
        wheel = wheels[0]
        if f"-{want}-" not in wheel.name and "-abi3-" not in wheel.name:
            raise RuntimeError(f"pip gave {wheel.name}, not a wheel for Python {info.version}")
        files = {}
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if not name.endswith("/") and ".." not in Path(name).parts:
                    files[f"{VENDOR_DIR}/{tag}/{name}"] = zf.read(name)
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
