"""Region of interest, dilation, feathering and compositing (the GANPaint-style guarantees)."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import noise_move_scene, red_disk_scene

from magic_server.engine.api import SynthesisOptions
from magic_server.engine.edit_plan import plan_edit
from magic_server.engine.regions import (
    Box,
    composite,
    dilate,
    dilate_round,
    feathered_alpha,
    region_of_interest,
)


def naive_dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        out[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = True
    return out


@pytest.mark.parametrize("seed", range(4))
def test_dilate_matches_a_naive_square_dilation(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) > 0.97
    for r in (0, 1, 3):
        assert np.array_equal(dilate(mask, r), naive_dilate(mask, r))


@pytest.mark.parametrize("radius", [1, 4, 15, 40])
def test_round_dilation_reaches_its_radius_and_not_a_squares_corners(radius):
    # a removal's region grows this way: what lies further from the artist's selection must
    # stay (a square's corners reached 1.41 times as far)
    mask = np.zeros((121, 131), bool)
    mask[60, 30] = True
    mask[40:50, 70:90] = True
    grown = dilate_round(mask, radius)
    ys, xs = np.nonzero(mask)
    gy, gx = np.nonzero(grown)
    dist = np.sqrt(((gy[:, None] - ys[None]) ** 2 + (gx[:, None] - xs[None]) ** 2).min(1))
    assert dist.max() <= 1.085 * radius
    assert grown[mask.nonzero()[0][0], :].sum() >= 2 * radius + 1  # the whole radius on axes
    assert grown[mask].all()
    disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius
    single = dilate_round(np.pad(np.ones((1, 1), bool), radius), radius)
    assert single.sum() >= (0.85 if radius >= 4 else 0.5) * disk.sum()


def test_region_of_interest_adds_context_and_stays_inside_the_image():
    edit = np.zeros((100, 200), bool)
    edit[40:60, 150:190] = True
    box = region_of_interest(edit, context=0.5)
    assert box == Box(20, 130, 80, 200)
    assert region_of_interest(np.zeros((10, 10), bool)) == Box(0, 0, 10, 10)


def test_feathered_alpha_is_one_inside_and_exactly_zero_beyond_the_feather():
    edit = np.zeros((60, 60), bool)
    edit[20:40, 20:40] = True
    alpha = feathered_alpha(edit, 6)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert np.all(alpha[edit] == 1)
    assert np.all(alpha[~dilate(edit, 6)] == 0)
    row = alpha[30, 40:]
    assert np.all(np.diff(row) <= 1e-6) and row[0] > 0.4  # a ramp, not a step


def test_composite_writes_only_where_alpha_is_positive():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    box = Box(5, 10, 15, 30)
    alpha = np.zeros((10, 20), np.float32)
    alpha[2:8, 5:15] = 1
    alpha[2:8, 15] = 0.5
    out = composite(photo, patch, box, alpha)
    inside = np.zeros((30, 40), bool)
    inside[7:13, 15:26] = True
    assert np.array_equal(out[~inside], photo[~inside])
    assert np.array_equal(out[7:13, 15:25], patch[2:8, 5:15])
    half = np.rint(0.5 * patch[2:8, 15].astype(float) + 0.5 * photo[7:13, 25])
    assert np.array_equal(out[7:13, 25], half.astype(np.uint8))


def test_engine_leaves_every_pixel_outside_the_edit_region_untouched(engine):
    img, source, guide = noise_move_scene(96, 128, slice(30, 50), slice(10, 30), 50, seed=2)
    opts = SynthesisOptions(samples=2, preset="tiny", iterations=4, resolution=32, seed=1)
    result = engine.synthesize(img, source, guide, opts)
    band = plan_edit(source, guide).touched()
    assert band.mean() < 0.8
    for out in result.images:
        assert out.shape == img.shape
        assert np.array_equal(out[~band], img[~band])
        assert not np.array_equal(out[guide], img[guide])
    top, left, bottom, right = result.region
    assert 0 <= top < 30 and bottom > 50 and left < 10 + 1 and right > 80


def test_whole_image_mode_regenerates_everything(engine):
    img, source, guide = red_disk_scene(48)
    opts = SynthesisOptions(samples=1, preset="tiny", iterations=3, resolution=32,
                            composite=False)
    out = engine.synthesize(img, source, guide, opts).images[0]
    far = ~dilate(source | guide, 8)
    assert np.abs(out[far].astype(int) - img[far]).mean() > 10


def test_starting_from_the_artists_composite_reaches_the_loss_sooner(engine):
    img, source, guide = red_disk_scene(64)
    rough = img.copy()
    rough[guide] = (210, 45, 45)
    rough[source] = img[~(source | guide)][: source.sum()]  # crude background fill
    opts = SynthesisOptions(samples=1, preset="paper", iterations=120, resolution=64, seed=0)

    def losses(**kw) -> list[float]:
        totals: list[float] = []
        engine.synthesize(img, source, guide, opts,
                          lambda p: totals.append(p.losses["total"])
                          if p.stage == "synthesis" and "total" in p.losses else None, **kw)
        return totals

    from_noise = losses()
    from_composite = losses(init_image=rough)
    target = from_noise[-1]
    reached = next(i for i, v in enumerate(from_composite) if v <= target)
    assert reached < len(from_noise) - 1
    print(f"\nfrom noise: loss {target:.3f} after {10 * len(from_noise)} iterations; "
          f"from composite: reached it after {10 * (reached + 1)}")
    assert from_composite[0] < from_noise[0]
    with pytest.raises(Exception, match="size"):
        engine.synthesize(img, source, guide, opts, init_image=rough[:32])


@pytest.mark.parametrize("seed", range(4))
def test_parts_touching_keeps_the_4_connected_parts_holding_a_seed(seed):
    from scipy import ndimage

    from magic_server.engine.components import parts_touching

    gen = np.random.default_rng(seed)
    mask = gen.random((40, 50)) < 0.55
    seeds = np.zeros_like(mask)
    seeds[gen.integers(0, 40, 5), gen.integers(0, 50, 5)] = True
    labels, _ = ndimage.label(mask)  # 4-connected by default
    wanted = np.isin(labels, np.unique(labels[mask & seeds])) & mask
    assert np.array_equal(parts_touching(mask, seeds), wanted)
    near = dilate(seeds, 1)  # as background_that_stays asks: the parts next to a seed too
    wanted = np.isin(labels, np.unique(labels[mask & near])) & mask
    assert np.array_equal(parts_touching(mask, near), wanted)
    assert np.array_equal(near, ndimage.binary_dilation(seeds, np.ones((3, 3), bool)))
    assert not parts_touching(mask, np.zeros_like(mask)).any()
