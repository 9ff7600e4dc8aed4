"""`magic-installer doctor`: check every link from GIMP to the weights and print the fix for each
failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from installer import gimp_python, plugin_install, server_env
from installer.profiles import Profile

DEVICE_PROBE = (
    "import json, torch\n"
    "d = {'torch': torch.__version__, 'cuda': torch.cuda.is_available(), 'mps': False}\n"
    "if d['cuda']:\n"
    "    p = torch.cuda.get_device_properties(0)\n"
    "    d['name'] = p.name; d['memory_mb'] = p.total_memory // 2**20\n"
    "mps = getattr(torch.backends, 'mps', None)\n"
    "d['mps'] = bool(mps and mps.is_available())\n"
    "print(json.dumps(d))\n"
)


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        mark = {"ok": "[ok]  ", "warn": "[warn]", "fail": "[FAIL]"}[self.status]
        out = [f"{mark} {self.name}: {self.detail}"]
        if self.fix and self.status != "ok":
            out.append(f"       fix: {self.fix}")
        return out


def check_profiles(profiles: list[Profile], searched: list[Path]) -> Check:
    if not profiles:
        return Check("GIMP profile", "fail", "no GIMP 3.x or 2.10 profile found in "
                     + ", ".join(str(p) for p in searched),
                     "start GIMP once so it creates its profile, or pass --gimp-profile DIR")
    return Check("GIMP profile", "ok", "; ".join(p.describe() for p in profiles))


def check_plugin(profile: Profile) -> tuple[Check, dict | None]:
    folder = plugin_install.plugin_folder(profile.path, profile.gimp_version)
    name = f"plug-in files (GIMP {profile.gimp_version}, {profile.flavour})"
    if not folder.is_dir():
        return Check(name, "fail", f"{folder} does not exist",
                     _install_fix(profile)), None
    problems = plugin_install.check_files(folder)
    config = None
    try:
        config = json.loads((folder / "magic_gimp.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or not config.get("server_address"):
            problems.append("magic_gimp.json has no server_address")
            config = None
    except (OSError, ValueError) as e:
        problems.append(f"magic_gimp.json cannot be read ({e.__class__.__name__})")
    if problems:
        return Check(name, "fail", f"{folder}: " + "; ".join(problems[:4]),
                     _install_fix(profile)), config
    return Check(name, "ok", str(folder)), config


def _install_fix(profile: Profile) -> str:
    extra = f" --gimp-profile {profile.path}" if profile.flavour == "custom" else ""
    return f"run `magic-installer install{extra}`"


def check_gimp_zmq(profile: Profile, command: list[str] | None, runner, system: str,
                   os_release: dict, how: str = "") -> Check:
    """Which Python GIMP runs the plug-in with, and whether it imports pyzmq as the plug-in
    does (its own first, else the plug-in's vendored copy for exactly that Python)."""
    name = f"pyzmq in GIMP's Python (GIMP {profile.gimp_version}, {profile.flavour})"
    if command is None:
        return Check(name, "fail", "GIMP's Python was not found",
                     gimp_python.fix_hint(profile, None, system, os_release))
    folder = plugin_install.plugin_folder(profile.path, profile.gimp_version)
    info = gimp_python.probe(command, runner, folder if folder.is_dir() else None)
    info.source = how
    if info.error:
        return Check(name, "fail", info.error,
                     gimp_python.fix_hint(profile, info, system, os_release))
    if not info.zmq:
        return Check(name, "fail", f"GIMP runs {info.describe()}, which cannot import zmq "
                                   "(neither its own nor the plug-in's vendored copy)",
                     gimp_python.fix_hint(profile, info, system, os_release))
    where = ("its own" if info.zmq_from == "system" else
             f"the plug-in's, vendored in {folder / gimp_python.VENDOR_DIR / (info.tag or '')}")
    return Check(name, "ok", f"GIMP runs {info.describe()}; it imports pyzmq {info.zmq} "
                             f"({where})")


def check_bridge_python(config: dict | None, runner) -> Check:
    """GIMP 2.10's plug-in (Python 2) reaches the server through a Python 3 with pyzmq."""
    name = "Python 3 bridge (GIMP 2.10)"
    python = (config or {}).get("python")
    if not python:
        return Check(name, "fail", "magic_gimp.json names no Python 3",
                     "run `magic-installer install` again")
    info = gimp_python.probe([python], runner)
    if info.error or not info.zmq:
        return Check(name, "fail", info.error or f"{python} cannot import zmq",
                     f"run `{python} -m pip install pyzmq`, or `magic-installer install` again")
    return Check(name, "ok", f"{python} has pyzmq {info.zmq}")


def check_server_python(config: dict | None, runner) -> tuple[Check, str | None]:
    command = (config or {}).get("server_command")
    if not command:
        return Check("server environment", "warn", "the plug-in has no command to start the "
                     "server: it must be started by hand (magic-server)",
                     "run `magic-installer install` to record how to start it"), None
    if command[:2] == ["flatpak-spawn", "--host"]:
        command = command[2:]
    python = command[0]
    if not Path(python).exists():
        return Check("server environment", "fail", f"{python} does not exist",
                     "run `magic-installer install` again"), None
    missing = server_env.missing_modules(python, runner)
    if missing:
        return Check("server environment", "fail", f"{python} lacks {', '.join(missing)}",
                     "run `magic-installer install` again"), python
    return Check("server environment", "ok", python), python


def check_server(address: str, connect: Callable[[str], object], start_cmd: list[str] | None
                 ) -> tuple[Check, object | None]:
    """connect(address) -> ServerInfo; raises on failure (magic_protocol.client errors)."""
    start = " ".join(start_cmd) if start_cmd else "magic-server"
    try:
        info = connect(address)
    except ImportError as e:
        return Check("server", "fail", f"cannot load the client ({e})",
                     "run `magic-installer install` again"), None
    except Exception as e:  # noqa: BLE001 - every client error is reported the same way
        kind = type(e).__name__
        if kind == "ProtocolMismatch":
            return Check("server", "fail", f"{address} speaks another protocol version ({e})",
                         "update both sides: run `magic-installer install` again, then "
                         "restart the server"), None
        return Check("server", "warn", f"no server answers at {address} ({e})",
                     f"the plug-in starts it on demand; to check by hand run `{start}`"), None
    proto = getattr(info, "protocol", "?")
    return Check("server", "ok", f"{address} answers, protocol version {proto}, "
                 f"server {getattr(info, 'server_version', '')}".rstrip()), info


def check_device(server_info: object | None, python: str | None, machine: server_env.Machine,
                 runner) -> Check:
    if server_info is not None and getattr(server_info, "device", ""):
        gpu = getattr(server_info, "gpu_name", None)
        mem = getattr(server_info, "gpu_memory_bytes", None)
        detail = f"server runs on {server_info.device}" + (f" ({gpu}" if gpu else "") + (
            f", {mem / 2**30:.1f} GiB)" if gpu and mem else (")" if gpu else ""))
        return _device_verdict(detail, "cpu" in server_info.device, machine)
    if python is None:
        return Check("device", "warn", f"not checked (no server environment); machine: "
                     f"{machine.describe()}")
    try:
        proc = runner([python, "-c", DEVICE_PROBE], timeout=120)
        d = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return Check("device", "fail", f"{python} cannot import torch",
                     "run `magic-installer install` again")
    if d.get("cuda"):
        return Check("device", "ok", f"torch {d['torch']} sees {d.get('name')} "
                     f"({d.get('memory_mb', 0) / 1024:.1f} GiB)")
    if d.get("mps"):
        return Check("device", "ok", f"torch {d['torch']} uses the Apple GPU (MPS)")
    return _device_verdict(f"torch {d.get('torch')} runs on the CPU", True, machine)


def _device_verdict(detail: str, on_cpu: bool, machine: server_env.Machine) -> Check:
    if not on_cpu:
        return Check("device", "ok", detail)
    if machine.accelerator in ("cuda", "rocm"):
        return Check("device", "fail", f"{detail}, but this machine has {machine.describe()}",
                     f"run `magic-installer install --torch {machine.accelerator}` to install "
                     "the PyTorch build for this GPU")
    return Check("device", "warn", f"{detail}: an edit takes minutes",
                 "a CUDA, ROCm or Apple GPU makes it seconds")


def stand_in_installed(python: str | None, runner) -> bool:
    """Whether the server's Python has the stand-in classifier's package (found, not
    imported: the check must not load torch)."""
    from magic_server.weights.choice import STAND_IN_PACKAGE

    if python is None or runner is None:
        return False
    probe = ("import importlib.util, sys; "
             f"sys.exit(0 if importlib.util.find_spec({STAND_IN_PACKAGE!r}) else 3)")
    try:
        return runner([python, "-c", probe], timeout=60).returncode == 0
    except OSError:
        return False


def check_weights(cache_dir: Path, python: str | None = None, runner=None) -> Check:
    """The robust weights; without them, whether the server can start on the stand-in
    classifier (a warning: edits run, with a network that is not robust)."""
    from magic_server.weights import store as ws
    from magic_server.weights.choice import STAND_IN

    path = ws.installed_weights_path(cache_dir)
    if path is not None:
        record = ws.read_record(cache_dir)
        return Check("weights", "ok", f"{path} (SHA-256 {record.get('sha256', '')[:12]}..., "
                     f"from {record.get('source')})")
    if (cache_dir / ws.WEIGHTS_FILE).exists():
        return Check("weights", "fail", f"{cache_dir / ws.WEIGHTS_FILE} does not match its "
                     "recorded SHA-256 (damaged or changed)",
                     "run `magic-installer weights` to download them again")
    parts = list(cache_dir.glob("*.part"))
    detail = f"no verified weights in {cache_dir}"
    if parts:
        detail += f" (a partial download of {parts[0].stat().st_size / 1e6:.0f} MB is waiting)"
    fix = ("run `magic-installer weights` (it resumes), or "
           "`magic-installer weights --file resnet50_l2_eps0.05.ckpt` offline")
    if stand_in_installed(python, runner):
        return Check("weights", "warn", f"{detail}; the server runs on the stand-in {STAND_IN} "
                     "(ImageNet, not robust)", f"for the robust ResNet-50: {fix}")
    return Check("weights", "fail", detail, fix)
