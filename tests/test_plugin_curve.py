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
sys.path.insert(0, str(HERE))
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
