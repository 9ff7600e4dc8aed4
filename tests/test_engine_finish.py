"""The full-resolution finish (engine/finish.py) and the masks-only start
(engine/object_transfer.py), each on small synthetic scenes."""

from __future__ import annotations

import numpy as np
import torch
from scenes import disk
from scipy.ndimage import gaussian_filter

from magic_server.engine import finish, membrane
from magic_server.engine.api import SynthesisOptions
from magic_server.engine.object_transfer import transfer_start
from magic_server.engine.regions import dilate, erode
from magic_server.engines import build_engine


def smooth_photo(h: int = 120, w: int = 160) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([0.2 + 0.5 * xx / w, 0.3 + 0.4 * yy / h, 0.5 + 0 * xx]).float()[None]


def steps(image: torch.Tensor) -> float:
    """The largest difference between neighbouring pixels (any channel)."""
    dx = (image[..., 1:] - image[..., :-1]).abs().amax()
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().amax()
    return float(torch.maximum(dx, dy))


def test_a_tone_step_in_a_smooth_fill_is_found_and_removed():
    photo = smooth_photo()
    h, w = photo.shape[-2:]
    free = torch.from_numpy(disk(h, w, 60, 80, 40)).float()[None, None]
    fill = photo.clone()
    fill[..., :, 80:] += 0.15  # a tone step through the fill, and a jump at its edge
    limit = finish.edge_limit(photo, finish.ring(free, 6))
    out = finish.poisson_fuse(fill.clamp(0, 1), photo, free, limit)
    assert steps(fill) > 0.1  # the step is there before
    assert steps(out) < 2.5 * steps(photo)  # no step left: at most a ramp like the photo's
    assert torch.equal(out[..., free[0, 0] == 0], photo[..., free[0, 0] == 0])
    # without the limit, the fill's gradients are kept: the step would stay
    kept = finish.poisson_fuse(fill.clamp(0, 1), photo, free, torch.ones(1, 3, 1, 1))
    assert steps(kept) > 0.1


def test_texture_within_the_surroundings_range_is_kept_and_the_edge_fused():
    gen = torch.Generator().manual_seed(0)
    photo = smooth_photo() + 0.05 * torch.rand(1, 3, 120, 160, generator=gen)
    free = torch.from_numpy(disk(120, 160, 60, 80, 35)).float()[None, None]
    texture = 0.05 * torch.rand(1, 3, 120, 160, generator=gen)
    fill = smooth_photo() + 0.1 + texture  # a lighter copy of the photo's kind of texture
    out = finish.poisson_fuse(fill, photo, free, finish.edge_limit(photo, finish.ring(free, 6)))
    inside = free[0, 0] > 0
    detail = (out - fill)[..., inside]  # out = fill + a smooth correction inside
    assert float(detail.std(dim=-1).max()) < 0.03
    # at the edge, the fill meets the photo: the ring's mean difference is small
    edge = finish.ring(free)[0, 0] > 0
    inner = (finish.ring(1 - free)[0, 0] > 0)
    assert abs(float(out[..., inner].mean() - photo[..., edge].mean())) < 0.02


def test_harmonic_fill_interpolates_the_known_values_smoothly():
    values = torch.zeros(1, 1, 64, 64)
    values[..., :, 0] = 1.0
    known = torch.zeros(1, 1, 64, 64)
    known[..., :, 0] = 1
    known[..., :, -1] = 1
    u = finish.harmonic_fill(values, known, steps=400)
    row = u[0, 0, 32]
    assert float(row[0]) == 1.0 and float(row[-1]) == 0.0
    assert bool((row[1:] <= row[:-1] + 1e-4).all())  # falls monotonically from one side
    assert 0.3 < float(row[32]) < 0.7


def two_tone_boundary(size: int = 64, line: int = 40):
    """A square hole whose rim is dark above row `line` and bright below it (a bud's top,
    cut by the selection, under smooth bokeh), and a picture that draws that line across."""
    values = torch.full((1, 3, size, size), 0.1)
    values[..., line:, :] = 0.9
    known = torch.ones(1, 1, size, size)
    known[..., 8:-8, 8:-8] = 0
    picture = values.clone()
    return values, known, picture


def test_a_guided_membrane_does_not_run_across_an_outline_the_guide_draws():
    values, known, picture = two_tone_boundary()
    plain = finish.harmonic_fill(values, known, steps=200)
    guided = finish.harmonic_fill(values, known, steps=200, guide=membrane.Guide(picture))
    above, below = (slice(12, 36), slice(12, 52)), (slice(44, 54), slice(12, 52))
    # without the guide the bright rim spreads up into the dark half (a cream smear)
    assert float(plain[..., above[0], above[1]].max()) > 0.4
    assert float(guided[..., above[0], above[1]].max()) < 0.15
    assert float(guided[..., below[0], below[1]].min()) > 0.85
    assert torch.equal(guided[known.expand_as(values) > 0], values[known.expand_as(values) > 0])
    # where the guide is unguided (the new object's place) its edges hold nothing back
    unguided = torch.ones(1, 1, 64, 64)
    free = finish.harmonic_fill(values, known, steps=200,
                                guide=membrane.Guide(picture, 1.0, unguided))
    assert torch.allclose(free, plain)
    # a faint edge (a block of synthesized bokeh 8 levels off) is no wall
    faint = torch.full_like(values, 0.3)
    faint[..., 20:30, 20:30] += 8 / 255
    weights = membrane.guided_weights(membrane.Guide(faint))
    assert float(torch.stack(weights)[..., 1:-1, 1:-1].min()) > 0.9


def test_a_guide_blurred_over_an_upsampled_levels_pixels_counts_its_full_step():
    _, _, picture = two_tone_boundary()
    blurred = torch.nn.functional.avg_pool2d(picture, 5, stride=1, padding=2,
                                             count_include_pad=False)
    sharp = torch.stack(membrane.guided_weights(membrane.Guide(picture)))[:, :, :, 8:-8, 8:-8]
    soft = torch.stack(membrane.guided_weights(membrane.Guide(blurred)))[:, :, :, 8:-8, 8:-8]
    stretched = torch.stack(membrane.guided_weights(membrane.Guide(blurred, 5.0)))
    assert float(sharp.min()) < 1e-3
    assert float(soft.min()) > 0.2  # a step spread over 5 px is no wall at face value
    assert float(stretched[:, :, :, 8:-8, 8:-8].min()) < 1e-3  # with the stretch it is


def test_a_smooth_fill_keeps_an_outline_the_synthesis_drew_up_to_its_rim():
    # a smooth cream bud under smooth bokeh, the selection over its top (twowings at full
    # size): the membrane smeared the bud's cream up into the bokeh (blurred error above the
    # outline 38 levels, inside the bud 79); the synthesis drew the bud's top, and the
    # membrane and the fusion's rim now keep to it
    h, w = 160, 160
    yy, xx = np.mgrid[0:h, 0:w]
    bokeh = np.stack([0.55 + 0.1 * xx / w, 0.30 + 0.05 * yy / h, 0.08 + 0 * xx], -1)
    bud = disk(h, w, 150, 80, 55)
    photo = np.where(bud[..., None], np.array([0.92, 0.90, 0.75]), bokeh)
    free = np.zeros((h, w), bool)
    free[30:125, 45:115] = True
    as_uint8 = (photo * 255).round().astype(np.uint8)
    level = torch.nn.functional.interpolate(torch.from_numpy(photo).permute(2, 0, 1)[None]
                                            .float(), size=(80, 80), mode="area")
    (out,) = finish.finish_region(level, as_uint8, as_uint8, free, field=None, patch=7)
    error = np.abs(gaussian_filter(out.astype(float) - as_uint8, (3, 3, 0))).max(2)
    above = free & ~dilate(bud, 8)
    inside = free & erode(bud, 8)
    assert error[above].max() < 20
    assert error[inside].max() < 45
    assert np.array_equal(out[~free], as_uint8[~free])


def test_the_fusions_rim_keeps_an_edge_where_the_fill_meets_what_stays():
    # an upsampled fill's rim is not kept (margin), but where the fill is the membrane made
    # from what stays, its edge meets the rim's own and is kept there
    h, w = 48, 48
    photo = torch.full((1, 3, h, w), 0.2)
    photo[..., :, 24:] = 0.8
    free = torch.zeros(1, 1, h, w)
    free[..., 8:40, 8:40] = 1
    limit = torch.ones(1, 3, 1, 1)
    gapped = finish.poisson_fuse(photo, photo, free, limit, margin=6)
    kept = finish.poisson_fuse(photo, photo, free, limit, margin=6,
                               continuous=torch.ones(1, 1, h, w))
    def step(u: torch.Tensor) -> float:  # across the edge, 2 px inside the rim
        return float(u[0, 0, 10, 25] - u[0, 0, 10, 22])

    assert step(gapped) < 0.45  # the rim's band: the step spread into a ramp
    assert step(kept) > 0.55
    assert torch.allclose(kept, photo, atol=1e-4)


def textured_object_scene(size: int = 96, shift: tuple[int, int] = (7, 23)):
    rng = np.random.default_rng(1)
    img = np.empty((size, size, 3), np.uint8)
    img[...] = (60, 130, 70)
    img = (img + rng.integers(0, 20, img.shape)).astype(np.uint8)
    source = disk(size, size, 40, 30, 14)
    obj = rng.integers(120, 255, (size, size, 3)).astype(np.uint8)
    img[source] = obj[source]
    guide = np.roll(np.roll(source, shift[0], 0), shift[1], 1)
    return img, source, guide


def test_a_masks_only_translation_is_recovered_as_a_translation():
    img, source, guide = textured_object_scene()
    start = transfer_start(img, source, guide, "move")
    assert start is not None
    moved = np.roll(np.roll(img, 7, 0), 23, 1)
    assert np.array_equal(start[guide], moved[guide])  # the object's own pixels, exactly
    assert np.array_equal(start[~guide], img[~guide])  # the rest is the photo (old place too)
    assert transfer_start(img, source, guide, "remove") is None
    assert transfer_start(img, source, source, "move") is None  # nothing moves


def test_one_selection_whose_part_moves_and_part_stays_carries_the_moving_part():
    # a cup that stays and a spoon that moves, selected as one (touching) shape: the spoon's
    # own pixels go where the guide puts it, the cup stays the photo's
    rng = np.random.default_rng(3)
    h, w = 120, 200
    img = (np.full((h, w, 3), (60, 130, 70)) + rng.integers(0, 20, (h, w, 3))).astype(np.uint8)
    cup = disk(h, w, 60, 100, 30)
    spoon = np.zeros((h, w), bool)
    spoon[50:70, 128:160] = True  # touching the cup on its right
    obj = rng.integers(120, 255, (h, w, 3)).astype(np.uint8)
    img[cup | spoon] = obj[cup | spoon]
    moved_spoon = np.roll(spoon, -88, 1)  # to the cup's left, touching it
    source, guide = cup | spoon, cup | moved_spoon
    start = transfer_start(img, source, guide, "move")
    assert start is not None
    new = moved_spoon & ~cup
    # the spoon's own pixels, carried whole (the pieces outside the cup fix the shift to a
    # pixel or two: each is clipped by the cup at another end)
    same = max(np.all(start[new] == np.roll(img, -88 + d, 1)[new], axis=-1).mean()
               for d in range(-2, 3))
    assert same > 0.9
    assert np.array_equal(start[cup], img[cup])


def test_a_masks_only_copy_of_one_part_of_a_selection_carries_that_part():
    # a cup and a spoon selected as one (touching) shape; the guide adds a second spoon on the
    # cup's other side, touching it: that piece is found as the spoon's shape within the
    # selection and carried at its own size, and the cup and the first spoon stay as they are
    # (fitting the whole selection to the guide grew the second spoon from nothing)
    rng = np.random.default_rng(5)
    h, w = 120, 220
    img = (np.full((h, w, 3), (60, 130, 70)) + rng.integers(0, 20, (h, w, 3))).astype(np.uint8)
    cup = disk(h, w, 60, 110, 30)
    spoon = disk(h, w, 78, 150, 11)
    spoon[64:70, 125:150] = True  # its handle, reaching into the cup
    obj = rng.integers(120, 255, (h, w, 3)).astype(np.uint8)
    img[cup | spoon] = obj[cup | spoon]
    second = np.roll(spoon, -70, 1)  # on the cup's left, touching it
    assert (second & cup).any() and (second & ~cup).sum() > 0.8 * second.sum()
    start = transfer_start(img, cup | spoon, cup | spoon | second, "copy")
    assert start is not None
    new = second & ~cup
    same = max(np.all(start[new] == np.roll(img, -70 + d, 1)[new], axis=-1).mean()
               for d in range(-1, 2))
    assert same > 0.9
    assert np.array_equal(start[cup | spoon], img[cup | spoon])


def test_a_masks_only_copy_touching_two_objects_is_carried_between_them():
    # coins in a row with a gap; the guide copies the third coin into the gap, touching both
    # neighbours: they stay as they are, and the copy is the third coin's own pixels
    rng = np.random.default_rng(6)
    h, w = 100, 260
    img = (np.full((h, w, 3), 30) + rng.integers(0, 10, (h, w, 3))).astype(np.uint8)
    a, b, c = disk(h, w, 50, 45, 18), disk(h, w, 50, 107, 18), disk(h, w, 50, 210, 16)
    obj = rng.integers(120, 255, (h, w, 3)).astype(np.uint8)
    img[a | b | c] = obj[a | b | c]
    copy = np.roll(c, -134, 1)  # into the gap between a and b, touching both
    assert (copy & a).any() and (copy & b).any()
    start = transfer_start(img, a | b | c, a | b | c | copy, "copy")
    assert start is not None
    new = copy & ~(a | b)
    same = max(np.all(start[new] == np.roll(img, -134 + d, 1)[new], axis=-1).mean()
               for d in range(-1, 2))
    assert same > 0.9
    assert np.array_equal(start[a | b | c], img[a | b | c])


def test_masks_only_copies_and_reshapes_pair_each_part_with_the_one_it_lies_on():
    # two similar objects; the guide enlarges the second in place and copies the first next
    # to itself, touching it: the enlarged one is matched with its own source part (not with
    # the look-alike), the copy is carried whole, what stays stays
    from scipy import ndimage

    rng = np.random.default_rng(4)
    h, w = 160, 240
    img = (np.full((h, w, 3), (40, 90, 150)) + rng.integers(0, 20, (h, w, 3))).astype(np.uint8)
    a, b = disk(h, w, 50, 60, 18), disk(h, w, 110, 170, 17)
    obj = rng.integers(120, 255, (h, w, 3)).astype(np.uint8)
    img[a | b] = obj[a | b]
    bigger = disk(h, w, 110, 170, 26)
    reshaped = transfer_start(img, a | b, a | bigger, "reshape")
    assert reshaped is not None
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    s = 26 / 17  # b scaled about its centre
    warped = np.stack([ndimage.map_coordinates(img[..., c].astype(float),
                                               [(yy - 110) / s + 110, (xx - 170) / s + 170],
                                               order=1) for c in range(3)], -1)
    inner = disk(h, w, 110, 170, 23)
    assert np.abs(reshaped[inner].astype(int) - warped[inner]).mean() < 6
    assert np.array_equal(reshaped[a], img[a])
    copy = np.roll(a, 34, 1)  # touches a: one guide part with it
    copied = transfer_start(img, a | b, a | b | copy, "copy")
    assert copied is not None
    new = copy & ~a
    same = max(np.all(copied[new] == np.roll(img, 34 + d, 1)[new], axis=-1).mean()
               for d in range(-2, 3))
    assert same > 0.9
    assert np.array_equal(copied[a | b], img[a | b])


def test_a_masks_only_move_of_a_large_photo_pastes_the_guide_to_its_own_outline():
    # the parts are matched on a small copy (blocks of several pixels); the paste must
    # still follow the guide's outline pixel for pixel, not the blocks' staircase
    size = 1000
    rng = np.random.default_rng(2)
    img = (np.full((size, size, 3), (60, 130, 70)) + rng.integers(0, 20, (size, size, 3))
           ).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    source = (yy - 300) * 0.35 + (xx - 300) * 0.1 < 0  # a slanted edge ...
    source &= ((yy - 250) / 120) ** 2 + ((xx - 300) / 200) ** 2 < 1  # ... of an ellipse
    img[source] = rng.integers(120, 255, (int(source.sum()), 3))
    guide = np.roll(np.roll(source, 333, 0), 151, 1)
    start = transfer_start(img, source, guide, "move")
    assert start is not None
    moved = np.roll(np.roll(img, 333, 0), 151, 1)
    assert np.array_equal(start[guide], moved[guide])
    assert np.array_equal(start[~guide], img[~guide])


def test_a_masks_only_reshape_scales_the_object():
    img, source, _ = textured_object_scene()
    yy, xx = np.mgrid[:96, :96]
    guide = ((yy - 40) / 14) ** 2 + ((xx - 60) / 21) ** 2 < 1  # 1.5x wider, moved right
    start = transfer_start(img, source, guide, "reshape")
    assert start is not None
    # the object's colour fills the wider guide, not the background's green
    assert float(start[guide][:, 1].mean()) > 150 or float(start[guide][:, 0].mean()) > 150
    changed = np.any(start != img, axis=-1)
    assert changed[guide].mean() > 0.9 and not changed[~guide].any()


def test_a_masks_only_move_keeps_the_object_and_what_does_not_move_stays():
    img, source, guide = textured_object_scene()
    engine = build_engine("untrained", "cpu")
    options = SynthesisOptions(mode="move", samples=1, preset="draft", iterations=24,
                               resolution=64)
    result = engine.synthesize(img, source, guide, options)
    out = result.images[0]
    assert any("masks only" in n for n in result.notes)
    assert np.array_equal(out[~result.touched], img[~result.touched])
    moved = np.roll(np.roll(img, 7, 0), 23, 1)
    core = guide & ~np.roll(np.roll(~disk(96, 96, 40, 30, 10), 7, 0), 23, 1)
    # the object's inside is its own pixels (held), not grown anew
    assert np.abs(out[core].astype(int) - moved[core].astype(int)).mean() < 4


def test_in_smooth_surroundings_a_blocky_fill_takes_their_smooth_shape():
    photo = smooth_photo()
    free = torch.from_numpy(disk(120, 160, 60, 80, 40)).float()[None, None]
    blocks = photo.clone()
    blocks[..., 40:60, 60:120] += 0.12  # a block copied from elsewhere, of another tone
    inside = free[0, 0] > 0
    assert float((blocks - photo)[..., inside].abs().max()) > 0.1
    # the whole finish, from a level at half the photo's size
    level = torch.nn.functional.interpolate(blocks, size=(60, 80), mode="area")
    as_uint8 = (photo[0].permute(1, 2, 0) * 255).round().byte().numpy()
    (out,) = finish.finish_region(level, as_uint8, as_uint8, inside.numpy(), field=None,
                                  patch=7)
    error = np.abs(out.astype(int) - as_uint8.astype(int))
    assert error.max() <= 12  # the block's 30 levels gone: near the photo's own smooth ramp
    jumps = max(np.abs(np.diff(out.astype(int), axis=a)).max() for a in (0, 1))
    assert jumps <= 3  # and no step: the block's edges are ramps like the photo's
    assert np.array_equal(out[~inside.numpy()], as_uint8[~inside.numpy()])
    # textured surroundings: the synthesis' own fill is kept
    gen = torch.Generator().manual_seed(0)
    grass = photo + 0.2 * torch.rand(1, 3, 120, 160, generator=gen)
    assert float(finish.smooth_share(grass, finish.ring(free, 6), 24).max()) == 0
    judged = finish.ring(free, 6)
    share = finish.smooth_share(grass, judged, 24)
    kept = finish.smooth_where_smooth(blocks, grass, grass, share, judged, free, None)
    assert torch.equal(kept, blocks)


def test_a_large_holes_smooth_share_has_no_step():
    # a hole far wider than the reach: its middle leans to the mean over the ring, smoothly
    # (a switch drew the pooled grid's staircase across the fill)
    photo = smooth_photo(240, 320)
    gen = torch.Generator().manual_seed(0)
    photo[..., :, :100] += 0.2 * torch.rand(1, 3, 240, 100, generator=gen)  # textured left
    free = torch.from_numpy(disk(240, 320, 120, 170, 100)).float()[None, None]
    share = finish.smooth_share(photo, finish.ring(free, 6), 24)[0, 0]
    inside = free[0, 0] > 0
    assert float(share[inside].min()) < 0.2 and float(share[inside].max()) > 0.8
    jumps = max(float((share[1:] - share[:-1]).abs().max()),
                float((share[:, 1:] - share[:, :-1]).abs().max()))
    assert jumps < 0.1


def test_an_objects_edge_and_highlight_beside_a_smooth_fill_are_not_texture():
    # a spoon's old place on a smooth saucer, beside a cup whose rim and shiny foot lie in
    # the ring: judged by the median, the saucer is smooth (the fill is the saucer continued,
    # not a shape copied from under the cup); judged by the mean, the cup made it textured
    photo = smooth_photo()
    photo[..., :, 118:120] = 0.95  # the cup's white rim across the ring
    photo[..., 54:60, 34:39] = 0.0  # its dark foot in the ring ...
    photo[..., 56:58, 35:37] = 1.0  # ... with a highlight
    gen = torch.Generator().manual_seed(2)
    photo = photo + 0.002 * torch.randn(1, 3, 120, 160, generator=gen)  # the saucer's grain
    free = torch.from_numpy(disk(120, 160, 60, 80, 40)).float()[None, None]
    judged = finish.ring(free, 6)
    lines = finish.smooth_share(photo, judged, 24, edges_are_lines=True)[0, 0]
    mean = finish.smooth_share(photo, judged, 24)[0, 0]
    near_cup = (slice(45, 70), slice(40, 60))
    assert float(lines[near_cup].min()) > 0.9
    assert float(mean[near_cup].min()) < 0.5
    # texture is detail nearly everywhere: still the synthesis' own
    grass = smooth_photo() + 0.2 * torch.rand(1, 3, 120, 160, generator=gen)
    assert float(finish.smooth_share(grass, judged, 24, edges_are_lines=True).max()) == 0


def test_the_median_judged_smooth_share_of_a_large_hole_has_no_step():
    photo = smooth_photo(240, 320)
    gen = torch.Generator().manual_seed(0)
    photo[..., :, :100] += 0.2 * torch.rand(1, 3, 240, 100, generator=gen)  # textured left
    free = torch.from_numpy(disk(240, 320, 120, 170, 100)).float()[None, None]
    share = finish.smooth_share(photo, finish.ring(free, 6), 24, edges_are_lines=True)[0, 0]
    inside = free[0, 0] > 0
    assert float(share[inside].min()) < 0.2 and float(share[inside].max()) > 0.8
    jumps = max(float((share[1:] - share[:-1]).abs().max()),
                float((share[:, 1:] - share[:, :-1]).abs().max()))
    assert jumps < 0.1


def suit_beside_black(edge: int, red: float, green: float, h: int = 120, w: int = 160):
    """(photo (1, 3, h, w), the same as HxWx3 uint8): an orange texture (a suit) left of
    column `edge`, flat black (a table, clipped) right of it."""
    gen = torch.Generator().manual_seed(1)
    photo = torch.zeros(1, 3, h, w)
    photo[:, 0, :, :edge], photo[:, 1, :, :edge] = red, green
    photo[..., :edge] += 0.15 * torch.rand(1, 3, h, edge, generator=gen)
    photo = photo.clamp(0, 1)
    return photo, (photo[0].permute(1, 2, 0) * 255).round().byte().numpy()


def test_a_fill_between_a_smooth_black_and_a_textured_part_keeps_the_black():
    # the ring: orange texture (a suit) on the left, flat black (a table) on the right; the
    # synthesis filled the hole black on the right. The smooth part's membrane comes from the
    # black alone, not a brown mix with the orange
    h, w = 120, 160
    photo, as_uint8 = suit_beside_black(60, 0.9, 0.4, h, w)
    free = disk(h, w, 60, 80, 45)
    synth = photo.clone()
    synth[..., :, 60:] = 0.0
    (out,) = finish.finish_region(synth, as_uint8, as_uint8, free, field=None, patch=7)
    right = free.copy()
    right[:, :95] = False  # the hole's part well inside the black
    assert out[right].max() <= 6
    assert np.array_equal(out[~free], as_uint8[~free])
    # the suit's edge the fill drew is an edge the ring shows too: the fusion holds it
    # loosely, so neither side's tone crosses it (before: the black within 10 px of the suit
    # 14.8 levels on average, the suit 8.4 levels off its own tone)
    near = free.copy()
    near[:, :61] = False
    near[:, 71:] = False
    assert out[near].mean() <= 10
    suit = free.copy()
    suit[:, 55:] = False
    assert np.abs(out[suit].astype(int) - as_uint8[suit].astype(int)).mean() <= 4


def test_a_tone_step_on_the_smooth_side_stays_removed_beside_a_sharp_line_in_the_ring():
    # a sharp line through the ring's left side; the fill steps by 77 levels on the smooth
    # right: no edge of the surroundings there, so the step is held like the ramp it becomes
    photo = smooth_photo()
    photo[..., 40:80, 37] += 0.5
    h, w = photo.shape[-2:]
    free = torch.from_numpy(disk(h, w, 60, 80, 40)).float()[None, None]
    fill = smooth_photo()
    fill[..., :, 100:] += 0.3
    ring = finish.ring(free, 6)
    limit = finish.local_edge_limit(photo, ring, 24)

    def right_step(edge_max: torch.Tensor) -> float:
        out = finish.poisson_fuse(fill.clamp(0, 1), photo, free, limit, edge_max=edge_max)
        right = free[0, 0, :, 1:] * free[0, 0, :, :-1] > 0
        right[:, :90] = False
        return float((out[..., 1:] - out[..., :-1]).abs()[..., right].max())

    assert right_step(finish.local_edge_limit(photo, ring, 24, quantile=1.0)) < 2.5 * steps(
        smooth_photo())
    # judged over the whole ring the line would let the step through (13 levels of it)
    assert right_step(finish.edge_limit(photo, ring, quantile=1.0)) > 0.03


def test_a_pair_holds_its_difference_as_firmly_as_it_is_small():
    edge_max = torch.full((1, 3, 1, 1), 0.5)
    wanted = torch.tensor([0.0, 0.05, 0.05, 0.05]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    raw = torch.tensor([0.0, 0.05, 0.4, 0.8]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    kept = torch.ones(1, 1, 1, 4)
    weight = finish.edge_weight(raw, wanted, kept, edge_max)[0, 0, 0]
    assert float(weight[0]) == 1.0  # a smooth pair
    assert abs(float(weight[1]) - 0.5) < 1e-6  # EDGE_SOFTNESS: half as firm
    assert float(weight[2]) < 0.02  # an edge the surroundings show: loose, as drawn
    assert abs(float(weight[3]) - 0.5) < 1e-6  # sharper than any there: as clipped
    kept[..., 2] = 0  # a pair whose difference is not kept holds firmly
    assert float(finish.edge_weight(raw, wanted, kept, edge_max)[0, 0, 0, 2]) == 1.0


def test_the_edge_limit_is_judged_near_each_pixel():
    # a sharp edge on the left of the ring, smooth on the right: the right may not draw it
    photo = smooth_photo()
    photo[..., 40:80, 37] += 0.5  # a line through the ring's left side
    free = torch.from_numpy(disk(120, 160, 60, 80, 40)).float()[None, None]
    ring = finish.ring(free, 6)
    limit = finish.local_edge_limit(photo, ring, 24)
    overall = finish.edge_limit(photo, ring)
    assert limit.shape == (1, 3, 120, 160)
    assert float(limit[0, 0, 60, 130]) < 0.5 * float(overall[0, 0, 0, 0])
    assert float(limit[0, 0, 60, 42]) >= 0.9 * float(overall[0, 0, 0, 0])


GUIDE = disk(120, 160, 60, 90, 22)  # where the paste lies ...
CORE = disk(120, 160, 60, 90, 15)  # ... and the part of it the engine holds
BAND = dilate(GUIDE, 10) & ~dilate(GUIDE, 1)  # the new background round it


def finish_paste(photo: np.ndarray, pasted: np.ndarray, tight: float) -> np.ndarray:
    """finish_region on a paste at GUIDE, its rim and the band round it free, from a last
    level that renders the paste coarsely (blocky, at half size)."""
    free = dilate(GUIDE, 10) & ~CORE
    level = torch.nn.functional.interpolate(
        torch.from_numpy(pasted).permute(2, 0, 1)[None].float() / 255, size=(60, 80),
        mode="area")
    (out,) = finish.finish_region(level, photo, pasted, free, field=None, patch=7,
                                  exact=GUIDE, outline=dilate(GUIDE, 2), tight=tight)
    assert np.array_equal(out[~free], pasted[~free])
    return out


def smooth_photo_uint8() -> np.ndarray:
    return (smooth_photo()[0].permute(1, 2, 0) * 255).round().byte().numpy()


def test_a_pasted_objects_carried_background_is_fused_inside_it_not_round_it():
    # an artist's paste carries a rim of its old background, of another tone than the new
    # place's; the band round the object must stay the new background (no halo, no bright
    # or dark line where the paste ends) and the object's core its own pixels
    photo = smooth_photo_uint8()
    pasted = photo.copy()
    pasted[GUIDE] = np.clip(photo[GUIDE].astype(int) + 40, 0, 255)  # the old background
    pasted[CORE] = (150, 20, 20)  # the object
    out = finish_paste(photo, pasted, tight=0.0)
    error = np.abs(out.astype(int) - photo.astype(int))
    assert error[BAND].mean() < 3 and error[BAND].max() <= 12
    assert np.array_equal(out[CORE], pasted[CORE])
    # the carried rim's step is spread inside the paste: no jump at its edge larger than
    # the object's own edge
    rim = dilate(GUIDE, 1) & ~erode(GUIDE, 1)
    jumps = np.abs(np.diff(out.astype(int), axis=1))[rim[:, 1:] & rim[:, :-1]]
    assert jumps.max() <= 12


def test_a_selection_on_the_objects_edge_is_told_from_a_loose_lasso():
    photo = smooth_photo_uint8()
    obj = disk(120, 160, 60, 80, 20)
    photo[obj] = (150, 20, 20)
    assert finish.selection_tightness(photo, obj) == 1.0  # drawn on the object's edge
    assert finish.selection_tightness(photo, dilate(obj, 8)) == 0.0  # round it, in the shading


def test_a_tight_paste_keeps_its_own_edge_against_the_new_background():
    # the paste is the object alone, its selection drawn on the object's edge: the edge is
    # the object's, so nothing of its step is spread inside it
    photo = smooth_photo_uint8()
    pasted = photo.copy()
    pasted[GUIDE] = (150, 20, 20)
    out = finish_paste(photo, pasted, tight=1.0)
    assert np.array_equal(out[GUIDE], pasted[GUIDE])
    assert np.abs(out.astype(int) - photo.astype(int))[BAND].mean() < 3


def test_a_removal_changes_nothing_beyond_the_selection_grown_by_two_percent():
    img, source, _ = textured_object_scene()
    engine = build_engine("untrained", "cpu")
    options = SynthesisOptions(mode="remove", samples=1, preset="draft", iterations=24,
                               resolution=64)
    result = engine.synthesize(img, source, np.zeros_like(source), options)
    out = result.images[0]
    changed = np.any(out != img, axis=-1)
    diameter = 29  # the disk's: 2 % of it is under a pixel, so nothing past the selection
    allowed = dilate(source, int(0.02 * diameter))
    assert changed.any() and not (changed & ~allowed).any()


def test_a_removals_selection_grows_as_far_as_two_percent_reach():
    from scipy import ndimage

    from magic_server.engine.edit_plan import edit_region

    for diameter in (27, 51, 100, 160, 301):
        hole = disk(400, 400, 200, 200, diameter // 2)
        region = edit_region(hole, np.zeros_like(hole), mode="remove")
        reach = ndimage.distance_transform_edt(~hole)[region].max()
        assert reach <= 0.02 * diameter + 1e-9
        assert reach >= 0.02 * diameter - 1.5  # the octagon's whole pixels: not much less
    # a 51 px coin's anti-aliased rim (one pixel) goes with it
    coin = disk(400, 400, 200, 200, 26)
    assert edit_region(coin, np.zeros_like(coin), mode="remove").sum() > coin.sum()


def corner_removal_scene(offset: float):
    """A textured orange suit on the left, flat black (clipped) on the right; the hole reaches
    the photo's bottom and right edges, so the black round it is a short stretch of its ring.
    The synthesis continued the suit `offset` lighter or darker than the real one."""
    h, w = 120, 160
    photo, as_uint8 = suit_beside_black(90, 0.7, 0.3, h, w)
    free = disk(h, w, 110, 140, 55)
    synth = photo.clone()
    synth[..., :, :90] += offset
    synth[..., :, 90:] = 0.0
    return synth.clamp(0, 1), as_uint8, free


def test_a_removal_reaching_the_photos_edge_continues_the_black_from_the_black():
    # the suit's few pixels in the tiles judged smooth were boundary values of the black's
    # membrane and tinted it brown (22 and 28 levels on average for the two offsets; what is
    # left comes from the synthesized suit's own tone mismatch)
    for offset in (0.12, -0.12):
        synth, photo, free = corner_removal_scene(offset)
        (out,) = finish.finish_region(synth, photo, photo, free, field=None, patch=7)
        black = free.copy()
        black[:, :100] = False  # the hole's part 10 px and more into the black
        assert out[black].mean() <= 18
        assert np.array_equal(out[~free], photo[~free])


def test_the_smooth_membrane_takes_no_textured_pixel_as_its_boundary():
    photo = torch.zeros(1, 3, 40, 40)
    gen = torch.Generator().manual_seed(0)
    photo[..., 5:12, 5:12] = 0.5 * torch.rand(1, 3, 7, 7, generator=gen)  # a textured speck
    known = torch.ones(1, 1, 40, 40)
    share = torch.ones(1, 1, 40, 40)  # the whole tile judged smooth
    detail = finish.fine_detail(photo)
    boundary = finish.smooth_boundary(detail, known, share)
    assert float(boundary[..., 7:10, 7:10].max()) == 0  # the speck is no boundary value
    assert float(boundary[..., 25:, 25:].min()) == 1  # the flat black is
    assert float(finish.smooth_boundary(detail, known, share * 0.4).max()) == 0  # not smooth
