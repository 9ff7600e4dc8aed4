"""gimp_plugin.masks: the plug-in's numpy-free mask logic, checked against plain references."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gimp_plugin import masks as M


def grid(mask: bytes | bytearray, w: int) -> list[list[int]]:
    return [list(mask[i:i + w]) for i in range(0, len(mask), w)]


def random_mask(rng: random.Random, w: int, h: int, p: float = 0.2) -> bytearray:
    return bytearray(255 if rng.random() < p else 0 for _ in range(w * h))


def test_threshold_splits_at_128():
    assert list(M.threshold(bytes([0, 127, 128, 255]))) == [0, 0, 255, 255]


def test_object_mask_uses_alpha_when_the_layer_has_transparency():
    luma = bytes([255, 255, 0, 0])  # white everywhere on the left, black on the right
    alpha = bytes([0, 255, 255, 0])  # but only pixels 1 and 2 are opaque
    assert list(M.object_mask(luma, alpha)) == [0, 255, 255, 0]


def test_object_mask_uses_white_when_the_layer_is_opaque():
    assert list(M.object_mask(bytes([255, 10, 200, 0]), bytes([255] * 4))) == [255, 0, 255, 0]


def test_rgba_rgb_round_trip():
    rgba = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    rgb = M.rgba_to_rgb(rgba)
    assert list(rgb) == [1, 2, 3, 5, 6, 7]
    assert list(M.rgb_to_rgba(rgb, bytes([4, 8]))) == list(rgba)


def test_split_planes_of_2_10_pixel_regions():
    luma, alpha = M.split_planes(bytes([255, 255, 255, 10, 0, 0, 0, 200]), 4, True)
    assert list(luma) == [255, 0] and list(alpha) == [10, 200]
    luma, alpha = M.split_planes(bytes([7, 9]), 1, False)
    assert list(luma) == [7, 9] and list(alpha) == [255, 255]
    luma, _ = M.split_planes(bytes([255, 0, 0]), 3, False)  # pure red is dark-ish
    assert list(luma) == [76]


@given(mw=st.integers(1, 7), mh=st.integers(1, 7), dx=st.integers(-9, 9), dy=st.integers(-9, 9),
       seed=st.integers(0, 10**6))
@settings(max_examples=150, deadline=None)
def test_place_matches_a_per_pixel_reference(mw, mh, dx, dy, seed):
    w, h = 6, 5
    mask = random_mask(random.Random(seed), mw, mh, 0.5)
    got = M.place(mask, mw, mh, dx, dy, w, h)
    for y in range(h):
        for x in range(w):
            mx, my = x - dx, y - dy
            want = mask[my * mw + mx] if 0 <= mx < mw and 0 <= my < mh else 0
            assert got[y * w + x] == want, (x, y)


@pytest.mark.parametrize("dx, dy", [(0, 0), (4, 3), (-1, -2), (5, 1), (7, 0)])
def test_place_rgba_moves_whole_pixels(dx, dy):
    w, h, mw, mh = 6, 5, 3, 2
    rgba = bytes(range(1, mw * mh * 4 + 1))  # every byte different: channel mix-ups show
    got = M.place(rgba, mw, mh, dx, dy, w, h, channels=4)
    assert len(got) == w * h * 4
    for y in range(h):
        for x in range(w):
            mx, my = x - dx, y - dy
            i = (my * mw + mx) * 4
            want = rgba[i:i + 4] if 0 <= mx < mw and 0 <= my < mh else bytes(4)
            assert bytes(got[(y * w + x) * 4:(y * w + x + 1) * 4]) == want, (x, y)
    with pytest.raises(ValueError):
        M.place(rgba, mw, mh, 0, 0, w, h)  # 4 bytes a pixel, read as a 1-channel mask


def test_place_rejects_a_wrongly_sized_mask():
    with pytest.raises(ValueError):
        M.place(bytes(5), 2, 2, 0, 0, 4, 4)


@given(seed=st.integers(0, 10**6), n=st.integers(0, 70))
@settings(max_examples=100, deadline=None)
def test_union_subtract_count(seed, n):
    rng = random.Random(seed)
    a, b = random_mask(rng, n, 1, 0.5), random_mask(rng, n, 1, 0.5)
    assert list(M.union(a, b)) == [x | y for x, y in zip(a, b)]
    assert list(M.subtract(a, b)) == [x if not y else 0 for x, y in zip(a, b)]
    assert M.count(a) == sum(1 for x in a if x)
    assert M.is_empty(a) == (M.count(a) == 0)
    assert M.is_full(a) == (M.count(a) == n)


def test_mismatched_sizes_are_refused():
    with pytest.raises(ValueError):
        M.union(bytes(3), bytes(4))
    with pytest.raises(ValueError):
        M.subtract(bytes(3), bytes(4))


@given(seed=st.integers(0, 10**6), w=st.integers(1, 9), h=st.integers(1, 9), r=st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_dilate_and_bbox_match_references(seed, w, h, r):
    mask = random_mask(random.Random(seed), w, h, 0.1)
    got = M.dilate(mask, w, h, r)
    on = [(x, y) for y in range(h) for x in range(w) if mask[y * w + x]]
    for y in range(h):
        for x in range(w):
            want = any(abs(x - ox) <= r and abs(y - oy) <= r for ox, oy in on)
            assert got[y * w + x] == (255 if want else 0), (x, y)
    box = M.bbox(mask, w, h)
    if not on:
        assert box is None
    else:
        xs, ys = [p[0] for p in on], [p[1] for p in on]
        assert box == (min(xs), min(ys), max(xs) + 1, max(ys) + 1)


def test_crop_rows_and_channels():
    w, h = 4, 3
    rgb = bytes(range(w * h * 3))
    got = M.crop(rgb, w, h, (1, 1, 3, 3), channels=3)
    want = b"".join(rgb[(y * w + x) * 3:(y * w + x) * 3 + 3] for y in (1, 2) for x in (1, 2))
    assert bytes(got) == want
    with pytest.raises(ValueError):
        M.crop(rgb, w, h, (0, 0, 5, 1), channels=3)


def test_large_masks_stay_fast():
    import time

    w, h = 1500, 1000
    mask = bytearray(w * h)
    for y in range(300, 700):
        mask[y * w + 400:y * w + 900] = b"\xff" * 500
    t0 = time.perf_counter()
    area = M.dilate(M.union(mask, M.place(mask, w, h, 200, 50, w, h)), w, h, 47)
    box = M.bbox(area, w, h)
    M.crop(area, w, h, box)
    assert box == (400 - 47, 300 - 47, 1100 + 47, 750 + 47)
    assert time.perf_counter() - t0 < 5.0


def test_differ_marks_pixels_that_change_in_any_channel():
    a = bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0])
    b = bytes([1, 2, 3, 4, 5, 7, 0, 8, 9, 0, 0, 0])
    assert M.differ(a, b) == bytearray([0, 255, 255, 0])
    assert M.differ(a, a) == bytearray(4)
    assert M.differ(b"\x00\x01", b"\x00\x00", channels=1) == bytearray([0, 255])
    with pytest.raises(ValueError):
        M.differ(a, a[:-3])


def test_first_off_finds_the_first_unset_pixel():
    assert M.first_off(bytearray([255, 255, 255, 0, 255, 0]), 3) == (0, 1)
    assert M.first_off(bytearray(b"\xff" * 6), 3) is None
