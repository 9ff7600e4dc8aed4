"""magic_protocol.bridge (the Python 3 side GIMP 2.10's plug-in talks to) and its framing,
as a real child process against a real server with the stand-in engine."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

from gimp_plugin import bridge_client
from magic_protocol import bridge
from magic_protocol.client import MagicClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
from test_server_support import FakeEngine, ThreadedServer

W, H = 8, 6
MASK = bytes([255] * 4 + [0] * (W * H - 4))


def test_framing_round_trips_between_both_sides():
    buf = io.BytesIO()
    bridge.write_message(buf, {"op": "x", "n": 1}, [b"abc", bytearray(b""), memoryview(b"z")])
    bridge_client.write_message(buf, {"op": "y"}, [b"\x00" * 70000])
    buf.seek(0)
    assert bridge_client.read_message(buf) == ({"op": "x", "n": 1, "nframes": 3},
                                               [b"abc", b"", b"z"])
    header, frames = bridge.read_message(buf)
    assert header == {"op": "y", "nframes": 1} and frames == [b"\x00" * 70000]
    assert bridge.read_message(buf) is None
    truncated = io.BytesIO(buf.getvalue()[:10])
    assert bridge_client.read_message(truncated) is None


def spawn(env=None):
    return subprocess.Popen([sys.executable, "-m", "magic_protocol.bridge"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, **(env or {})))


def submit_header(addr, **params):
    p = {"mode": "move", "samples": 1, "preset": "tiny", "seed": 0}
    p.update(params)
    return {"op": "submit", "address": addr, "params": p, "width": W, "height": H,
            "timeout_s": None}


def test_bridge_handshake_and_job(tmp_path):
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=3)) as srv:
        proc = spawn()
        try:
            bridge.write_message(proc.stdin, {"op": "handshake", "address": srv.address,
                                              "timeout_s": 5})
            header, _ = bridge.read_message(proc.stdout)
            assert header["ok"] and "tiny" in header["info"]["presets"]
            bridge.write_message(proc.stdin, submit_header(srv.address, samples=2, seed=4),
                                 [bytes([10, 20, 30, 255]) * (W * H), MASK, MASK[::-1]])
            kinds = []
            while True:
                header, frames = bridge.read_message(proc.stdout)
                if "event" not in header:
                    break
                kinds.append(header["event"])
            assert kinds[0] == "accepted" and "progress" in kinds
            assert header["ok"] and header["seeds"] == [4, 5]
            assert header["sizes"] == [[W, H], [W, H]]
            assert frames[0] == bytes([245, 235, 225]) * (W * H)
            bridge.write_message(proc.stdin, {"op": "quit"})
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()


def test_bridge_cancels_the_job_when_the_plugin_dies():
    """GIMP kills a plug-in whose progress bar was cancelled: the bridge's stdin closes."""
    engine = FakeEngine(step_s=0.05, iterations=1000)
    with ThreadedServer(engine) as srv:
        proc = spawn()
        try:
            bridge.write_message(proc.stdin, submit_header(srv.address),
                                 [bytes(W * H * 4), MASK, MASK[::-1]])
            while bridge.read_message(proc.stdout)[0].get("event") != "progress":
                pass
            proc.stdin.close()
            assert proc.wait(timeout=15) == 0
            with MagicClient(srv.address) as client:
                deadline = time.monotonic() + 10
                while client.status().get("running") and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert client.status().get("running") is None
        finally:
            proc.kill()
            proc.wait()


def test_bridge_without_pyzmq_says_how_to_fix_it(tmp_path):
    (tmp_path / "zmq.py").write_text("raise ImportError('No module named zmq')\n")
    proc = spawn({"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    try:
        bridge.write_message(proc.stdin, {"op": "handshake", "address": "tcp://127.0.0.1:1"})
        header, _ = bridge.read_message(proc.stdout)
        assert header == {"ok": False, "kind": "missing", "nframes": 0,
                          "message": bridge.PYZMQ_HINT.format(python=sys.executable)}
        assert "-m pip install pyzmq" in header["message"]
    finally:
        proc.kill()
        proc.wait()


def test_bridge_runner_reports_server_errors_and_cancel(tmp_path):
    engine = FakeEngine(step_s=0.05, iterations=1000)
    with ThreadedServer(engine) as srv:
        runner = bridge_client.BridgeRunner(str(ROOT), python=sys.executable)
        try:
            req = {"width": W, "height": H, "image": bytes(W * H * 4), "source_mask": MASK,
                   "guide_mask": bytes(W * H),  # empty guide: the engine refuses it
                   "params": {"mode": "move", "samples": 1, "preset": "tiny", "seed": 0}}
            try:
                runner.submit(srv.address, req, lambda k, i: None, lambda: False, None)
            except bridge_client.RunnerError as exc:
                assert exc.kind == "failed" and "empty" in exc.message
            else:
                raise AssertionError("an empty guide mask was accepted")
            seen = []
            req["guide_mask"] = MASK[::-1]
            try:
                runner.submit(srv.address, req, lambda k, i: seen.append(k),
                              lambda: "progress" in seen, None)
            except bridge_client.RunnerError as exc:
                assert exc.kind == "cancelled"
            else:
                raise AssertionError("cancel was ignored")
        finally:
            runner.close()


def test_bridge_passes_the_init_frame_and_new_params_to_the_server():
    engine = FakeEngine(step_s=0.0, iterations=2)
    init = bytes([0, 0, 0, 0]) * (W * H - 4) + bytes([7, 8, 9, 255]) * 4
    with ThreadedServer(engine) as srv:
        proc = spawn()
        try:
            bridge.write_message(proc.stdin, submit_header(srv.address, composite=False,
                                                           refine=False),
                                 [bytes([10, 20, 30, 255]) * (W * H), MASK, MASK[::-1], init])
            while True:
                header, _ = bridge.read_message(proc.stdout)
                if "event" not in header:
                    break
            assert header["ok"], header
            bridge.write_message(proc.stdin, {"op": "quit"})
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.wait()
    call = engine.last_call
    got = call["init_image"].reshape(-1, 3).tolist()
    assert got == [[10, 20, 30]] * (W * H - 4) + [[7, 8, 9]] * 4
    assert call["options"].composite is False and call["options"].refine is False


LABELS = bytes([200, 0, 0] * (W * H // 2) + [0, 0, 200] * (W * H // 2))  # top half red


def test_bridge_names_each_modes_frames():
    from magic_protocol import client

    image = bytes(W * H * 4)
    layout = dict(submit_header("tcp://x", mode="layout"))
    painted = bytes([0, 0, 200]) * 2 + LABELS[6:]
    job = bridge.job_request(client, layout, [image, LABELS, painted])
    assert [spec.name for spec, _ in job.frames()] == ["image", "source_labels", "target_labels"]
    assert job.source_labels.channels == 3 and job.source_mask is None
    job = bridge.job_request(client, layout, [image, LABELS, painted, image])
    assert job.init_image is not None
    label_map = submit_header("tcp://x", mode="label-map", labels=5)
    job = bridge.job_request(client, label_map, [image])
    assert [spec.name for spec, _ in job.frames()] == ["image"] and job.labels == 5
    for header, frames in ((layout, [image, LABELS]), (label_map, [image, image]),
                           (submit_header("tcp://x"), [image, MASK])):
        try:
            bridge.job_request(client, header, frames)
        except ValueError as exc:
            assert "submit needs the frames" in str(exc)
        else:
            raise AssertionError(f"{len(frames)} frames accepted for {header['params']}")


def test_bridge_runner_sends_label_maps_and_returns_the_notes(monkeypatch):
    import numpy as np

    from magic_server.serve import jobs

    def label_map(image, labels, seed, on_progress, cancel):
        return jobs.LabelMapResult([np.full(image.shape, 7, np.uint8)], [seed], 0.0,
                                   notes=["the photo gave 1 regions, not 2"])

    monkeypatch.setattr(jobs, "label_map_result", label_map)
    engine = FakeEngine(step_s=0.0, iterations=2)
    painted = bytes([0, 0, 200]) * 2 + LABELS[6:]  # the first two pixels turn blue
    with ThreadedServer(engine) as srv:
        runner = bridge_client.BridgeRunner(str(ROOT), python=sys.executable)
        try:
            assert "layout" in runner.handshake(srv.address, 5)["modes"]
            req = {"width": W, "height": H, "image": bytes(W * H * 4), "source_labels": LABELS,
                   "target_labels": painted, "init": None,
                   "params": {"mode": "layout", "samples": 1, "preset": "tiny", "seed": 3}}
            images, seeds, notes = runner.submit(srv.address, req, lambda k, i: None,
                                                 lambda: False, None)
            assert seeds == [3] and len(images) == 1 and notes == []
            changed = engine.last_call["source_labels"] != engine.last_call["target_labels"]
            assert changed.sum() == 2 and changed[0, :2].all()
            req = {"width": W, "height": H, "image": bytes(W * H * 4), "init": None,
                   "params": {"mode": "label-map", "samples": 1, "preset": "quality",
                              "seed": 0, "labels": 2}}
            images, seeds, notes = runner.submit(srv.address, req, lambda k, i: None,
                                                 lambda: False, None)
            assert images == [(bytes([7]) * (W * H * 3), W, H)]
            assert notes == ["the photo gave 1 regions, not 2"]
        finally:
            runner.close()


def test_both_hosts_name_a_refused_key_the_same():
    # one mapping (client.error_kind) for the GIMP 3 host and the 2.10 bridge: a server that
    # refuses the CurveZMQ key is "refused" on both, not "unreachable" on one of them
    from magic_protocol import client

    refused = client.AccessRefused("the MAGIC server refused this client's CurveZMQ key")
    b = bridge.Bridge(io.BytesIO(), io.BytesIO(), client_module=client)
    assert b.kind_of(refused) == "refused"
    assert b.kind_of(client.ServerUnreachable("no answer")) == "unreachable"
    assert b.kind_of(client.JobFailed("internal_error", "boom")) == "failed"
    assert b.kind_of(client.Timeout("late")) == "timeout"
    assert b.kind_of(ValueError("other")) == "failed"
