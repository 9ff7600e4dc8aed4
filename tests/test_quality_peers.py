"""The benchmark's hand-made peers (benchmarks/peers.py) and the metrics that judge them: on
constructed scenes whose right answer is known, and on bundled photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("patchmatch", reason="the peers need the bench extra (pypatchmatch)")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parent.parent
import peers
import quality as q
import run


def smooth_texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A wood-like background: smooth stripes plus fine grain, greenish-brown."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = 20 * np.sin(xx / 5.0 + 0.3 * np.sin(yy / 9.0))
    base = np.stack([90 + stripes, 110 + stripes, 60 + 0.5 * stripes], -1)
    return np.clip(base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


def disk(shape, cy, cx, r):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def with_objects(img: np.ndarray, masks: list[np.ndarray], seed: int = 1) -> np.ndarray:
    """Paint each mask with a textured red (a distinct object colour)."""
    out = img.copy()
    rng = np.random.default_rng(seed)
    for m in masks:
        red = np.stack([200 + 40 * rng.random(m.shape), 30 + 30 * rng.random(m.shape),
                        40 + 20 * rng.random(m.shape)], -1).astype(np.uint8)
        out[m] = red[m]
    return out


@pytest.fixture(scope="module")
def two_objects():
    bg = smooth_texture()
    a, b = disk(bg.shape, 30, 30, 11), disk(bg.shape, 65, 100, 9)
    return with_objects(bg, [a, b]), a, b


# ---------------------------------------------------------------------------- cut-paste


def test_cut_paste_carries_the_moved_object_and_leaves_the_other(two_objects):
    photo, a, b = two_objects
    moved = np.roll(np.roll(a, 40, axis=0), 25, axis=1)  # a moved by (+40, +25)
    source, guide = a | b, moved | b
    p = peers.plan_paste(photo, source, guide)
    t = p.transform
    assert (t.sy, t.sx, t.ty, t.tx) == (1.0, 1.0, 40.0, 25.0)
    out = p.image
    ys, xs = np.nonzero(a)
    np.testing.assert_array_equal(out[ys + 40, xs + 25], photo[ys, xs])  # the pixels, exactly
    np.testing.assert_array_equal(out[b], photo[b])  # the other object untouched
    assert not np.any(out[~moved] != photo[~moved])  # nothing else changed: the old place stays
    assert p.hole.sum() >= (a & ~moved).sum()  # ... and is left to heal


def test_cut_paste_scales_for_a_reshape(two_objects):
    photo, a, b = two_objects
    big = disk(a.shape, 30, 30, 16.5)  # a made 1.5x larger about its centre
    p = peers.plan_paste(photo, a | b, big | b)
    assert p.transform.sy == pytest.approx(1.5, rel=0.05)
    assert p.transform.sx == pytest.approx(1.5, rel=0.05)
    assert p.pasted.sum() >= 0.95 * big.sum()
    seg = q.ObjectSegmenter(photo, a | b)
    assert q.iou(seg.predict(p.image), big | b) > 0.85


def test_copy_keeps_the_original(two_objects):
    photo, a, b = two_objects
    copy = np.roll(a, 50, axis=1)
    out = peers.cut_paste(photo, a | b, a | copy | b)
    np.testing.assert_array_equal(out[a], photo[a])
    ys, xs = np.nonzero(a)
    np.testing.assert_array_equal(out[ys, xs + 50], photo[ys, xs])


def test_removal_is_recognised_and_pastes_nothing(two_objects):
    photo, a, b = two_objects
    assert peers.is_removal(a | b, b)
    assert not peers.is_removal(a | b, np.roll(a, 30, axis=1) | b)
    p = peers.plan_paste(photo, a | b, b)
    assert p.transform is None and not p.pasted.any()
    np.testing.assert_array_equal(p.image, photo)
    assert (p.hole & a).sum() == a.sum() and not (p.hole & b).any()


def test_cut_paste_heal_changes_only_the_edit_and_leaves_no_object_behind(two_objects):
    photo, a, b = two_objects
    moved = np.roll(a, 55, axis=1)
    source, guide = a | b, moved | b
    healed = peers.cut_paste_heal(photo, source, guide)
    p = peers.plan_paste(photo, source, guide)
    changed = np.any(healed != photo, axis=-1)
    assert not np.any(changed & ~(p.pasted | p.hole))  # bit-identical outside paste + hole
    assert not np.any(changed & ~q.edit_region(source, guide))
    assert changed[a & ~moved].mean() > 0.9  # the old place was filled
    seg = q.removal_segmenter(photo, a | b, b)  # the moved object's own segmenter
    assert q.object_left(seg, p.image, a | b, b) > 0.9  # before healing it is all there
    assert q.object_left(seg, healed, a | b, b) < 0.05
    # deterministic
    np.testing.assert_array_equal(healed, peers.cut_paste_heal(photo, source, guide))


def test_inpaint_keeps_every_pixel_outside_the_hole(two_objects):
    photo, a, b = two_objects
    out = peers.inpaint(photo, a, exclude=b)
    np.testing.assert_array_equal(out[~a], photo[~a])
    red = (out[..., 0].astype(int) - out[..., 1]) > 120  # object-red pixels
    assert red[a].mean() < 0.05  # filled from the background, not from the other object


def test_bad_inputs_are_refused_with_a_message(two_objects):
    photo, a, b = two_objects
    with pytest.raises(peers.PeerError, match="empty"):
        peers.cut_paste(photo, np.zeros_like(a), b)
    with pytest.raises(peers.PeerError, match="bool"):
        peers.cut_paste(photo, a.astype(np.uint8), b)
    with pytest.raises(peers.PeerError, match="uint8"):
        peers.inpaint(photo.astype(np.float32), a)


# ---------------------------------------------------------------------------- bundled photos


@pytest.fixture(scope="module")
def chelsea():
    return run.load_scenes(["chelsea"])[0]


def test_removal_peer_on_a_photo_removes_the_object(chelsea):
    guide = chelsea.guides["remove"]
    healed = peers.cut_paste_heal(chelsea.image, chelsea.source_mask, guide, "remove")
    region = q.edit_region(chelsea.source_mask, guide)
    assert q.preservation(chelsea.image, healed, region).identical
    seg = q.removal_segmenter(chelsea.image, chelsea.source_mask, guide)
    assert q.object_left(seg, chelsea.image, chelsea.source_mask, guide) > 0.8
    assert q.object_left(seg, healed, chelsea.source_mask, guide) <= 0.05
    # as natural as the photo, and neither blurred nor noisy
    photo = q.patch_realism(chelsea.image, chelsea.image, region).coherence_ratio
    assert q.patch_realism(chelsea.image, healed, region).coherence_ratio <= photo + 0.1
    assert 0.7 <= q.sharpness(chelsea.image, healed, region).noise_figure <= 1.5


def test_move_peer_on_a_photo_follows_the_guide(chelsea):
    guide = chelsea.guides["move"]
    rows = peers.peers(chelsea.image, chelsea.source_mask, guide, "move")
    assert list(rows) == ["photo", "cut-paste", "cut-paste + heal"]
    seg = q.ObjectSegmenter(chelsea.image, chelsea.source_mask)
    ceiling = q.iou(seg.predict(chelsea.image), chelsea.source_mask)
    assert q.iou(seg.predict(rows["cut-paste + heal"]), guide) >= 0.9 * ceiling
    assert q.iou(seg.predict(rows["photo"]), guide) < 0.5 * ceiling
