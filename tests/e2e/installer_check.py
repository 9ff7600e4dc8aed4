"""The installer against the REAL GIMP 3 of the trixie chroot: it must find the Python GIMP
runs (the chroot's python3.13, not the installer's own Python), see that it has its own
pyzmq (python3-zmq) and so vendor nothing, install into a profile folder that does not exist
yet, and `doctor` must say which Python GIMP runs and that it imports pyzmq.

Usage (run.sh calls it as root, with WORK_DIR bind-mounted at INSIDE_DIR in the chroot):
    python installer_check.py CHROOT WORK_DIR INSIDE_DIR
The installer runs here, on the host; GIMP's Python is run inside the chroot (a command
`/usr/bin/python3` there), GIMP's own files (lib/gimp/3.0/interpreters/*.interp) are read from
the chroot's /usr. Exit status 1 when a check fails.
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from installer import gimp_python, plugin_install
from installer.cli import Context, main

GIMP_PYTHON = "/usr/bin/python3"  # the chroot's, as GIMP's #!/usr/bin/env python3 finds it


def not_started(address: str):
    raise OSError("no server started for this check")


def main_check(root: Path, work: Path, inside: str) -> int:
    home = work / "installer-home"
    profile = home / ".config/GIMP/3.0"  # does not exist yet

    def which(name: str) -> str | None:
        if name == "python3" and (root / GIMP_PYTHON.lstrip("/")).exists():
            return GIMP_PYTHON
        if name == "gimp-3.0" and (root / "usr/bin/gimp-3.0").exists():
            return str(root / "usr/bin/gimp-3.0")  # its prefix: the chroot's /usr
        return None

    def runner(argv, **kw):
        argv = [str(a) for a in argv]
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        if argv[0] == GIMP_PYTHON:  # GIMP's Python: inside the chroot, paths seen from there
            argv = ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin",
                    "LANG=C.UTF-8", *[a.replace(str(work), inside) for a in argv]]
        return subprocess.run(argv, check=False, **kw)

    out = io.StringIO()
    ctx = Context("Linux", platform.machine(), home,
                  {"HOME": str(home), "MAGIC_CACHE_DIR": str(home / "cache")}, out,
                  runner=runner, which=which, project_root=REPO,
                  connect=not_started)
    failed: list[str] = []
    passed = []

    def check(cond: bool, what: str) -> None:
        print(f"[installer] {'ok  ' if cond else 'FAIL'} {what}", file=sys.stderr, flush=True)
        (passed if cond else failed).append(what)

    host = "{}.{}".format(*sys.version_info[:2])
    probe = gimp_python.probe([GIMP_PYTHON], runner)
    check(probe.version is not None and probe.version != host and probe.zmq_from == "system",
          f"GIMP's Python in the chroot is {probe.version} with its own pyzmq {probe.zmq}, the "
          f"installer's is {host} (the issue's case: two different Pythons)")
    rc = main(["install", "--no-weights", "--gimp-profile", str(profile)], ctx)
    text = out.getvalue()
    folder = profile / "plug-ins/magic-gimp"
    check(rc == 0 and (folder / "magic-gimp.py").is_file(),
          f"install into a profile folder that did not exist (exit {rc})")
    check(f"GIMP runs Python {probe.version} at /usr/bin/python3" in text,
          "install names the Python GIMP runs: " + next(
              (ln for ln in text.splitlines() if ln.startswith("GIMP runs")), "(no such line)"))
    actions = [ln for ln in text.splitlines() if ln.startswith("ACTION NEEDED")]
    check(f"pyzmq: GIMP's Python {probe.version} has pyzmq {probe.zmq}" in text
          and all("no classifier weights" in ln for ln in actions),
          f"install sees GIMP's own pyzmq (nothing to do about it: {actions})")
    check(len(actions) == 1 and "Run `magic-installer weights`" in actions[0],
          f"install --no-weights says what still has to be done ({actions})")
    record = json.loads((folder / ".magic-install.json").read_text())
    check(not (folder / gimp_python.VENDOR_DIR).exists() and not (folder / "zmq").exists()
          and record.get("vendored") == {},
          f"no pyzmq vendored into the plug-in folder (it would shadow GIMP's): "
          f"{sorted(p.name for p in folder.iterdir())}")
    # what an older installer left (a pyzmq built for the installer's own Python, at the
    # folder's top where it shadowed GIMP's): a new install removes it
    tag = gimp_python.vendor_tag(host, sysconfig.get_platform())
    plugin_install.add_files(folder, {"zmq/__init__.py": b"raise ImportError('cp311')\n",
                                      f"vendor/{tag}/zmq/__init__.py": b"raise ImportError\n"})
    out.seek(0)
    out.truncate()
    rc = main(["install", "--no-weights", "--gimp-profile", str(profile)], ctx)
    check(rc == 0 and "removed 2 vendored file(s)" in out.getvalue()
          and not (folder / "zmq").exists() and not (folder / gimp_python.VENDOR_DIR).exists(),
          "a reinstall removes pyzmq copies an older install vendored for another Python")
    out.seek(0)
    out.truncate()
    main(["doctor", "--gimp-profile", str(profile)], ctx)
    line = next((ln for ln in out.getvalue().splitlines() if "GIMP runs Python" in ln), "")
    check(f"GIMP runs Python {probe.version} at /usr/bin/python3" in line
          and f"imports pyzmq {probe.zmq} (its own)" in line,
          f"doctor says which Python GIMP runs and that it imports pyzmq: {line.strip()}")
    out.seek(0)
    out.truncate()
    rc = main(["uninstall", "--gimp-profile", str(profile)], ctx)
    check(rc == 0 and not (home / ".config").exists(),
          "uninstall removes the plug-in and the folders install made")
    if failed:
        print(out.getvalue(), file=sys.stderr)
    print(f"[installer] {len(passed)} checks passed, {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_check(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
