"""CurveZMQ from the GIMP 3 plug-in, against a real `magic-server --curve` on loopback: the keys
the installer writes into magic_gimp.json, keys named in the dialog's server field, and a client
the server does not know, refused with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import gimp3 as fake

from installer import plugin_install

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
from test_server_support import address


@pytest.fixture(scope="module")
def curve_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curve")
    keys = tmp / "keys"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "magic_server.server", "--keygen", "--keys", str(keys)],
                   check=True, capture_output=True, env=env, timeout=120)
    from zmq.auth import create_certificates

    (tmp / "stranger").mkdir()
    create_certificates(str(tmp / "stranger"), "client")  # a key pair the server never saw
    addr = address()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "magic_server.server", "--bind", addr, "--curve", "--keys",
         str(keys), "--device", "cpu", "--weights", "untrained"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        end = time.monotonic() + 120
        while b"ready" not in (tmp / "server.log").read_bytes():
            assert proc.poll() is None, (tmp / "server.log").read_text()
            assert time.monotonic() < end, "magic-server --curve did not start"
            time.sleep(0.2)
        yield addr, keys, tmp / "stranger"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


@pytest.fixture
def plugin_modules():
    with fake.installed():
        from gimp_plugin import gimp3_host, settings, workflow

        yield gimp3_host, settings, workflow


def test_installed_keys_reach_the_curve_server(curve_server, plugin_modules):
    addr, keys, _ = curve_server
    gimp3_host, settings, _workflow = plugin_modules
    config = {"server_address": addr, **plugin_install.curve_config(
        keys / "server.key", keys / "client.key_secret")}
    options = settings.curve_options("", config)
    assert set(options) == {"server_public_key", "client_public_key", "client_secret_key"}
    info = gimp3_host.DirectRunner(curve=options).handshake(addr, 10.0)
    assert info["device"] == "cpu"


def test_keys_in_the_server_field(curve_server, plugin_modules):
    addr, keys, _ = curve_server
    gimp3_host, settings, _workflow = plugin_modules
    field = f"{addr} server-key={keys / 'server.key'} client-keys={keys / 'client.key_secret'}"
    assert settings.resolve_address(field, {}) == addr
    info = gimp3_host.DirectRunner(curve=settings.curve_options(field, {})).handshake(addr, 10.0)
    assert info["device"] == "cpu"
    with pytest.raises(ValueError, match="ADDRESS"):
        settings.split_server_field(f"{addr} sever-key=typo")


def test_unknown_client_is_refused_with_a_clear_message(curve_server, plugin_modules):
    addr, keys, stranger = curve_server
    gimp3_host, settings, workflow = plugin_modules
    field = f"{addr} server-key={keys / 'server.key'} client-keys={stranger / 'client.key_secret'}"
    t0 = time.monotonic()
    with pytest.raises(workflow.RunnerError) as err:
        gimp3_host.DirectRunner(curve=settings.curve_options(field, {})).handshake(addr, 10.0)
    assert err.value.kind == "refused"
    assert time.monotonic() - t0 < 5.0  # known at once, not after the whole timeout
    message = workflow.runner_message(err.value, addr)
    assert "refused this plug-in's CurveZMQ key" in message and "authorized_clients" in message


def test_without_keys_the_curve_server_does_not_answer(curve_server, plugin_modules):
    addr, _keys, _ = curve_server
    gimp3_host, _settings, _workflow = plugin_modules
    with pytest.raises(Exception) as err:
        gimp3_host.DirectRunner().handshake(addr, 1.0)
    assert getattr(err.value, "kind", None) == "unreachable"


def test_server_key_without_a_client_pair_says_what_is_missing(plugin_modules, tmp_path):
    gimp3_host, settings, workflow = plugin_modules
    options = settings.curve_options("tcp://127.0.0.1:9 server-key=" + "x" * 40, {})
    with pytest.raises(workflow.RunnerError, match="no client key pair"):
        gimp3_host.curve_arguments(options)


def test_a_whole_run_from_the_plugin_through_the_curve_server(curve_server, tmp_path):
    """Filters > MAGIC with the keys install wrote into magic_gimp.json: the job runs on the
    real `magic-server --curve` (its cancel guard gets the same keys) and the result is added."""
    import importlib.util
    import json

    from gimp_plugin import manifest, procedures

    addr, keys, _ = curve_server
    (tmp_path / "magic_gimp.json").write_text(json.dumps({
        "server_address": addr, "server_command": None,
        **plugin_install.curve_config(keys / "server.key", keys / "client.key_secret")}))
    with fake.installed() as Gimp:
        spec = importlib.util.spec_from_file_location(
            "magic_gimp3", Path(manifest.REPO_ROOT) / manifest.GIMP3.entry)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.PLUGIN_DIR = str(tmp_path)
        image = Gimp.Image(40, 30)
        base = image.add(Gimp.Layer(image, "photo", 40, 30, 4).fill((80, 90, 100, 255)))
        src = image.add(Gimp.Layer(image, "source", 6, 6, 4).fill((255, 255, 255, 255)), 5, 5)
        guide = image.add(Gimp.Layer(image, "guide", 6, 6, 4).fill((255, 255, 255, 255)), 25, 15)
        values = procedures.defaults(procedures.BY_NAME["python-fu-magic-synthesize"])
        values.update({"source-mask": src, "guide-mask": guide, "samples": 1, "preset": "tiny",
                       "iterations": 2, "resolution": 32})
        proc = module.MagicPlugIn().do_create_procedure("python-fu-magic-synthesize")
        status = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                      fake.Config(values), None)
        assert status == ("SUCCESS", None)
        assert [la.name for la in image.layers if la.is_group()] == ["MAGIC reshape tiny (seed 0)"]


def test_the_cancel_guard_cancels_through_the_curve_server(curve_server, plugin_modules):
    """What the guard does when GIMP kills the plug-in, with the CurveZMQ keys the plug-in
    hands it: the running job is cancelled by its id; by its cancel key before that."""
    import threading

    from gimp_plugin import cancel_guard
    from magic_protocol.client import JobCancelled, JobRequest, MagicClient, new_cancel_key

    addr, keys, _ = curve_server
    gimp3_host, settings, _workflow = plugin_modules
    config = {"server_address": addr, **plugin_install.curve_config(
        keys / "server.key", keys / "client.key_secret")}
    curve = gimp3_host.curve_arguments(settings.curve_options("", config))
    w, h = 40, 30
    mask = bytes([255] * 40 + [0] * (w * h - 40))
    request = JobRequest.from_params(w, h, bytes(w * h * 4), mask, mask[::-1], {
        "mode": "move", "samples": 1, "preset": "tiny", "seed": 0, "iterations": 1_000_000,
        "resolution": 32})
    for by_key in (False, True):
        key = new_cancel_key()
        events, outcome = [], []

        def submit(key=key, events=events, outcome=outcome):
            with MagicClient(addr, timeout_s=20, **curve) as client:
                try:
                    client.submit(request, events.append, cancel_key=key)
                except JobCancelled as exc:
                    outcome.append(exc)

        worker = threading.Thread(target=submit, daemon=True)
        worker.start()
        end = time.monotonic() + 120
        while not any(e.kind == "progress" for e in events) and time.monotonic() < end:
            time.sleep(0.05)
        job = next(e.job_id for e in events if e.kind == "accepted")
        t0 = time.monotonic()
        cancel_guard.cancel_on_server(addr, curve, None if by_key else job,
                                      key if by_key else None)
        worker.join(10)
        assert outcome and time.monotonic() - t0 < 2.0, (by_key, events[-1:])


def test_the_210_bridge_reaches_the_curve_server_with_the_same_keys(curve_server, tmp_path):
    """GIMP 2.10's plug-in talks through the Python 3 bridge: the CurveZMQ settings it reads
    (magic_gimp.json, the server field) reach the server as the GIMP 3 host's do, and a client
    the server does not know is refused with the same kind."""
    from gimp_plugin import settings, workflow
    from gimp_plugin.bridge_client import BridgeRunner

    addr, keys, stranger = curve_server
    config = {"server_address": addr, **plugin_install.curve_config(
        keys / "server.key", keys / "client.key_secret")}
    runner = BridgeRunner(str(REPO), python=sys.executable,
                          curve=settings.curve_options("", config))
    try:
        assert runner.handshake(addr, 10.0)["device"] == "cpu"
    finally:
        runner.close()
    field = f"{addr} server-key={keys / 'server.key'} client-keys={stranger / 'client.key_secret'}"
    runner = BridgeRunner(str(REPO), python=sys.executable,
                          curve=settings.curve_options(field, {}))
    try:
        with pytest.raises(workflow.RunnerError) as err:
            runner.handshake(addr, 10.0)
        assert err.value.kind == "refused"
        assert "refused this plug-in's CurveZMQ key" in workflow.runner_message(err.value, addr)
    finally:
        runner.close()
    runner = BridgeRunner(str(REPO), python=sys.executable)  # no keys: no answer
    try:
        with pytest.raises(workflow.RunnerError) as err:
            runner.handshake(addr, 1.0)
        assert err.value.kind == "unreachable"
    finally:
        runner.close()
