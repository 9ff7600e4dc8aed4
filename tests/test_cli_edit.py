"""magic-edit: arguments, one-line errors, outputs, progress, cancellation, --server, and one
real end-to-end run on the engine (untrained weights, a few iterations)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from magic_server import engines
from magic_server.cli import edit as cli_edit
from magic_server.cli.progress_bar import EditProgressBar, format_seconds
from magic_server.engine.api import Cancelled, Progress, SynthesisResult

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def scene(tmp_path):
    """A 64x48 photo with a 32x24 source mask file (resized on load) and a guide mask."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "photo.png")
    src = np.zeros((24, 32), dtype=np.uint8)
    src[4:10, 4:10] = 255
    Image.fromarray(src, "L").save(tmp_path / "src.png")
    guide = np.zeros((48, 64, 4), dtype=np.uint8)  # RGBA: alpha decides
    guide[20:40, 30:50, 3] = 255
    Image.fromarray(guide, "RGBA").save(tmp_path / "guide.png")
    Image.new("L", (64, 48), 0).save(tmp_path / "empty.png")
    Image.new("L", (64, 48), 255).save(tmp_path / "full.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "tiny.png")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "bad.ckpt").write_bytes(b"\x00" * 64)
    return tmp_path, image


class StandInEngine:
    """Records what magic-edit passes; returns recognisable images; honours cancel."""

    calls: ClassVar[list[dict]] = []

    def __init__(self, classifier, device, weights_label, **how) -> None:
        self.device, self.weights_label = device, weights_label

    def synthesize(self, image, source_mask, guide_mask, options, on_progress=None, cancel=None,
                   *, init_image=None):
        StandInEngine.calls.append({"image": image, "source": source_mask, "guide": guide_mask,
                                    "options": options, "device": self.device,
                                    "label": self.weights_label, "init_image": init_image})
        total = options.iterations or 100
        for it in range(1, total + 1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            previews = None
            if options.preview_every and it % options.preview_every == 0:
                previews = [np.full((8, 8, 3), k, np.uint8) for k in range(options.samples)]
            if on_progress:
                on_progress(Progress(it, total, it * 0.01, previews=previews))
        images = [np.full_like(image, 10 * (k + 1)) for k in range(options.samples)]
        return SynthesisResult(images, [options.seed + k for k in range(options.samples)], 0,
                               total, 0.1)


@pytest.fixture
def stand_in(monkeypatch):
    StandInEngine.calls = []
    monkeypatch.setattr(engines, "Engine", StandInEngine)
    return StandInEngine


def _run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli_edit.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _base(d: Path, *extra) -> list:
    return [d / "photo.png", "--source-mask", d / "src.png", "--guide-mask", d / "guide.png",
            "-o", d / "out.png", "--weights", "untrained", "--device", "cpu", *extra]


# --- errors: one line, non-zero, no traceback ------------------------------------------------


@pytest.mark.parametrize("change, expected", [
    ({0: "missing.png"}, "image .*missing.png not found"),
    ({0: "notes.png"}, "not an image file"),
    ({0: "tiny.png"}, "10x10: both sides must be at least 16 pixels"),
    ({2: "nothing.png"}, "mask .*nothing.png not found"),
    ({2: "empty.png"}, "source mask .*empty.png is empty"),
    ({4: "full.png"}, "guide mask .*full.png covers the whole image"),
    ({6: "out.jpg"}, "must be a .png file"),
    ({8: "bad.ckpt"}, "bad.ckpt is not a readable PyTorch checkpoint"),
    ({8: "absent.ckpt"}, "absent.ckpt not found; install the classifier weights with"),
    ({10: "tpu"}, "unknown device 'tpu'"),
    ({"extra": ["--samples", "0"]}, "samples must be between 1 and 16"),
    ({"extra": ["--resolution", "8"]}, "resolution must be between 32 and 1024"),
    ({"extra": ["--iterations", "0"]}, "iterations must be between"),
])
def test_errors_are_one_clear_line(scene, stand_in, capsys, change, expected):
    d, _ = scene
    change = dict(change)
    argv = _base(d, *change.pop("extra", []))
    for index, name in change.items():
        argv[index] = d / name if index != 10 else name
    rc, out, err = _run(capsys, *argv)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("magic-edit: error: ")
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in err and out == ""
    assert stand_in.calls == []
    assert not list(d.glob("out*.png"))


def test_unavailable_cuda_is_a_clear_error(scene, stand_in, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    d, _ = scene
    argv = _base(d)
    argv[10] = "cuda:0"
    rc, _, err = _run(capsys, *argv)
    assert rc == 1 and "device 'cuda:0' is not available" in err and "Traceback" not in err


def test_missing_installed_weights_say_how_to_get_them(scene, stand_in, capsys, monkeypatch):
    from magic_server.weights import store as weights_store

    def no_network(url=None, cache_dir=None, progress=None):
        from magic_server.weights.errors import WeightsError
        raise WeightsError("cannot download the weights from https://example: no network. "
                           "Install from a file: magic-installer weights --file FILE")

    monkeypatch.setattr(weights_store, "installed_weights_path", lambda cache_dir=None: None)
    monkeypatch.setattr(weights_store, "download_weights", no_network)
    d, _ = scene
    argv = _base(d)[:-4] + ["--device", "cpu"]  # no --weights: the installed ones
    # the stand-in classifier (installed with the test extras) runs instead, and it is said
    from magic_server.weights import efficientnet as efficientnet_weights
    from magic_server.weights.classifier import EFFICIENTNET_LABEL

    rc, _, err = _run(capsys, *argv)
    assert rc == 0, err
    assert "cannot download the weights from https://example: no network" in err
    assert EFFICIENTNET_LABEL in err and "magic-installer weights" in err
    assert stand_in.calls[-1]["label"] == EFFICIENTNET_LABEL
    # without the stand-in's package either: an error saying how to get each
    monkeypatch.setattr(efficientnet_weights, "PACKAGE", "no_such_package_for_magic_tests")
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    assert "magic-edit: error: cannot download the weights" in err
    assert "magic-installer weights" in err and "magic-for-gimp[efficientnet]" in err


def test_usage_errors_exit_2(scene, capsys):
    d, _ = scene
    with pytest.raises(SystemExit) as e:
        cli_edit.main([str(d / "photo.png"), "-o", "x.png", "--guide-mask", "g.png"])
    assert e.value.code == 2
    assert "--source-mask" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_edit.main([str(a) for a in _base(d, "--preset", "huge")])
    assert e.value.code == 2
    assert "paper" in capsys.readouterr().err


def test_unexpected_failure_is_one_line_too(scene, capsys, monkeypatch):
    class Broken(StandInEngine):
        def synthesize(self, *a, **k):
            raise ZeroDivisionError("boom")

    monkeypatch.setattr(engines, "Engine", Broken)
    monkeypatch.delenv("MAGIC_DEBUG", raising=False)
    rc, _, err = _run(capsys, *_base(scene[0]))
    assert rc == 1
    assert "magic-edit: internal error: ZeroDivisionError: boom" in err
    assert "Traceback" not in err


# --- successful runs with the stand-in engine --------------------------------------------------


def test_several_samples_are_numbered_and_reported(scene, stand_in, capsys):
    d, image = scene
    rc, out, err = _run(capsys, *_base(d, "--samples", "3", "--preset", "draft", "--seed", "5",
                                       "--mode", "move", "--iterations", "40",
                                       "--resolution", "96"))
    assert rc == 0, err
    paths = [d / f"out-{i}.png" for i in (1, 2, 3)]
    for i, p in enumerate(paths, start=1):
        assert f"wrote {p}" in out
        assert (np.asarray(Image.open(p)) == 10 * i).all()
    assert not (d / "out.png").exists()
    assert "weights: untrained (random weights)" in out
    assert "UNTRAINED" in out and "UNTRAINED" in err  # loud, both at start and at the end
    call = stand_in.calls[0]
    o = call["options"]
    assert (o.samples, o.preset, o.seed, o.mode, o.iterations, o.resolution) == (
        3, "draft", 5, "move", 40, 96)
    assert o.preview_every == 0
    assert str(call["device"]) == "cpu"
    assert np.array_equal(call["image"], image)
    expected_source = np.zeros((48, 64), bool)
    expected_source[8:20, 8:20] = True  # 32x24 file scaled x2 (nearest)
    assert np.array_equal(call["source"], expected_source)
    assert call["guide"].sum() == 400 and call["guide"][20:40, 30:50].all()
    # Progress on stderr (not a TTY here): about one line per 5%, with ETA.
    bar_lines = [line for line in err.splitlines() if "%" in line and "/40" in line]
    assert 15 <= len(bar_lines) <= 22
    assert "ETA" in bar_lines[0] and "100% 40/40" in bar_lines[-1]


def test_one_sample_writes_exactly_out_png(scene, stand_in, capsys):
    d, _ = scene
    rc, out, _ = _run(capsys, *_base(d, "--iterations", "3"))
    assert rc == 0
    assert (d / "out.png").exists() and not (d / "out-1.png").exists()
    assert f"wrote {d / 'out.png'}" in out


def test_preview_frames_are_written(scene, stand_in, capsys):
    d, _ = scene
    rc, out, _ = _run(capsys, *_base(d, "--samples", "2", "--iterations", "40",
                                     "--preview-dir", d / "frames"))
    assert rc == 0
    assert stand_in.calls[0]["options"].preview_every == 2  # 40 iterations / 20 frames
    frames = sorted((d / "frames").glob("*.png"))
    assert len(frames) == 40  # 20 steps x 2 samples
    assert "synthesis-000002-sample1.png" in [f.name for f in frames]
    assert "wrote 40 preview frames" in out


def test_remove_mode_allows_an_empty_guide(scene, stand_in, capsys):
    d, _ = scene
    argv = _base(d, "--mode", "remove", "--iterations", "2")
    argv[4] = d / "empty.png"
    rc, _, err = _run(capsys, *argv)
    assert rc == 0, err
    assert not stand_in.calls[0]["guide"].any()


def test_engine_cancel_exits_130(scene, capsys, monkeypatch):
    class Cancelling(StandInEngine):
        def synthesize(self, *a, **k):
            raise Cancelled()

    monkeypatch.setattr(engines, "Engine", Cancelling)
    rc, _, err = _run(capsys, *_base(scene[0]))
    assert rc == 130
    assert "cancelled" in err and "Traceback" not in err
    assert not (scene[0] / "out.png").exists()


def test_server_mode_uses_run_remote(scene, stand_in, capsys, monkeypatch):
    from magic_protocol import client

    calls = []

    def run_remote(address, image, source_mask, guide_mask, options, on_progress,
                   init_image=None, label_maps=None):
        calls.append((address, options))
        on_progress(Progress(1, 2, 0.5))
        on_progress(Progress(2, 2, 1.0))
        return [np.zeros_like(image), np.ones_like(image)]

    from magic_server.cli import remote_edit

    monkeypatch.setattr(remote_edit, "run_remote", run_remote)
    d, _ = scene
    argv = [d / "photo.png", "--source-mask", d / "src.png", "--guide-mask", d / "guide.png",
            "-o", d / "r.png", "--samples", "2", "--server", "tcp://127.0.0.1:5999"]
    rc, out, err = _run(capsys, *argv)
    assert rc == 0, err
    assert calls[0][0] == "tcp://127.0.0.1:5999" and calls[0][1].samples == 2
    assert (d / "r-1.png").exists() and (d / "r-2.png").exists()
    assert "server at tcp://127.0.0.1:5999" in out
    assert stand_in.calls == []  # nothing ran locally

    def unreachable(*a, **k):
        raise client.ServerUnreachable("no answer from tcp://127.0.0.1:5999 after 10 s")

    monkeypatch.setattr(remote_edit, "run_remote", unreachable)
    rc, _, err = _run(capsys, *argv)
    assert rc == 1
    assert err.strip().splitlines()[-1].startswith("magic-edit: error: server tcp://127.0.0.1")

    def cancelled(*a, **k):
        raise client.JobCancelled("j1", "cancelled (Ctrl-C)")

    monkeypatch.setattr(remote_edit, "run_remote", cancelled)
    assert _run(capsys, *argv)[0] == 130


def test_ctrl_c_cancels_cleanly(scene):
    """A real SIGINT to a real magic-edit process running a slow stand-in engine."""
    d, _ = scene
    script = textwrap.dedent("""
        import sys, time
        from magic_server.cli import edit as cli_edit
        from magic_server import engines
        from magic_server.engine.api import Cancelled, Progress

        class Slow:
            def __init__(self, classifier, device, weights_label, **k):
                self.weights_label = weights_label
            def synthesize(self, image, s, g, options, on_progress=None, cancel=None,
                           init_image=None):
                for it in range(1, 100000):
                    if cancel.is_set():
                        raise Cancelled()
                    on_progress(Progress(it, 100000, it * 0.05))
                    time.sleep(0.05)

        engines.Engine = Slow
        sys.exit(cli_edit.main(sys.argv[1:]))
    """)
    argv = [str(a) for a in _base(d)]
    proc = subprocess.Popen([sys.executable, "-c", script, *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        log = ""
        while "synthesizing" not in log and time.monotonic() < deadline:
            log += proc.stderr.readline()
        assert "synthesizing" in log, log
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "cancelling after the current step" in err
    assert "magic-edit: cancelled" in err
    assert "Traceback" not in err + log
    assert not (d / "out.png").exists()


# --- --init-from, --whole-image, --no-refine ----------------------------------------------------


def test_init_from_lays_the_composite_over_the_photo(scene, stand_in, capsys):
    d, image = scene
    init = np.zeros((48, 64, 4), np.uint8)  # transparent = the photo's pixel
    init[20:40, 30:50] = (250, 10, 10, 255)  # the object pasted where the guide is
    init[0:4, 0:4] = (0, 0, 0, 51)  # 20% black over the photo
    Image.fromarray(init, "RGBA").save(d / "composite.png")
    rc, _, err = _run(capsys, *_base(d, "--iterations", "2", "--mode", "move",
                                     "--init-from", d / "composite.png"))
    assert rc == 0, err
    call = stand_in.calls[0]
    expected = image.copy()
    expected[20:40, 30:50] = (250, 10, 10)
    expected[0:4, 0:4] = (image[0:4, 0:4].astype(int) * 204 + 127) // 255
    assert call["init_image"].dtype == np.uint8 and call["init_image"].shape == (48, 64, 3)
    assert np.array_equal(call["init_image"], expected)
    assert np.array_equal(call["image"], image)
    o = call["options"]
    assert o.composite is True and o.refine is True  # the defaults


def test_without_init_from_no_composite_is_passed_and_flags_map_to_options(scene, stand_in,
                                                                          capsys):
    d, _ = scene
    rc, _, err = _run(capsys, *_base(d, "--iterations", "2", "--whole-image", "--no-refine"))
    assert rc == 0, err
    call = stand_in.calls[0]
    assert call["init_image"] is None
    assert call["options"].composite is False and call["options"].refine is False


@pytest.mark.parametrize("size", [(32, 24), (64, 47)])
def test_init_from_of_another_size_is_one_clear_line(scene, stand_in, capsys, size):
    d, _ = scene
    Image.new("RGBA", size).save(d / "small.png")
    rc, out, err = _run(capsys, *_base(d, "--init-from", d / "small.png"))
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("magic-edit: error: --init-from ")
    assert f"is {size[0]}x{size[1]} but the image is 64x48" in lines[0]
    assert stand_in.calls == []


def test_init_from_missing_file_is_one_clear_line(scene, stand_in, capsys):
    d, _ = scene
    rc, _, err = _run(capsys, *_base(d, "--init-from", d / "nope.png"))
    assert rc == 1 and "composite" in err and "nope.png not found" in err
    assert len(err.strip().splitlines()) == 1


def test_progress_names_each_stage_instead_of_restarting_silently(scene, monkeypatch, capsys):
    class Staged(StandInEngine):
        def synthesize(self, image, source_mask, guide_mask, options, on_progress=None,
                       cancel=None, *, init_image=None):
            for i in range(1, 4):
                on_progress(Progress(i, 3, 0.1 * i, stage="mask-net"))
            for i in range(1, 11):
                on_progress(Progress(i, 10, 0.1 * i, stage="synthesis" if i <= 6 else "refine"))
            return SynthesisResult([image], [0], 0, 10, 1.0)

    monkeypatch.setattr(engines, "Engine", Staged)
    d, _ = scene
    rc, _, err = _run(capsys, *_base(d, "--iterations", "10"))
    assert rc == 0, err
    bar = [line for line in err.splitlines() if "% " in line]
    labels = [line.split(":")[0] for line in bar]
    assert labels[0] == "learning the object" and labels[-1] == "refining"
    assert "synthesizing" in labels
    order = ["learning the object", "synthesizing", "refining"]
    assert labels == sorted(labels, key=order.index)
    assert any(line.startswith("refining: [") and "7/10" in line for line in bar)
    assert bar[-1].startswith("refining:") and "100% 10/10" in bar[-1]


# --- progress bar ------------------------------------------------------------------------------


def test_progress_bar_in_logs_prints_every_5_percent():
    stream = io.StringIO()
    bar = EditProgressBar(stream, tty=False)
    for i in range(1, 1001):
        bar.update(i, 1000, "synthesis", elapsed_s=i * 0.1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 21  # the first step (shows it started), then every 5%
    assert "0% 1/1000" in lines[0]
    assert lines[1].startswith("synthesis: [#") and "5% 50/1000" in lines[1]
    assert "ETA 1m35s" in lines[1]  # 95 s left at 0.1 s per step
    assert "\r" not in stream.getvalue()
    assert lines[-1].endswith("100% 1000/1000  1m40s elapsed")


def test_progress_bar_on_a_terminal_redraws_in_place():
    stream = io.StringIO()
    now = [0.0]
    bar = EditProgressBar(stream, tty=True, clock=lambda: now[0])
    for i in range(1, 101):
        now[0] = i * 0.05  # 20 updates a second: redrawn at most 5 times a second
        bar.update(i, 100, "mask-net", elapsed_s=now[0])
    text = stream.getvalue()
    assert 20 <= text.count("\r") <= 27
    assert text.count("\n") == 1 and text.endswith("\n")  # one newline, when finished
    bar.update(1, 10, "synthesis", elapsed_s=0.1)
    bar.close()
    assert stream.getvalue().endswith("\n")


def test_format_seconds():
    assert [format_seconds(s) for s in (None, -1, 0, 59.4, 61, 3600 * 2 + 61)] == [
        "?", "?", "0s", "59s", "1m01s", "2h01m"]


# --- the real engine ----------------------------------------------------------------------------


def test_end_to_end_on_the_real_engine(tmp_path):
    """magic-edit as a process, real engine, untrained classifier, 2 samples, a few iterations."""
    samples = REPO / "samples"
    image = samples / "coffee.png"
    if not image.exists():  # the bundled scene; fall back to a synthetic one
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(
            tmp_path / "photo.png")
        m = np.zeros((64, 96), np.uint8)
        m[20:40, 10:30] = 255
        Image.fromarray(m).save(tmp_path / "src.png")
        Image.fromarray(np.roll(m, 40, axis=1)).save(tmp_path / "move.png")
        image, src, guide = tmp_path / "photo.png", tmp_path / "src.png", tmp_path / "move.png"
    else:
        src, guide = samples / "masks/coffee_source.png", samples / "masks/coffee_move.png"
    out = tmp_path / "edit.png"
    env = dict(os.environ, MAGIC_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "magic_server.cli.edit", str(image), "--source-mask", str(src),
         "--guide-mask", str(guide), "-o", str(out), "--mode", "move", "--weights", "untrained",
         "--preset", "paper", "--iterations", "3", "--resolution", "64", "--samples", "2",
         "--device", "cpu"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = tmp_path / "edit-1.png", tmp_path / "edit-2.png"
    assert f"wrote {first}" in proc.stdout and f"wrote {second}" in proc.stdout
    assert "untrained" in proc.stdout
    a, b = np.asarray(Image.open(first)), np.asarray(Image.open(second))
    photo = np.asarray(Image.open(image).convert("RGB"))
    assert a.shape == b.shape == photo.shape
    assert not np.array_equal(a, b)  # two samples from different noise
    assert "learning the object: [" in proc.stderr and "synthesizing: [" in proc.stderr
    assert "100% 3/3" in proc.stderr


# --- python -m magic_server.sample (make sample) ------------------------------------------------


@pytest.fixture
def samples_root(scene):
    d, _ = scene
    root = d / "samples"
    (root / "masks").mkdir(parents=True)
    for name in ("photo.png", "src.png", "guide.png"):
        (root / ("masks" if name != "photo.png" else "") / name).write_bytes((d / name).read_bytes())
    photo = np.asarray(Image.open(d / "photo.png").convert("RGB")).copy()
    guide = np.asarray(Image.open(d / "guide.png"))[..., 3] > 127  # RGBA: alpha decides
    photo[guide] = (200, 40, 40)  # the artist's pasted layer, roughly
    (root / "composites").mkdir()
    Image.fromarray(photo).save(root / "composites/move.png")
    index = {"default": "desk", "scenes": {"desk": {
        "image": "photo.png", "source_mask": "masks/src.png",
        "guides": {"move": "masks/guide.png"}, "licence": "CC0", "origin": "test",
        "edits": {"move": "square moved right"},
        "composites": {"move": "composites/move.png"}}}}
    (root / "index.json").write_text(json.dumps(index))
    return root


def test_sample_reads_the_index(samples_root):
    from magic_server.cli.sample import SampleError, read_scene

    scene = read_scene(samples_root)
    assert scene.name == "desk" and scene.mode == "move"
    assert scene.image == samples_root / "photo.png"
    assert scene.guide_mask == samples_root / "masks/guide.png"
    assert scene.description == "square moved right"
    with pytest.raises(SampleError, match="scene 'moon' is not in .*scenes: desk"):
        read_scene(samples_root, "moon")
    with pytest.raises(SampleError, match="no 'copy' guide"):
        read_scene(samples_root, mode="copy")
    with pytest.raises(SampleError, match="index.json not found"):
        read_scene(samples_root / "masks")


def test_bundled_samples_index_points_at_real_files():
    from magic_server.cli.sample import read_scene

    scene = read_scene(REPO / "samples")
    for path in (scene.image, scene.source_mask, scene.guide_mask):
        assert path.is_file(), path


def _no_robust_weights(monkeypatch):
    from magic_server.weights import store as weights_store
    from magic_server.weights.errors import WeightsError

    def no_network(url=None, cache_dir=None, progress=None):
        raise WeightsError("cannot download the weights from https://example/w.ckpt: [Errno -2] "
                           "Name or service not known (tried 6 times). Check your network")

    monkeypatch.setattr(weights_store, "installed_weights_path", lambda cache_dir=None: None)
    monkeypatch.setattr(weights_store, "download_weights", no_network)


def test_sample_falls_back_to_efficientnet_and_says_so(samples_root, stand_in, capsys,
                                                       monkeypatch, tmp_path):
    from magic_server.cli import sample
    from magic_server.weights.classifier import EFFICIENTNET_LABEL

    _no_robust_weights(monkeypatch)
    out = tmp_path / "out"
    rc = sample.main(["--samples-root", str(samples_root), "--out", str(out), "--device", "cpu",
                      "--iterations", "4"])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "Name or service not known (tried 6 times)" in err
    assert EFFICIENTNET_LABEL in err and "not robust" in err and "magic-installer weights" in err
    assert "UNTRAINED" not in err + stdout
    assert "uses the 'draft' budget" in err
    options = stand_in.calls[0]["options"]
    assert (options.mode, options.preset, options.samples) == ("move", "draft", 2)
    start = stand_in.calls[0]["init_image"]  # the scene's composite: the object at the guide
    image, guide = stand_in.calls[0]["image"], stand_in.calls[0]["guide"]
    assert start.shape == image.shape and not np.array_equal(start[guide], image[guide])
    assert np.array_equal(start, np.asarray(Image.open(samples_root / "composites/move.png")))
    assert stand_in.calls[0]["label"] == EFFICIENTNET_LABEL
    written = [out / "sample-1.png", out / "sample-2.png", out / "sample-overview.png"]
    for path in written:
        assert f"wrote {path}" in stdout
    overview = Image.open(out / "sample-overview.png")
    # input | guide | 2 results, each 64x48 scaled to 256 high (341 wide), 6 px gaps; under
    # them the 100 % crops (here the whole 64x48 photo, shown at the crops' 160 px height)
    assert overview.size == (4 * 341 + 5 * 6, 256 + 18 + 12 + 160 + 18 + 12)
    assert f"weights: {EFFICIENTNET_LABEL}" in stdout


def test_sample_without_any_real_classifier_fails_and_says_how(samples_root, stand_in, capsys,
                                                               monkeypatch, tmp_path):
    """Neither the robust weights nor the stand-in's package: no silent random weights."""
    from magic_server.cli import sample
    from magic_server.weights import efficientnet as efficientnet_weights

    _no_robust_weights(monkeypatch)
    monkeypatch.setattr(efficientnet_weights, "PACKAGE", "no_such_package_for_magic_tests")
    rc = sample.main(["--samples-root", str(samples_root), "--out", str(tmp_path / "o"),
                      "--device", "cpu", "--iterations", "4"])
    err = capsys.readouterr().err
    assert rc == 1 and "sample: error:" in err and "Traceback" not in err
    assert "magic-installer weights" in err and "magic-for-gimp[efficientnet]" in err
    assert stand_in.calls == []


def test_sample_without_a_composite_starts_from_noise_and_a_bad_one_is_refused(samples_root):
    from magic_server.cli.sample import SampleError, read_composite, read_scene

    index = json.loads((samples_root / "index.json").read_text())
    scene = read_scene(samples_root)
    image = np.asarray(Image.open(scene.image).convert("RGB"))
    del index["scenes"]["desk"]["composites"]
    (samples_root / "index.json").write_text(json.dumps(index))
    assert read_composite(read_scene(samples_root), image) is None
    Image.fromarray(image[:20]).save(samples_root / "composites/move.png")
    with pytest.raises(SampleError, match="the photo"):
        read_composite(scene, image)


def test_sample_with_named_bad_weights_fails_without_fallback(samples_root, stand_in, capsys,
                                                              tmp_path):
    from magic_server.cli import sample

    (tmp_path / "w.pth").write_bytes(b"junk")
    rc = sample.main(["--samples-root", str(samples_root), "--out", str(tmp_path / "o"),
                      "--device", "cpu", "--weights", str(tmp_path / "w.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and "sample: error:" in err and "not a readable" in err
    assert stand_in.calls == []


def test_the_overviews_crops_are_the_photos_own_pixels_around_each_place():
    from magic_server.cli.sample import crop_at, hundred_percent_crops

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3)).astype(np.uint8)
    result = image.copy()
    result[200:240, 300:340] = 0
    source = np.zeros((300, 400), bool)
    source[40:80, 50:90] = True
    guide = np.zeros_like(source)
    guide[200:240, 300:340] = True
    crop = crop_at(image, source)
    assert crop.shape == (160, 160, 3)  # at 100 %: the pixels themselves, not scaled
    assert np.array_equal(crop, image[0:160, 0:160])  # centred on the place, kept inside
    panels = hundred_percent_crops(image, result, source, guide)
    assert [c for c, _ in panels][1::2] == ["result 1, old place, 100%",
                                            "result 1, new place, 100%"]
    assert np.array_equal(panels[3][1], result[140:300, 240:400])
