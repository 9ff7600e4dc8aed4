"""remote_edit.run_remote and `magic-edit --server ADDR` against a server (stand-in engine)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from test_server_support import FakeEngine, ThreadedServer, address

from magic_protocol.client import JobFailed, MagicError
from magic_server.cli.remote_edit import run_remote
from magic_server.engine.api import SynthesisOptions


def inputs(w: int = 40, h: int = 30):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    source = np.zeros((h, w), bool)
    source[5:15, 5:15] = True
    return image, source, np.roll(source, 12, axis=1)


def test_run_remote_returns_numpy_results_and_engine_progress():
    image, source, guide = inputs()
    seen = []
    with ThreadedServer(FakeEngine(step_s=0.02)) as srv:
        results = run_remote(srv.address, image, source, guide,
                             SynthesisOptions(samples=2, iterations=30, preview_every=1,
                                              mode="move"), seen.append)
    assert len(results) == 2
    assert results[0].dtype == np.uint8 and results[0].shape == image.shape
    assert np.array_equal(results[0], 255 - image)
    assert np.array_equal(results[1], 255 - image + np.uint8(1))
    assert seen and seen[-1].iteration == seen[-1].total == 30
    previews = [p.previews for p in seen if p.previews]
    assert previews and previews[0][0].shape == (12, 16, 3) and len(previews[0]) == 2


def test_run_remote_errors_are_magic_errors():
    image, source, guide = inputs()
    with ThreadedServer() as srv, pytest.raises(JobFailed) as info:
        run_remote(srv.address, image, np.zeros_like(source), guide, SynthesisOptions())
    assert info.value.code == "engine_input"
    t0 = time.monotonic()
    with pytest.raises(MagicError) as info:
        run_remote(address(), image, source, guide, SynthesisOptions(), connect_timeout_s=0.3)
    assert time.monotonic() - t0 < 3 and "running" in str(info.value)


def test_magic_edit_with_server_writes_the_results(tmp_path, capsys):
    from magic_server.cli.edit import main

    image, source, guide = inputs()
    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(source.astype(np.uint8) * 255).save(tmp_path / "source.png")
    Image.fromarray(guide.astype(np.uint8) * 255).save(tmp_path / "guide.png")
    with ThreadedServer(FakeEngine(step_s=0)) as srv:
        code = main([str(tmp_path / "photo.png"), "--source-mask", str(tmp_path / "source.png"),
                     "--guide-mask", str(tmp_path / "guide.png"), "-o", str(tmp_path / "out.png"),
                     "--samples", "2", "--iterations", "5", "--server", srv.address])
    assert code == 0, capsys.readouterr().err
    out = np.asarray(Image.open(tmp_path / "out-1.png").convert("RGB"))
    assert np.array_equal(out, 255 - image)
    assert (tmp_path / "out-2.png").is_file()


def test_magic_edit_with_server_sends_init_composite_and_flags(tmp_path, capsys):
    from magic_server.cli.edit import main

    image, source, guide = inputs()
    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(source.astype(np.uint8) * 255).save(tmp_path / "source.png")
    Image.fromarray(guide.astype(np.uint8) * 255).save(tmp_path / "guide.png")
    init = np.zeros(image.shape[:2] + (4,), np.uint8)  # transparent: the photo's pixels...
    init[5:15, 17:27] = (255, 0, 0, 255)  # ...except the pasted object, opaque red
    Image.fromarray(init, "RGBA").save(tmp_path / "composite.png")
    engine = FakeEngine(step_s=0)
    with ThreadedServer(engine) as srv:
        code = main([str(tmp_path / "photo.png"), "--source-mask", str(tmp_path / "source.png"),
                     "--guide-mask", str(tmp_path / "guide.png"), "-o", str(tmp_path / "out.png"),
                     "--iterations", "2", "--server", srv.address, "--mode", "move",
                     "--init-from", str(tmp_path / "composite.png"), "--whole-image",
                     "--no-refine"])
    assert code == 0, capsys.readouterr().err
    expected = image.copy()
    expected[5:15, 17:27] = (255, 0, 0)
    call = engine.last_call
    assert np.array_equal(call["init_image"], expected)
    assert np.array_equal(call["image"], image)
    assert call["options"].composite is False and call["options"].refine is False


def test_run_remote_refuses_an_init_of_another_size():
    image, source, guide = inputs()
    with pytest.raises(ValueError, match="image's size"):
        run_remote(address(), image, source, guide, SynthesisOptions(),
                   init_image=np.zeros((3, 3, 4), np.uint8), connect_timeout_s=0.3)
