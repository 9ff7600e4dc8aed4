"""The wire protocol module on its own: encode/decode, validation, error codes, dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from magic_protocol import protocol as P
from magic_protocol.protocol import ErrorCode, FrameSpec, Limits, ProtocolError

ROOT = Path(__file__).resolve().parents[1]


def submit_parts(w=4, h=3, params=None, channels=(4, 1, 1), names=None, init=False, **hdr):
    names = names or ["image", "source_mask", "guide_mask"] + (["init"] if init else [])
    channels = list(channels) + ([4] if init else [])
    frames = [(FrameSpec(n, w, h, c), bytes(w * h * c)) for n, c in zip(names, channels)]
    parts = P.encode(P.SUBMIT, {"params": {} if params is None else params, **hdr}, frames,
                     req="r1")
    return parts


def decode_error(parts, **kw) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        msg = P.decode(parts, **kw)
        if msg.type == P.SUBMIT:
            P.validate_submit(msg, kw.get("limits", P.DEFAULT_LIMITS), ["quality", "tiny"])
    return info.value


def header(**fields) -> bytes:
    return json.dumps({"v": P.PROTOCOL_VERSION, "type": P.PING, **fields}).encode()


def test_default_address_is_the_documented_loopback_port():
    assert P.DEFAULT_ADDRESS == "tcp://127.0.0.1:5591"
    assert "5591" in (ROOT / "docs" / "protocol.md").read_text()


def test_modes_match_the_engine():
    from magic_server.engine.api import MODES

    assert P.EDIT_MODES == MODES


def test_every_error_code_is_documented():
    doc = (ROOT / "docs" / "protocol.md").read_text()
    for code in ErrorCode.ALL:
        if code != ErrorCode.CLIENT_GONE:
            assert f"`{code}`" in doc, code


def test_protocol_and_client_import_without_numpy_or_torch():
    # The GIMP plug-in imports these; numpy/torch must not be needed (zmq only for the client).
    code = ("import sys; sys.modules['numpy'] = None; sys.modules['torch'] = None;"
            "import magic_protocol.client, magic_protocol.protocol; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert out.stdout.strip() == "ok", out.stderr
    code = "import sys; sys.modules['zmq'] = None; import magic_protocol.protocol; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_submit_round_trip_keeps_frames_and_params():
    pixels = bytes(range(48))
    frames = [(FrameSpec("image", 4, 3, 4), memoryview(pixels)),
              (FrameSpec("source_mask", 4, 3, 1), b"\xff" * 12),
              (FrameSpec("guide_mask", 4, 3, 1), bytearray(12))]
    parts = P.encode(P.SUBMIT, {"params": {"mode": "move", "samples": 2, "seed": 9,
                                           "preview": True}}, frames, req="abc")
    assert len(parts) == 4 and parts[1] is frames[0][1]  # pixels are not copied
    msg = P.decode(parts)
    assert msg.type == P.SUBMIT and msg.req == "abc"
    assert bytes(msg.frame("image")[1]) == pixels
    params = P.validate_submit(msg, presets=["quality"])
    assert params == P.SubmitParams(mode="move", samples=2, seed=9, preview=True)


def test_encode_refuses_a_frame_of_the_wrong_size():
    with pytest.raises(ValueError):
        P.encode(P.RESULT, {}, [(FrameSpec("result0", 2, 2, 3), b"123")])


@pytest.mark.parametrize("parts, code", [
    ([], ErrorCode.BAD_MESSAGE),
    ([b"\xff\xfe"], ErrorCode.BAD_JSON),
    ([b"{not json"], ErrorCode.BAD_JSON),
    ([b"[1, 2]"], ErrorCode.BAD_JSON),
    ([b'{"v": NaN, "type": "ping"}'], ErrorCode.BAD_JSON),
    ([b"[" * 100_000], ErrorCode.TOO_LARGE),
    ([b'{"type": "ping"}'], ErrorCode.UNSUPPORTED_VERSION),
    ([b'{"v": 2, "type": "ping"}'], ErrorCode.UNSUPPORTED_VERSION),
    ([b'{"v": true, "type": "ping"}'], ErrorCode.UNSUPPORTED_VERSION),
    ([b'{"v": 1, "type": "welcome"}'], ErrorCode.UNKNOWN_TYPE),
    ([b'{"v": 1, "type": 5}'], ErrorCode.UNKNOWN_TYPE),
    ([b'{"v": 1, "type": "ping", "req": 5}'], ErrorCode.BAD_FIELD),
    ([header(), b"extra"], ErrorCode.BAD_FRAMES),
    ([header(frames=[{"name": "x", "width": 2, "height": 2, "channels": 1}])],
     ErrorCode.BAD_FRAMES),
    ([header(frames=[{"name": "x", "width": 2, "height": 2, "channels": 1}]), b"123"],
     ErrorCode.BAD_FRAMES),
    ([header(frames=[{"name": "x", "width": 0, "height": 2, "channels": 1}]), b""],
     ErrorCode.BAD_FRAMES),
    ([header(frames=[{"name": "x", "width": 2.0, "height": 2, "channels": 1}]), b"1234"],
     ErrorCode.BAD_FRAMES),
    ([header(frames=[{"name": "x", "width": 1, "height": 1, "channels": 5}]), b"12345"],
     ErrorCode.BAD_FRAMES),
    ([header(frames="nope")], ErrorCode.BAD_FRAMES),
    ([header(frames=[7])], ErrorCode.BAD_FRAMES),
])
def test_malformed_messages_get_stable_codes(parts, code):
    assert decode_error(parts).code == code


def test_error_keeps_the_request_tag_when_readable():
    err = decode_error([b'{"v": 9, "type": "ping", "req": "tag7"}'])
    assert err.code == ErrorCode.UNSUPPORTED_VERSION and err.req == "tag7"


def test_size_limits():
    small = Limits(max_pixels=100, max_message_bytes=1000, max_header_bytes=400)
    assert decode_error(submit_parts(w=20, h=20), limits=small).code == ErrorCode.TOO_LARGE  # bytes
    assert decode_error([b" " * 500 + header()], limits=small).code == ErrorCode.TOO_LARGE
    assert decode_error(submit_parts(w=11, h=10), limits=small).code == ErrorCode.TOO_LARGE
    msg = P.decode(submit_parts(w=10, h=10), limits=small)
    assert P.validate_submit(msg, small).samples == 3


def test_default_limits_fit_a_24_megapixel_photo_with_init():
    w, h = 6000, 4000
    needed = w * h * (4 + 1 + 1 + 4) + P.DEFAULT_LIMITS.max_header_bytes
    assert w * h <= P.DEFAULT_LIMITS.max_pixels
    assert needed <= P.DEFAULT_LIMITS.max_message_bytes


@pytest.mark.parametrize("kwargs, code", [
    ({"channels": (3, 1, 1)}, ErrorCode.BAD_FRAMES),
    ({"channels": (4, 3, 1)}, ErrorCode.BAD_FRAMES),
    ({"names": ["image", "guide_mask", "source_mask"]}, ErrorCode.BAD_FRAMES),
    ({"names": ["image", "source_mask"], "channels": (4, 1)}, ErrorCode.BAD_FRAMES),
    ({"params": {"mode": "teleport"}}, ErrorCode.BAD_FIELD),
    ({"params": {"samples": 0}}, ErrorCode.BAD_FIELD),
    ({"params": {"samples": 17}}, ErrorCode.BAD_FIELD),
    ({"params": {"samples": True}}, ErrorCode.BAD_FIELD),
    ({"params": {"samples": 2.0}}, ErrorCode.BAD_FIELD),
    ({"params": {"seed": -1}}, ErrorCode.BAD_FIELD),
    ({"params": {"seed": 2**40}}, ErrorCode.BAD_FIELD),
    ({"params": {"iterations": 0}}, ErrorCode.BAD_FIELD),
    ({"params": {"resolution": 16}}, ErrorCode.BAD_FIELD),
    ({"params": {"preset": "ultra"}}, ErrorCode.BAD_FIELD),
    ({"params": {"preview": 1}}, ErrorCode.BAD_FIELD),
    ({"params": {"colour": "red"}}, ErrorCode.BAD_FIELD),
    ({"params": {"init_from": "composite"}}, ErrorCode.BAD_FIELD),
    ({"params": {"composite": 1}}, ErrorCode.BAD_FIELD),
    ({"params": {"composite": "false"}}, ErrorCode.BAD_FIELD),
    ({"params": {"refine": 0}}, ErrorCode.BAD_FIELD),
    ({"params": {"refine": None}}, ErrorCode.BAD_FIELD),
    ({"params": []}, ErrorCode.BAD_FIELD),
])
def test_submit_validation(kwargs, code):
    assert decode_error(submit_parts(**kwargs)).code == code


def test_masks_of_another_size_are_refused():
    frames = [(FrameSpec("image", 4, 3, 4), bytes(48)), (FrameSpec("source_mask", 4, 3, 1),
              bytes(12)), (FrameSpec("guide_mask", 3, 4, 1), bytes(12))]
    err = decode_error(P.encode(P.SUBMIT, {}, frames))
    assert err.code == ErrorCode.BAD_FRAMES and "align" in str(err)


def test_init_frame_is_accepted_with_init_from():
    msg = P.decode(submit_parts(init=True, params={"init_from": "composite"}))
    assert P.validate_submit(msg).init_from == "composite"


parts_strategy = st.lists(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
        st.sampled_from(["v", "type", "req", "frames", "params", "job"]),
        st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=8),
                  st.sampled_from(P.REQUEST_TYPES), st.lists(st.integers(0, 4), max_size=3),
                  st.lists(st.fixed_dictionaries({"name": st.text(max_size=3),
                                                  "width": st.integers(-1, 3),
                                                  "height": st.integers(-1, 3),
                                                  "channels": st.integers(-1, 5)}),
                           max_size=3)),
        max_size=6)),
), max_size=5)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts_strategy)
def test_decode_raises_only_protocol_errors(parts):
    try:
        msg = P.decode(parts)
        if msg.type == P.SUBMIT:
            P.validate_submit(msg)
        elif msg.type == P.CANCEL:
            P.job_id_field(msg)
    except ProtocolError as exc:
        assert exc.code in ErrorCode.ALL


def test_init_frame_alone_is_accepted_and_the_frame_is_documented():
    msg = P.decode(submit_parts(init=True))
    params = P.validate_submit(msg)
    assert params.init_from is None and msg.frame(P.FRAME_INIT)[0].channels == 4
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert "pixels where its alpha is 0 are taken from the image" in doc


@pytest.mark.parametrize("params, composite, refine", [
    ({}, True, True),
    ({"composite": False}, False, True),
    ({"refine": False}, True, False),
    ({"composite": True, "refine": False, "mode": "remove"}, True, False),
])
def test_composite_and_refine_are_optional_booleans(params, composite, refine):
    got = P.validate_submit(P.decode(submit_parts(params=params)))
    assert (got.composite, got.refine) == (composite, refine)


def test_new_params_are_only_sent_when_they_differ_from_the_default():
    # Servers older than composite/refine refuse unknown params: a default request must not
    # carry them, and what is sent must round-trip.
    assert P.SubmitParams(mode="move").to_dict() == {
        "mode": "move", "samples": 3, "preset": "quality", "seed": 0, "preview": False}
    wire = P.SubmitParams(mode="remove", composite=False, refine=False).to_dict()
    assert wire["composite"] is False and wire["refine"] is False
    back = P.validate_submit(P.decode(submit_parts(params=wire)))
    assert back == P.SubmitParams(mode="remove", composite=False, refine=False)
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert "`composite`" in doc and "`refine`" in doc
