"""Layout edits and label-map jobs on the wire: the frames they carry, how they are checked,
and what the server makes of them (stand-in engine, real sockets on 127.0.0.1)."""

from __future__ import annotations

import numpy as np
import pytest
from test_server_support import FakeEngine, ThreadedServer, as_array

from magic_protocol import protocol as P
from magic_protocol.client import JobFailed, JobRequest, MagicClient, RawImage
from magic_protocol.protocol import ErrorCode, FrameSpec, ProtocolError

W, H = 40, 30
RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (40, 60, 230)


def layout_parts(params=None, channels=(4, 3, 3), sizes=None, names=None, init=False):
    names = names or ["image", "source_labels", "target_labels"]
    sizes = sizes or [(4, 3)] * len(names)
    frames = [(FrameSpec(n, w, h, c), bytes(w * h * c))
              for n, c, (w, h) in zip(names, channels, sizes)]
    if init:
        frames.append((FrameSpec("init", 4, 3, 4), bytes(48)))
    return P.encode(P.SUBMIT, {"params": {"mode": "layout", **(params or {})}}, frames)


def check(parts) -> P.SubmitParams:
    return P.validate_submit(P.decode(parts), presets=["quality", "tiny"])


def refused(parts) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        check(parts)
    return info.value


def test_layout_frames_are_colour_or_grey_label_maps():
    assert check(layout_parts()).mode == "layout"
    assert check(layout_parts(channels=(4, 1, 1))).mode == "layout"
    assert check(layout_parts(init=True)).mode == "layout"
    err = refused(layout_parts(channels=(4, 4, 3)))
    assert err.code == ErrorCode.BAD_FRAMES and "1 or 3 channel" in err.message


def test_layout_maps_of_another_size_are_refused_by_name():
    err = refused(layout_parts(sizes=[(4, 3), (4, 3), (3, 4)]))
    assert err.code == ErrorCode.BAD_FRAMES
    assert "target_labels" in err.message and "label maps" in err.message


def test_masks_and_label_maps_do_not_mix():
    err = refused(layout_parts(names=["image", "source_mask", "guide_mask"], channels=(4, 1, 1)))
    assert err.code == ErrorCode.BAD_FRAMES and "source_labels" in err.message
    binary = layout_parts(params={"mode": "move"})
    err = refused(binary)
    assert err.code == ErrorCode.BAD_FRAMES and "source_mask" in err.message


def label_map_parts(params):
    frames = [(FrameSpec("image", 4, 3, 4), bytes(48))]
    return P.encode(P.SUBMIT, {"params": params}, frames)


def test_label_map_jobs_carry_only_the_image_and_a_region_count():
    assert check(label_map_parts({"mode": "label-map", "labels": 5})).labels == 5
    for params in ({"mode": "label-map"}, {"mode": "label-map", "labels": 1},
                   {"mode": "label-map", "labels": 17}, {"mode": "move", "labels": 4}):
        err = refused(label_map_parts(params) if params["mode"] == "label-map"
                      else layout_parts(params=params, names=["image", "source_mask",
                                                              "guide_mask"], channels=(4, 1, 1)))
        assert err.code == ErrorCode.BAD_FIELD and "labels" in err.message


def test_labels_is_only_sent_when_given():
    assert "labels" not in P.SubmitParams().to_dict()
    assert P.SubmitParams(mode="label-map", labels=3).to_dict()["labels"] == 3


def painted_maps() -> tuple[np.ndarray, np.ndarray]:
    """A source map (red left, green right, a blue square) and a target with the square moved,
    anti-aliased at one boundary, as painted in GIMP."""
    source = np.zeros((H, W, 3), np.uint8)
    source[:, : W // 2] = RED
    source[:, W // 2 :] = GREEN
    source[8:18, 4:14] = BLUE
    target = source.copy()
    target[8:18, 4:14] = RED
    target[8:18, 24:34] = BLUE
    target[8:18, 34] = (np.array(BLUE) * 0.5 + np.array(GREEN) * 0.5).astype(np.uint8)
    return source, target


def layout_request(source: np.ndarray, target: np.ndarray, **params) -> JobRequest:
    rgba = np.random.default_rng(1).integers(0, 256, (H, W, 4), dtype=np.uint8)
    return JobRequest(RawImage(W, H, 4, rgba.tobytes()), mode="layout", samples=1,
                      source_labels=RawImage(W, H, source.shape[-1] if source.ndim == 3 else 1,
                                             source.tobytes()),
                      target_labels=RawImage(W, H, target.shape[-1] if target.ndim == 3 else 1,
                                             target.tobytes()), **params)


def test_a_painted_layout_reaches_the_engine_as_snapped_label_indices():
    source, target = painted_maps()
    engine = FakeEngine(step_s=0)
    with ThreadedServer(engine) as srv, MagicClient(srv.address, timeout_s=10) as c:
        result = c.submit(layout_request(source, target))
    assert len(result.images) == 1
    got_source = engine.last_call["source_labels"]
    got_target = engine.last_call["target_labels"]
    assert got_source.shape == got_target.shape == (H, W)
    blue = got_source[10, 8]
    assert len(np.unique(got_source)) == 3
    assert got_target[10, 30] == blue and got_target[10, 8] == got_source[2, 2]
    assert got_target[10, 34] in (blue, got_source[2, 30])  # the blend snapped to a label
    assert engine.last_call["options"].mode == "layout"


def test_a_target_colour_the_source_lacks_is_named_back_to_the_artist():
    source, target = painted_maps()
    target[20:25, 20:30] = (250, 250, 0)  # yellow: no label of the source map
    with (ThreadedServer(FakeEngine(step_s=0)) as srv,
          MagicClient(srv.address, timeout_s=10) as c, pytest.raises(JobFailed) as info):
        c.submit(layout_request(source, target))
    assert info.value.code == ErrorCode.ENGINE_INPUT
    assert "#fafa00" in info.value.message and "50 pixels" in info.value.message


def test_grey_index_maps_are_label_indices():
    source = np.zeros((H, W), np.uint8)
    source[:, W // 2 :] = 1
    target = source.copy()
    target[5:10, 5:10] = 1
    engine = FakeEngine(step_s=0)
    with ThreadedServer(engine) as srv, MagicClient(srv.address, timeout_s=10) as c:
        c.submit(layout_request(source, target))
    assert np.array_equal(engine.last_call["target_labels"], target)


def test_a_label_map_job_returns_one_flat_colour_map():
    rng = np.random.default_rng(0)
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[:, : W // 2, :3] = (200, 40, 40)
    rgba[:, W // 2 :, :3] = (30, 60, 200)
    rgba[..., :3] = np.clip(rgba[..., :3] + rng.normal(0, 6, (H, W, 3)), 0, 255).astype(np.uint8)
    rgba[..., 3] = 255
    job = JobRequest(RawImage(W, H, 4, rgba.tobytes()), mode="label-map", labels=2, samples=1)
    events = []
    with ThreadedServer(FakeEngine(step_s=0)) as srv, MagicClient(srv.address, timeout_s=30) as c:
        result = c.submit(job, on_event=events.append)
    assert len(result.images) == 1
    out = as_array(result.images[0])
    assert out.shape == (H, W, 3)
    colours = np.unique(out.reshape(-1, 3), axis=0)
    assert len(colours) == 2
    assert (out[:, : W // 2] == out[0, 0]).all() and (out[:, W // 2 :] == out[0, -1]).all()
    assert any(e.kind == "progress" and e.stage == "label-map" for e in events)
