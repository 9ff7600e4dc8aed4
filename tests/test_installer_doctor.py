"""`magic-installer doctor` on a healthy install and on each broken state: FAIL line + fix."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from types import SimpleNamespace

import pytest
import zmq
from installer_env import (
    LINUX_LAYOUTS,
    Runner,
    context,
    make_profiles,
    no_zmq_python,
    small_ckpt,
    small_validator,
)

from installer.cli import main
from magic_protocol import protocol as P
from magic_server.weights import store as ws

INFO = SimpleNamespace(protocol=P.PROTOCOL_VERSION, server_version="0.1.0", device="cpu",
                       gpu_name=None, gpu_memory_bytes=None)


@pytest.fixture
def installed(tmp_path, repo):
    home = tmp_path / "home"
    (profile,) = make_profiles(home, [LINUX_LAYOUTS["native-3"]])
    ctx, out = context(home, repo, validate=small_validator, connect=lambda a: INFO)
    assert main(["install", "--torch", "current", "--weights",
                 str(small_ckpt(tmp_path / "w.ckpt"))], ctx) == 0, out.getvalue()
    out.seek(0)
    out.truncate(0)
    return ctx, out, profile / "plug-ins/magic-gimp"


def doctor(ctx, out) -> tuple[int, str]:
    code = main(["doctor"], ctx)
    return code, out.getvalue()


def fail_line(text: str, name: str) -> str:
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("[FAIL]") and name in line)
    assert lines[i + 1].strip().startswith("fix: "), text
    return lines[i] + "\n" + lines[i + 1]


def test_healthy_install(installed):
    ctx, out, _ = installed
    code, text = doctor(ctx, out)
    assert code == 0, text
    assert "[FAIL]" not in text and text.rstrip().endswith("all good")
    assert "answers, protocol version 1" in text
    assert "[warn] device: server runs on cpu" in text  # CPU works, slowly


def test_no_profile(tmp_path, repo):
    ctx, out = context(tmp_path, repo, connect=lambda a: INFO)
    code, text = doctor(ctx, out)
    assert code == 1
    assert "start GIMP once" in fail_line(text, "GIMP profile")


def test_missing_changed_and_not_executable_files(installed):
    ctx, out, folder = installed
    (folder / "magic_protocol" / "protocol.py").unlink()
    (folder / "gimp_plugin" / "settings.py").write_text("# edited\n")
    (folder / "magic-gimp.py").chmod(0o644)
    code, text = doctor(ctx, out)
    assert code == 1
    block = fail_line(text, "plug-in files")
    assert "magic_protocol/protocol.py is missing" in block
    assert "gimp_plugin/settings.py was changed" in block
    assert "magic-gimp.py is not executable" in block
    assert "magic-installer install" in block
    out.truncate(0)
    main(["install", "--torch", "current", "--no-weights"], ctx)  # the fix works
    out.seek(0)
    out.truncate(0)
    assert doctor(ctx, out)[0] == 0


def test_broken_config(installed):
    ctx, out, folder = installed
    (folder / "magic_gimp.json").write_text("{not json")
    code, text = doctor(ctx, out)
    assert code == 1 and "magic_gimp.json cannot be read" in fail_line(text, "plug-in files")


def test_gimp_python_without_zmq(installed, tmp_path):
    ctx, out, _ = installed
    gimp_py = no_zmq_python(tmp_path)
    ctx.which = lambda n: gimp_py if n == "python3" else None
    code, text = doctor(ctx, out)
    assert code == 1
    assert "sudo apt install python3-zmq" in fail_line(text, "pyzmq in GIMP's Python")


def test_server_python_gone(installed):
    ctx, out, folder = installed
    config = json.loads((folder / "magic_gimp.json").read_text())
    config["server_command"][0] = "/nonexistent/python"
    (folder / "magic_gimp.json").write_text(json.dumps(config))
    code, text = doctor(ctx, out)
    assert code == 1 and "/nonexistent/python does not exist" in fail_line(text, "server env")


class NoStandIn(Runner):
    """The server's Python without the stand-in classifier's package."""

    def __call__(self, argv, **kw):
        if any("find_spec" in str(a) for a in argv):
            return subprocess.CompletedProcess(argv, 3, "", "")
        return super().__call__(argv, **kw)


def test_weights_missing_then_damaged(installed):
    ctx, out, _ = installed
    ctx.runner = NoStandIn()
    cache = ctx.cache_dir
    target = cache / ws.WEIGHTS_FILE
    data = bytearray(target.read_bytes())
    data[-5] ^= 1
    target.write_bytes(bytes(data))
    code, text = doctor(ctx, out)
    assert code == 1 and "SHA-256" in fail_line(text, "weights")
    target.unlink()
    (cache / "resnet50_l2_eps0.05.ckpt.part").write_bytes(b"x" * 3_000_000)
    out.seek(0)
    out.truncate(0)
    code, text = doctor(ctx, out)
    block = fail_line(text, "weights")
    assert "partial download of 3 MB" in block and "magic-installer weights" in block


def test_missing_robust_weights_with_the_stand_in_is_a_warning_not_a_failure(installed):
    # the server starts on efficientnet-lite0 (its package is in the server's Python here):
    # edits work, so the doctor warns and says how to get the robust network
    ctx, out, _ = installed
    (ctx.cache_dir / ws.WEIGHTS_FILE).unlink()
    code, text = doctor(ctx, out)
    assert code == 0, text
    line = next(x for x in text.splitlines() if x.startswith("[warn] weights"))
    assert "stand-in efficientnet-lite0 (ImageNet, not robust)" in line
    assert "magic-installer weights" in text.split(line, 1)[1].splitlines()[1]
    ctx.runner = NoStandIn()  # without the package the server refuses to start: a failure
    out.seek(0)
    out.truncate(0)
    code, text = doctor(ctx, out)
    assert code == 1 and "no verified weights" in fail_line(text, "weights")


def test_gpu_present_but_cpu_torch(installed):
    ctx, out, _ = installed
    ctx.runner = Runner(gpu="NVIDIA GeForce RTX 3060, 12288\n")
    ctx.which = lambda n, w=ctx.which: "/usr/bin/nvidia-smi" if n == "nvidia-smi" else w(n)
    code, text = doctor(ctx, out)
    assert code == 1
    assert "install --torch cuda" in fail_line(text, "device")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _router(address: str, version: int, stop: threading.Event) -> threading.Thread:
    """A stand-in server that answers every request with a welcome of the given version."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(address)

    def serve():
        while not stop.is_set():
            if sock.poll(50):
                ident, header = sock.recv_multipart()[:2]
                req = json.loads(header)["req"]
                reply = {"v": version, "type": P.WELCOME, "req": req,
                         "server": {"protocol": version, "server_version": "9.9", "device": "cpu"}}
                sock.send_multipart([ident, json.dumps(reply).encode()])
        sock.close(0)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("version,expected", [
    (P.PROTOCOL_VERSION, "[ok]   server: {addr} answers, protocol version 1, server 9.9"),
    (99, "[FAIL] server: {addr} speaks another protocol version"),
])
def test_real_client_checks_protocol_version(installed, version, expected):
    ctx, out, folder = installed
    ctx.connect = None  # the real magic_protocol.client
    addr = f"tcp://127.0.0.1:{_free_port()}"
    config = json.loads((folder / "magic_gimp.json").read_text())
    config["server_address"] = addr
    (folder / "magic_gimp.json").write_text(json.dumps(config))
    stop = threading.Event()
    t = _router(addr, version, stop)
    try:
        _code, text = doctor(ctx, out)
    finally:
        stop.set()
        t.join()
    assert expected.format(addr=addr) in text, text


def test_server_not_running_is_a_warning_with_the_start_command(installed):
    ctx, out, _folder = installed

    def unreachable(address):
        raise TimeoutError(f"no answer from the MAGIC server at {address} within 3 s")
    ctx.connect = unreachable
    code, text = doctor(ctx, out)
    assert code == 0
    assert "[warn] server: no server answers at tcp://127.0.0.1:5591" in text
    assert "-m magic_server.server --bind tcp://127.0.0.1:5591" in text


def test_gimp_210_bridge_python(tmp_path, repo):
    home = tmp_path / "home"
    (profile,) = make_profiles(home, [LINUX_LAYOUTS["native-2.10"]])
    ctx, out = context(home, repo, connect=lambda a: INFO)
    assert main(["install", "--torch", "current", "--no-weights"], ctx) == 0
    out.seek(0)
    out.truncate(0)
    code, text = doctor(ctx, out)
    assert "[ok]   Python 3 bridge (GIMP 2.10)" in text
    config_path = profile / "plug-ins/magic-gimp/magic_gimp.json"
    config = json.loads(config_path.read_text())
    config["python"] = no_zmq_python(tmp_path)
    config_path.write_text(json.dumps(config))
    out.seek(0)
    out.truncate(0)
    code, text = doctor(ctx, out)
    assert code == 1
    assert "-m pip install pyzmq" in fail_line(text, "Python 3 bridge")
