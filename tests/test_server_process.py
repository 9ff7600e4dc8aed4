"""magic-server as a real process (stand-in engine): CLI, signals, killed clients, restarts,
CurveZMQ."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq
from test_server_support import (
    ROOT,
    address,
    as_array,
    job_request,
    spawn_server,
    stop_process,
)

from magic_protocol.client import MagicClient, ServerUnreachable, load_curve_keys

SERVER = [sys.executable, str(ROOT / "tests" / "test_server_support.py")]


def wait_for(predicate, timeout_s: float = 10.0, every_s: float = 0.1) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every_s)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_ready_line_and_clean_shutdown_on_signal(signum):
    addr = address()
    proc = spawn_server(addr)
    try:
        with MagicClient(addr, timeout_s=5) as c:
            c.handshake()
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        stop_process(proc)


def test_ready_line_names_the_address():
    addr = address()
    cmd = [*SERVER, "--bind", addr]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "ready" in line and addr in line
    finally:
        stop_process(proc)


def test_port_in_use_is_one_clear_line():
    addr = address()
    proc = spawn_server(addr)
    try:
        out = subprocess.run([*SERVER, "--bind", addr], capture_output=True, text=True,
                             timeout=30, cwd=ROOT, check=False)
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "already in use" in lines[0] and "--bind" in lines[0]
        assert "ready" not in out.stdout
    finally:
        stop_process(proc)


def test_non_loopback_bind_needs_curve_keys(tmp_path):
    port = address().rsplit(":", 1)[1]
    out = subprocess.run([*SERVER, "--bind", f"tcp://0.0.0.0:{port}", "--keys",
                          str(tmp_path / "none")], capture_output=True, text=True, timeout=30,
                         cwd=ROOT, check=False)
    assert out.returncode == 2
    assert "--keygen" in out.stderr and "Traceback" not in out.stderr
    assert "ready" not in out.stdout


CLIENT_SCRIPT = """
import sys
from test_server_support import job_request
from magic_protocol.client import MagicClient
c = MagicClient(sys.argv[1], heartbeat_s=0.2)
request, _ = job_request(iterations=100000)
def on_event(e):
    if e.kind == "accepted":
        print("accepted", e.job_id, flush=True)
c.submit(request, on_event)
"""


def test_killed_client_process_cancels_its_job_and_the_server_carries_on():
    addr = address()
    server = spawn_server(addr, "--heartbeat-timeout", "1", step_s=0.01)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    victim = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, addr], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        line = victim.stdout.readline()
        assert line.startswith("accepted"), line
        job_id = line.split()[1]
        with MagicClient(addr, timeout_s=5, heartbeat_s=0.2) as c:
            assert c.status()["running"]["job"] == job_id
            victim.kill()
            victim.wait(timeout=10)
            assert wait_for(lambda: c.status()["running"] is None, timeout_s=6)
            request, rgba = job_request(iterations=5)
            result = c.submit(request)
            assert np.array_equal(as_array(result.images[0]), 255 - rgba[:, :, :3])
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        log = server.stderr.read()
        assert f"cancelling job {job_id[:8]}" in log and "gone" in log
    finally:
        stop_process(victim)
        stop_process(server)


def test_server_restarted_mid_job_client_recovers():
    addr = address()
    first = spawn_server(addr, step_s=0.02)
    second = None
    events = []
    outcome: dict[str, object] = {}
    try:
        c = MagicClient(addr, timeout_s=1.0, heartbeat_s=0.1, retries=4)
        c.handshake()
        request, rgba = job_request(iterations=60)

        def run() -> None:
            try:
                outcome["result"] = c.submit(request, events.append)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = exc

        t = threading.Thread(target=run)
        t.start()
        assert wait_for(lambda: any(e.kind == "progress" for e in events), timeout_s=10)
        first.kill()
        first.wait(timeout=10)
        second = spawn_server(addr, step_s=0.01)
        t.join(timeout=30)
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]
        assert np.array_equal(as_array(result.images[0]), 255 - rgba[:, :, :3])
        kinds = [e.kind for e in events]
        assert "reconnecting" in kinds and kinds.count("accepted") == 2
        assert c.handshake().protocol == 1  # the same client object keeps working
        c.close()
    finally:
        stop_process(first)
        if second is not None:
            stop_process(second)


def test_curve_authorised_and_unauthorised_clients(tmp_path):
    keys = tmp_path / "keys"
    out = subprocess.run([*SERVER, "--keygen", "--keys", str(keys)], capture_output=True,
                         text=True, timeout=30, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    for name in ("server.key", "server.key_secret", "client.key", "client.key_secret",
                 "authorized_clients/client.key"):
        assert (keys / name).is_file(), name
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0
    again = subprocess.run([*SERVER, "--keygen", "--keys", str(keys)], capture_output=True,
                           text=True, timeout=30, cwd=ROOT, check=False)
    assert again.returncode == 2 and "already exist" in again.stderr

    addr = address()
    server = spawn_server(addr, "--curve", "--keys", str(keys))
    try:
        good = load_curve_keys(keys)
        with MagicClient(addr, timeout_s=5, **good) as c:
            assert c.handshake().raw["curve"] is True
            request, rgba = job_request(iterations=3)
            assert np.array_equal(as_array(c.submit(request).images[0]), 255 - rgba[:, :, :3])
        stranger_public, stranger_secret = zmq.curve_keypair()
        with MagicClient(addr, timeout_s=0.5, retries=0,
                         server_public_key=good["server_public_key"],
                         client_public_key=stranger_public,
                         client_secret_key=stranger_secret) as c, \
                pytest.raises(ServerUnreachable):
            c.handshake()
        with MagicClient(addr, timeout_s=0.5, retries=0) as plain, \
                pytest.raises(ServerUnreachable):
            plain.handshake()
        with MagicClient(addr, timeout_s=5, **good) as c:  # still serving the right key
            c.ping()
    finally:
        stop_process(server)


def test_real_magic_server_command_with_untrained_weights():
    addr = address()
    proc = subprocess.Popen([sys.executable, "-m", "magic_server.server", "--bind", addr,
                             "--device", "cpu", "--weights", "untrained"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "ready" in line and addr in line and "untrained" in line, proc.stderr.read()
        with MagicClient(addr, timeout_s=10) as c:
            info = c.handshake()
        assert info.device == "cpu" and info.weights_loaded is False and "tiny" in info.presets
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        stop_process(proc)


def test_bad_device_is_one_clear_line():
    out = subprocess.run([sys.executable, "-m", "magic_server.server", "--bind", address(),
                          "--device", "cuda:7", "--weights", "untrained"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 1 and "ready" not in out.stdout
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr and lines[-1].startswith("magic-server:")


# magic-server as if the stand-in classifier's package were not installed either
SERVER_WITHOUT_STAND_IN = [
    sys.executable, "-c",
    ("import sys; from magic_server.weights import choice as w; "
     "w.stand_in_available = lambda: False; "
     "from magic_server.serve.command import main; sys.exit(main(sys.argv[1:]))")]


def test_no_installed_weights_is_refused_at_once_without_a_download(tmp_path):
    """The server the plug-in starts must not spend minutes retrying a download: with no
    weights installed (an empty cache) it exits at once with what to do."""
    import os

    addr = address()
    env = {**os.environ, "MAGIC_CACHE_DIR": str(tmp_path / "empty-cache")}
    t0 = time.monotonic()
    out = subprocess.run([*SERVER_WITHOUT_STAND_IN, "--bind", addr, "--device", "cpu"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
                         check=False)
    took = time.monotonic() - t0
    assert out.returncode == 1 and "ready" not in out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("magic-server: no classifier weights installed: run "
                           "`magic-installer weights`"), out.stderr
    assert "download" not in out.stderr and "Traceback" not in out.stderr
    assert took < 15, f"refused after {took:.1f} s"
    assert not (tmp_path / "empty-cache").exists()  # nothing was fetched into it
    with MagicClient(addr, timeout_s=0.3, retries=0) as c, pytest.raises(ServerUnreachable):
        c.handshake()  # it never bound the port


def test_weights_resolution_is_the_one_place_for_a_fallback(monkeypatch):
    from magic_server.weights import choice as sw

    assert sw.resolve_weights("untrained") == "untrained"
    assert sw.resolve_weights("/some/file.ckpt") == "/some/file.ckpt"
    monkeypatch.setattr(sw, "installed_weights", lambda: "/cache/resnet.safetensors")
    assert sw.resolve_weights(None) is None  # the installed ones
    monkeypatch.setattr(sw, "installed_weights", lambda: None)
    monkeypatch.setattr(sw, "stand_in_available", lambda: True)
    assert sw.resolve_weights(None) == "efficientnet-lite0"  # the offline stand-in
    monkeypatch.setattr(sw, "stand_in_available", lambda: False)
    with pytest.raises(sw.NoWeights, match="run `magic-installer weights`"):
        sw.resolve_weights(None)
