"""The server's Python environment: the current one, or a venv with the PyTorch build that fits
the machine (CUDA, ROCm, MPS, CPU). Commands go through an injectable runner; dry_run prints them."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

Runner = Callable[..., subprocess.CompletedProcess]

TORCH_CHOICES = ("auto", "cpu", "cuda", "rocm", "mps", "current")
TORCH_SPEC = "torch>=2.1,<3"
INDEX_URLS = {
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu128",
    "rocm": "https://download.pytorch.org/whl/rocm6.4",
    "mps": None,  # the macOS wheels on PyPI include MPS
}
# Rough download sizes of torch plus its own dependencies (MB); printed as estimates.
TORCH_MB = {"cpu": 200, "cuda": 3000, "rocm": 4500, "mps": 80}
OTHER_DEPS_MB = 40  # numpy, pillow, pyzmq, safetensors
SERVER_MODULES = ("torch", "numpy", "PIL", "zmq", "safetensors", "magic_server")
MARKER = "magic-env.json"


@dataclass
class Machine:
    system: str  # Linux, Windows, Darwin
    arch: str  # x86_64, arm64, AMD64...
    accelerator: str  # cuda, rocm, mps or cpu
    gpu_name: str | None = None
    gpu_memory_mb: int | None = None

    def describe(self) -> str:
        if self.gpu_name:
            mem = f", {self.gpu_memory_mb / 1024:.0f} GiB" if self.gpu_memory_mb else ""
            return f"{self.accelerator.upper()} GPU {self.gpu_name}{mem}"
        if self.accelerator == "mps":
            return "Apple GPU (MPS)"
        return "no supported GPU found: CPU (slow: minutes per edit)"


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(argv, check=False, **kw)


def detect_machine(system: str, arch: str, runner: Runner = run,
                   which: Callable[[str], str | None] = shutil.which) -> Machine:
    if which("nvidia-smi"):
        try:
            proc = runner(["nvidia-smi", "--query-gpu=name,memory.total",
                           "--format=csv,noheader,nounits"], timeout=20)
        except (OSError, subprocess.SubprocessError):
            proc = None
        line = (proc.stdout or "").strip().splitlines()[:1] if proc and proc.returncode == 0 else []
        if line:
            name, _, mem = line[0].partition(",")
            mem_mb = int(float(mem)) if mem.strip().replace(".", "", 1).isdigit() else None
            return Machine(system, arch, "cuda", name.strip(), mem_mb)
    if system == "Linux" and (which("rocminfo") or Path("/dev/kfd").exists()):
        return Machine(system, arch, "rocm", "AMD GPU (ROCm)")
    if system == "Darwin" and arch in ("arm64", "aarch64"):
        return Machine(system, arch, "mps")
    return Machine(system, arch, "cpu")


def missing_modules(python: str | None = None, runner: Runner = run) -> list[str]:
    """Server modules the given Python (default: this one) cannot import, without importing them."""
    if python is None or Path(python) == Path(sys.executable):
        return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    code = (f"import importlib.util, json; print(json.dumps([m for m in {SERVER_MODULES!r} "
            "if importlib.util.find_spec(m) is None]))")
    try:
        proc = runner([python, "-c", code], timeout=60)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return list(SERVER_MODULES)


@dataclass
class EnvPlan:
    build: str  # cpu, cuda, rocm, mps or current
    python: str  # the server's interpreter
    venv_dir: Path | None = None
    commands: list[list[str]] = field(default_factory=list)
    download_mb: int = 0
    note: str = ""

    def summary(self) -> str:
        if not self.commands:
            return f"server environment: {self.python} ({self.note})"
        size = (f"{self.download_mb / 1000:.1f} GB" if self.download_mb >= 1000
                else f"{self.download_mb} MB")
        return (f"server environment: new venv {self.venv_dir} with the {self.build} build of "
                f"PyTorch; this downloads about {size} (estimate)")


def venv_python(venv_dir: Path, system: str) -> Path:
    return venv_dir / ("Scripts/python.exe" if system == "Windows" else "bin/python")


def plan_env(choice: str, machine: Machine, venv_dir: Path, project_root: Path,
             current_missing: list[str], base_python: str = sys.executable) -> EnvPlan:
    """Decide where the server runs and what must be installed for it."""
    if choice not in TORCH_CHOICES:
        raise ValueError(f"--torch must be one of {', '.join(TORCH_CHOICES)}")
    if choice == "current" or (choice == "auto" and not current_missing):
        if current_missing:
            raise ValueError(
                f"the current Python ({sys.executable}) lacks {', '.join(current_missing)}: "
                f"run `{sys.executable} -m pip install -e {project_root}` or drop --torch current")
        return EnvPlan("current", base_python, note="current environment, nothing to install")
    build = machine.accelerator if choice == "auto" else choice
    if build == "mps" and machine.system != "Darwin":
        raise ValueError("--torch mps is for Apple computers; choose cpu, cuda or rocm")
    if build in ("cuda", "rocm") and machine.system == "Darwin":
        raise ValueError(f"there is no {build} build of PyTorch for macOS; choose mps or cpu")
    py = str(venv_python(venv_dir, machine.system))
    marker = _read_marker(venv_dir)
    if marker.get("build") == build and Path(py).exists():
        return EnvPlan(build, py, venv_dir, note=f"existing venv with the {build} build")
    torch_cmd = [py, "-m", "pip", "install", TORCH_SPEC]
    if INDEX_URLS.get(build):
        torch_cmd += ["--index-url", INDEX_URLS[build]]
    commands = []
    if not Path(py).exists():
        commands.append([base_python, "-m", "venv", str(venv_dir)])
    commands += [torch_cmd, [py, "-m", "pip", "install", str(project_root)]]
    return EnvPlan(build, py, venv_dir, commands, TORCH_MB[build] + OTHER_DEPS_MB)


def apply_plan(plan: EnvPlan, runner: Runner = run, log: Callable[[str], None] = print,
               dry_run: bool = False) -> None:
    for argv in plan.commands:
        log(("would run: " if dry_run else "running: ") + " ".join(argv))
        if dry_run:
            continue
        proc = runner(argv, capture_output=False)
        if proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(argv)}` failed (exit status {proc.returncode}); "
                               "check your network and disk space, then run the install again")
    if plan.commands and not dry_run and plan.venv_dir:
        (plan.venv_dir / MARKER).write_text(json.dumps({"build": plan.build}) + "\n")


def _read_marker(venv_dir: Path) -> dict:
    try:
        return json.loads((venv_dir / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def server_command(python: str, address: str) -> list[str]:
    return [python, "-m", "magic_server.server", "--bind", address]


def systemd_unit(python: str, address: str, env: dict[str, str] | None = None) -> str:
    cmd = " ".join(_quote(a) for a in server_command(python, address))
    lines = ["[Unit]", "Description=MAGIC for GIMP synthesis server", "",
             "[Service]", f"ExecStart={cmd}", "Restart=on-failure"]
    lines += [f"Environment={k}={v}" for k, v in sorted((env or {}).items())]
    lines += ["", "[Install]", "WantedBy=default.target", ""]
    return "\n".join(lines)


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def is_source_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and os.path.isdir(root / "magic_server")
