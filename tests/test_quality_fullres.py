"""Issue 17's full-resolution figures (benchmarks/quality.py) on synthetic scenes whose answer
is known: a fill with a tone step or blocks in a smooth photo, the same fill blended in, a moved
object measured against itself, changes far from the masks."""

from __future__ import annotations

import math

import fullres_quality as fq
import numpy as np
import pytest
import quality as q

H, W = 240, 320
NOISE = 1.5


def disk(cy: float, cx: float, r: float, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def smooth_field(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth colour ramp (sky, bokeh) with a fine photographic grain, float HxWx3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 70 + 0.25 * xx + 0.15 * yy
    img = np.stack([base, base + 20, base * 0.8], -1)
    return img + rng.normal(0, NOISE, img.shape)


def to8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


PHOTO = to8(smooth_field(0))
SOURCE = disk(120, 100, 25)
GUIDE = np.zeros((H, W), bool)  # a removal: the fill is all there is
FILL = disk(120, 100, 40)  # the engine's fill: the hole and a halo beyond the mask


def filled(offset: float = 0.0, seed: int = 1) -> np.ndarray:
    """The photo with FILL re-made: the same smooth field with fresh grain, plus `offset`."""
    out = PHOTO.copy()
    fresh = to8(smooth_field(seed) + offset)
    out[FILL] = fresh[FILL]
    return out


def test_a_fill_blended_into_a_smooth_photo_scores_about_one():
    result = filled()
    seam = fq.seam_ratio(PHOTO, result, SOURCE, GUIDE)
    edges, _ = fq.edge_ratios(PHOTO, result, SOURCE, GUIDE)
    assert 0.8 < seam < 1.25
    assert 0.4 < edges < 2.0


def test_a_tone_step_at_the_fills_edge_shows_in_seam_and_edges():
    result = filled(offset=12)
    seam = fq.seam_ratio(PHOTO, result, SOURCE, GUIDE)
    edges, _ = fq.edge_ratios(PHOTO, result, SOURCE, GUIDE)
    blended = fq.seam_ratio(PHOTO, filled(), SOURCE, GUIDE)
    assert seam > 2 * blended and seam > 2
    assert edges > 4


def test_a_blocky_fill_shows_in_edges_even_without_a_tone_step():
    rng = np.random.default_rng(3)
    blocks = rng.normal(0, 6, (H // 8, W // 8, 3)).repeat(8, 0).repeat(8, 1)
    result = PHOTO.copy()
    result[FILL] = to8(smooth_field(0) + blocks)[FILL]
    edges, _ = fq.edge_ratios(PHOTO, result, SOURCE, GUIDE)
    assert edges > 4


def test_seam_is_not_defined_when_nothing_changed_outside_the_masks():
    result = PHOTO.copy()
    result[SOURCE] = 0  # only inside the mask: no rim outside it
    assert math.isnan(fq.seam_ratio(PHOTO, result, SOURCE, GUIDE))


def test_the_photo_itself_has_no_fill_and_changes_nothing():
    f = fq.fullres_figures(PHOTO, PHOTO.copy(), SOURCE, GUIDE, "remove")
    assert math.isnan(f.seam) and math.isnan(f.edges)
    assert f.changed_outside == 0 and f.changed_share == 0
    assert f.beyond_selection.pixels == 0


def test_the_figures_are_measured_at_about_1000_px_on_the_long_side():
    # the same scenes 4x larger (1280 px, each pixel a 4x4 block) are measured at 1000 px: the
    # step is still found, the blended fill still passes (the step's outline is a smaller share
    # of a fill that spans more measuring pixels, so edges is lower than at 320 px)
    def big(a: np.ndarray) -> np.ndarray:
        return a.repeat(4, 0).repeat(4, 1)

    masks = big(SOURCE), big(GUIDE)
    step, blend = big(filled(offset=12)), big(filled())
    assert fq.seam_ratio(big(PHOTO), step, *masks) > 2
    assert fq.edge_ratios(big(PHOTO), step, *masks)[0] > 2.5
    assert fq.seam_ratio(big(PHOTO), blend, *masks) < 1.25
    assert fq.edge_ratios(big(PHOTO), blend, *masks)[0] < 2.0


# ---------------------------------------------------------------------------- changed outside


def test_changes_far_from_the_masks_show_in_changed_outside():
    guide = disk(120, 220, 25)
    result = PHOTO.copy()
    result[5:15, 300:310] ^= 1  # a 10x10 patch, far from both masks
    assert fq.changed_outside(PHOTO, result, SOURCE, guide) == pytest.approx(100 / (H * W))
    result[5, 300] = PHOTO[5, 300].astype(int) + 7  # the photo is 70-250 there
    mean, largest = fq.changed_outside_levels(PHOTO, result, SOURCE, guide)
    assert largest == 7 and 1 < mean < 1.1


def test_changes_near_the_masks_are_not_outside():
    guide = disk(120, 220, 25)
    result = PHOTO.copy()
    near = q.dilate(SOURCE, 4) & ~SOURCE  # within 2.5% of the long side (8 px)
    result[near] ^= 1
    assert fq.changed_outside(PHOTO, result, SOURCE, guide) == 0
    result[0, 0] ^= 1
    assert fq.changed_outside(PHOTO, result, SOURCE, guide) == pytest.approx(1 / (H * W))


def test_a_removal_that_changes_past_its_grown_selection_is_counted():
    inside = PHOTO.copy()
    inside[SOURCE] = 0
    b = fq.changed_beyond_selection(PHOTO, inside, SOURCE, GUIDE)
    assert b.pixels == 0 and b.grow_px == pytest.approx(0.02 * 51)
    past = inside.copy()
    ring = q.dilate(SOURCE, 6) & ~q.dilate(SOURCE, 5)  # 5-6 px out: past the 1 px grown
    past[ring] ^= 1
    b = fq.changed_beyond_selection(PHOTO, past, SOURCE, GUIDE)
    assert b.pixels == ring.sum() and b.farthest_px > 5


# ---------------------------------------------------------------------------- object structure


def textured_object(seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 4, (H // 6 + 1, W // 6 + 1)).repeat(6, 0).repeat(6, 1)[:H, :W]
    colours = np.array([[200, 40, 40], [240, 200, 60], [60, 40, 160], [250, 250, 250]])
    return colours[blocks].astype(np.uint8)


def object_scene():
    photo = PHOTO.copy()
    photo[SOURCE] = textured_object()[SOURCE]
    return photo


def moved(photo: np.ndarray, dy: int, dx: int, source: np.ndarray = SOURCE) -> np.ndarray:
    """The object cut out (its place re-filled with the smooth field) and pasted (dy, dx) away."""
    out = photo.copy()
    out[source] = to8(smooth_field(2))[source]
    guide = np.roll(source, (dy, dx), (0, 1))
    out[guide] = np.roll(photo, (dy, dx), (0, 1))[guide]
    return out


def test_a_translated_object_measured_against_itself_keeps_its_structure():
    photo = object_scene()
    guide = np.roll(SOURCE, (-10, 120), (0, 1))
    result = moved(photo, -10, 120)
    s = fq.object_structure(photo, result, SOURCE, guide, (1.0, 1.0, -10.0, 120.0))
    assert s > 0.95


def test_a_torn_object_loses_its_structure():
    photo = object_scene()
    guide = np.roll(SOURCE, (-10, 120), (0, 1))
    result = moved(photo, -10, 120)
    half = guide & (np.mgrid[0:H, 0:W][1] < 220)
    result[half] = PHOTO[half]  # half of the object replaced by background
    torn = fq.object_structure(photo, result, SOURCE, guide, (1.0, 1.0, -10.0, 120.0))
    assert torn < 0.7
    # and a whole object put 12 px off is measured off too
    off = fq.object_structure(photo, moved(photo, -10, 132), SOURCE, guide,
                             (1.0, 1.0, -10.0, 120.0))
    assert off < 0.8


def test_a_scaled_object_is_measured_against_the_scaling():
    from scipy import ndimage

    photo = object_scene()
    s, cy, cx = 1.4, 120.0, 220.0  # the object (centre 120, 100) scaled 1.4x, centred at 220
    ty, tx = cy - s * 120, cx - s * 100
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    py, px = (yy - ty) / s, (xx - tx) / s
    guide = ndimage.map_coordinates(SOURCE.astype(float), [py, px], order=1) > 0.5
    warped = np.stack([ndimage.map_coordinates(photo[..., c].astype(float), [py, px], order=3)
                       for c in range(3)], -1)
    result = photo.copy()
    result[SOURCE] = PHOTO[SOURCE]
    result[guide] = to8(warped)[guide]
    good = fq.object_structure(photo, result, SOURCE, guide, (s, s, ty, tx))
    unscaled = fq.object_structure(photo, result, SOURCE, guide, (1.0, 1.0, 0.0, 120.0))
    assert good > 0.9 and unscaled < good - 0.2


def test_a_copy_keeps_the_original_in_the_expected_image():
    photo = object_scene()
    new = np.roll(SOURCE, (0, 120), (0, 1))
    guide = SOURCE | new
    result = photo.copy()
    result[new] = np.roll(photo, (0, 120), (0, 1))[new]
    assert fq.object_structure(photo, result, SOURCE, guide, (1.0, 1.0, 0.0, 120.0)) > 0.95
    lost = result.copy()
    lost[SOURCE] = PHOTO[SOURCE]  # the original vanished
    assert fq.object_structure(photo, lost, SOURCE, guide, (1.0, 1.0, 0.0, 120.0)) < 0.8


def test_a_part_that_stays_where_it_is_is_expected_where_it_is():
    # two objects in the source mask; the edit moves one and leaves the other (the
    # astronaut's shuttle and helmet): the one left is expected unmoved, not carried along
    photo = object_scene()
    stays = disk(195, 250, 35)
    photo[stays] = (30, 200, 40)
    photo[stays & (np.mgrid[0:H, 0:W][1] < 250)] = (230, 230, 20)  # a two-tone part
    source = SOURCE | stays
    guide = np.roll(SOURCE, (0, 20), (0, 1)) | stays
    result = moved(photo, 0, 20)
    result[stays] = photo[stays]
    assert fq.object_structure(photo, result, source, guide, (1.0, 1.0, 0.0, 20.0)) > 0.95


def test_a_lighter_box_around_a_placed_object_shows_as_halo():
    photo = object_scene()
    guide = np.roll(SOURCE, (0, 120), (0, 1))
    clean = moved(photo, 0, 120)
    assert fq.halo_levels(photo, clean, SOURCE, guide) == 0
    boxed = clean.copy()
    box = q.dilate(guide, 6) & ~guide
    boxed[box] = np.clip(boxed[box].astype(int) + 6, 0, 255).astype(np.uint8)
    h = fq.halo_levels(photo, boxed, SOURCE, guide)
    assert 2 < h <= 6
    assert math.isnan(fq.halo_levels(photo, photo, SOURCE, GUIDE))  # no guide: no ring


def test_edges_judge_a_fill_by_the_surroundings_near_it():
    # the right of the photo is sharply textured; the fill straddles it, and its smooth part
    # has a staircase: the textured surroundings must not hide it
    rng = np.random.default_rng(4)
    photo = smooth_field(0)
    photo[:, 230:] += rng.choice([-40.0, 40.0], (H, W - 230))[..., None]
    photo = to8(photo)
    fill = np.zeros((H, W), bool)
    fill[60:180, 40:260] = True
    source = np.zeros((H, W), bool)
    source[100:140, 80:120] = True
    result = photo.copy()
    blocks = rng.normal(0, 6, (H // 8, W // 8, 3)).repeat(8, 0).repeat(8, 1)
    stair = to8(smooth_field(1) + blocks)
    result[fill & (np.mgrid[0:H, 0:W][1] < 230)] = stair[fill & (np.mgrid[0:H, 0:W][1] < 230)]
    local, _ = fq.edge_ratios(photo, result, source, GUIDE)
    whole, _ = fq.edge_ratios(photo, result, source, GUIDE, local=False)
    assert local > 4 and local > 2 * whole
    # the report carries both: the target's local figure and the whole ring's beside it
    figures = fq.fullres_figures(photo, result, source, GUIDE, "remove")
    assert (figures.edges, figures.edges_whole_ring) == (local, whole)
    # the same fill without the staircase passes
    clean = photo.copy()
    smooth = to8(smooth_field(1))
    clean[fill & (np.mgrid[0:H, 0:W][1] < 230)] = smooth[fill & (np.mgrid[0:H, 0:W][1] < 230)]
    assert fq.edge_ratios(photo, clean, source, GUIDE)[0] < 2
