"""The product presets' coarse-to-fine synthesis, judged by the benchmark's weight-free metrics
(benchmarks/quality.py) on small scenes, on the CPU with an untrained classifier."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import peers
import pytest
import quality
import torch
import torch.nn.functional as F
from PIL import Image
from scenes import disk

from magic_server.engine import edit_plan, synthesis
from magic_server.engine.api import EngineInputError, SynthesisOptions
from magic_server.engine.edit_plan import plan_edit
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.optimise import EditOptimiser
from magic_server.engine.pyramid import level_sizes, split_iterations
from magic_server.engine.regions import dilate, nearest_side_fill

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def small_sample(name: str, mode: str, scale: float = 0.4):
    def load(rel: str, mask: bool):
        im = Image.open(SAMPLES / rel).convert("L" if mask else "RGB")
        size = (round(im.width * scale), round(im.height * scale))
        im = im.resize(size, Image.Resampling.BOX)
        return np.asarray(im) > 127 if mask else np.asarray(im).copy()

    img = load(f"{name}.png", False)
    return img, load(f"masks/{name}_source.png", True), load(f"masks/{name}_{mode}.png", True)


def textured_scene(size: int = 96):
    """Smooth shading with photo-like grain, a textured red disk, and its moved place."""
    gen = torch.Generator().manual_seed(0)
    shade = F.interpolate(torch.rand(1, 3, 3, 3, generator=gen) * 0.4 + 0.3, size=(size, size),
                          mode="bicubic", align_corners=False)[0]
    grain = F.avg_pool2d(torch.randn(1, 3, size, size, generator=gen), 3, 1, 1)[0] * 0.08
    img = ((shade + grain).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy().copy()
    source = disk(size, size, size * 0.5, size * 0.3, size * 0.16)
    guide = disk(size, size, size * 0.5, size * 0.7, size * 0.16)
    rng = np.random.default_rng(0)
    img[source] = np.stack([rng.integers(170, 230, source.sum()),
                            rng.integers(30, 70, source.sum()),
                            rng.integers(30, 70, source.sum())], axis=-1)
    return img, source, guide


def draft(**kw) -> SynthesisOptions:
    return SynthesisOptions(**{"samples": 2, "preset": "draft", "iterations": 90,
                               "resolution": 64, "seed": 0, **kw})


def test_levels_run_coarse_to_fine_up_to_the_regions_own_size():
    sizes = level_sizes(300, 200, finest_side=512)
    assert sizes[-1] == (300, 200)
    assert max(sizes[0]) <= 40
    assert all(a[0] < b[0] for a, b in itertools.pairwise(sizes))
    assert level_sizes(3000, 1000, finest_side=512)[-1] == (512, 171)
    counts = split_iterations(100, sizes, working_side=64)
    assert sum(counts) == 100 and min(counts) >= 1
    assert counts[0] > counts[-1]  # the layout levels get more of the budget than detail ones


def test_the_fill_keeps_known_pixels_and_continues_each_side_of_the_hole():
    img = torch.zeros(1, 3, 16, 16)
    img[..., :8] = 1.0
    known = torch.ones(1, 1, 16, 16)
    known[..., 4:12, 4:12] = 0
    out = nearest_side_fill(img, known)
    assert torch.equal(out[known.expand_as(out) > 0], img[known.expand_as(img) > 0])
    hole = out[0, 0, 4:12, 4:12]
    # each half of the hole takes its own side's colour, not a blend of both
    assert float(hole[:, :2].min()) > 0.85 and float(hole[:, -2:].max()) < 0.15
    nothing = nearest_side_fill(img, torch.zeros(1, 1, 16, 16))
    assert torch.allclose(nothing, img.mean(dim=(2, 3), keepdim=True).expand_as(img))


def test_an_edit_from_the_artists_composite_is_at_least_as_natural_as_the_composite(engine):
    img, source, guide = small_sample("chelsea", "move")
    rough = peers.cut_paste(img, source, guide, "move")  # as an artist's moved layer gives
    result = engine.synthesize(img, source, guide, draft(mode="move"), init_image=rough)
    region = quality.edit_region(source, guide)
    start = quality.patch_realism(img, rough, region).coherence_ratio
    ends = [quality.patch_realism(img, out, region).coherence_ratio for out in result.images]
    print(f"\ncoherence: composite {start:.3f}, results {[round(e, 3) for e in ends]}")
    assert all(e <= start for e in ends)
    for out in result.images:  # and the pixels the edit may not touch are the photo's
        assert np.array_equal(out[~result.touched], img[~result.touched])


def test_an_edit_from_noise_has_the_photos_sharpness(engine):
    img, source, guide = textured_scene()
    result = engine.synthesize(img, source, guide, draft(mode="move"))
    region = quality.edit_region(source, guide)
    figures = [quality.sharpness(img, out, region).noise_figure for out in result.images]
    print(f"\nnoise figure from noise: {[round(f, 3) for f in figures]}")
    assert all(0.7 <= f <= 1.3 for f in figures)
    adherence = [quality.guide_adherence(img, source, guide, out) for out in result.images]
    assert all(a.guide_iou >= 0.8 * a.segmenter_iou_on_source for a in adherence)
    assert quality.diversity(result.images, region) > 0


def test_a_removal_copies_nothing_of_the_removed_object_back(engine):
    img, source, _ = textured_scene()
    result = engine.synthesize(img, source, np.zeros_like(source), draft(mode="remove"))
    judge = quality.removal_segmenter(img, source, np.zeros_like(source))
    for out in result.images:
        assert quality.object_left(judge, out, source, np.zeros_like(source)) <= 0.05


def test_the_untrained_classifier_is_switched_off_and_the_result_says_so(engine):
    img, source, guide = textured_scene(64)
    calls = []
    real = engine.classifier.forward_with_features

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    engine.classifier.forward_with_features = counting
    try:
        result = engine.synthesize(img, source, guide, draft(iterations=12, samples=1))
    finally:
        del engine.classifier.forward_with_features
    assert len(calls) == 1  # the reference's forward only (its class), none per iteration
    assert any("untrained classifier" in n for n in result.notes)
    trained = LossWeights.product(trained_classifier=True)
    # a real classifier's terms are shares of the patch term's pull, off by default (measured:
    # docs/classifier-terms.md); tests/test_term_balance.py turns them on
    assert trained.relative and trained.classifier == trained.feature_stats == 0.0


def test_the_paper_preset_on_the_whole_image_optimises_exactly_the_papers_objective(
        engine, monkeypatch):
    img, source, guide = textured_scene(64)
    seen: list[tuple[frozenset, LossWeights, tuple]] = []
    real = EditOptimiser.objective

    def spy(self, x, level, mask_net, critic, weights):
        terms, surrogate = real(self, x, level, mask_net, critic, weights)
        seen.append((frozenset(terms), weights, tuple(x.shape), level.free, level.bank))
        return terms, surrogate

    monkeypatch.setattr(EditOptimiser, "objective", spy)
    options = SynthesisOptions(samples=1, preset="paper", iterations=40, resolution=32,
                               composite=False, mode="move")
    result = engine.synthesize(img, source, guide, options)
    assert result.images[0].shape == img.shape and result.touched is None
    paper = {"classifier", "feature_stats", "mask", "tv_l1", "tv_l2", "l2"}
    # 40 iterations: the critic joins at 5,000 / 18,000 of them, as in the paper
    assert [set(t) for t, *_ in seen[:11]] == [paper] * 11
    assert all(set(t) == paper | {"critic"} for t, *_ in seen[11:])
    assert len(seen) == 40
    expected = LossWeights(critic=0.1, keep=0.0)  # the paper's weights for a move
    assert all(w == expected and w.patch == 0 for _, w, *_ in seen)
    assert all(shape == (1, 3, 32, 32) and free is None and bank is None
               for _, _, shape, free, bank in seen)


def test_the_edit_region_is_where_the_masks_differ():
    source = np.zeros((60, 80), bool)
    source[10:50, 10:40] = True  # a big object, of which a small part moves
    guide = source.copy()
    guide[10:20, 30:40] = False
    guide[10:20, 50:60] = True
    plan = plan_edit(source, guide)
    assert plan.edit[15, 35] and plan.edit[15, 55]
    assert not plan.edit[40, 15]  # the part that stays is not re-synthesized
    with pytest.raises(EngineInputError, match="nothing to change"):
        plan_edit(source, source)


def test_a_pasted_objects_inside_stays_as_the_artist_made_it(engine):
    img, source, guide = textured_scene()
    rough = img.copy()
    shift = int(np.argmax(guide.any(0))) - int(np.argmax(source.any(0)))
    rough[np.roll(source, shift, axis=1)] = img[source]  # the disk pasted at its new place
    result = engine.synthesize(img, source, guide, draft(mode="move", samples=1),
                               init_image=rough)
    changed = edit_plan.changed_pixels(img, rough)
    held, repair = edit_plan.composite_repair(changed, source, guide, band=3)
    assert held.sum() > 0.5 * guide.sum() and repair[source & ~guide].all()
    out = result.images[0]
    assert np.abs(out[held].astype(int) - rough[held]).max() <= 1  # the artist's pixels
    old_place = source & ~dilate(guide, 3)
    red = out[..., 0].astype(int) - out[..., 1]
    assert (red[old_place] > 80).mean() < 0.05  # the uncovered old place is background now


def test_round_a_copys_new_place_the_background_is_the_photos_own(engine):
    # an object on grey, copied onto texture (hair) with a loose selection: the pasted layer
    # carries a margin of grey. Round the new place, beyond the rim the synthesis fuses and
    # beyond the growth radius of the old place, the result is the photo bit for bit (the
    # hair runs on up to the copy): no band of grey synthesized from the old surroundings
    h, w = 200, 400
    gen = np.random.default_rng(4)
    img = np.full((h, w, 3), 150, np.uint8)
    img[:, 200:] = gen.integers(60, 200, (h, 200, 3))  # the texture on the right
    obj = disk(h, w, 100, 100, 78)
    img[obj] = (30, 90, 200)
    source = disk(h, w, 100, 100, 84)  # loose: 6 px of grey round the object
    guide = disk(h, w, 100, 300, 84)
    rough = peers.cut_paste(img, source, guide, "copy")
    result = engine.synthesize(img, source, guide, draft(mode="copy"), init_image=rough)
    reach = edit_plan.growth_radius(edit_plan.object_extent(source, guide), max(h, w))
    edit = edit_plan.edit_region(source, guide, edit_plan.changed_pixels(img, rough), "copy")
    stays = edit_plan.background_that_stays(edit, source, guide, reach, synthesis.STAYS_RIM)
    assert stays.sum() > 1000  # the edit reaches past the rim into the texture
    for out in result.images:
        assert np.array_equal(out[stays], img[stays])
        core = out[disk(h, w, 100, 300, 70)].astype(int)  # and the copy is there
        assert np.abs(core - np.array([30, 90, 200])).mean() < 12
    rim = dilate(guide, synthesis.STAYS_RIM) & ~guide
    assert not np.array_equal(result.images[0][rim], result.images[1][rim])  # two samples


def test_the_background_that_stays_is_beyond_the_rim_and_the_old_places_reach():
    source, guide = disk(80, 120, 40, 30, 12), disk(80, 120, 40, 80, 12)
    edit = dilate(source | guide, 10)
    stays = edit_plan.background_that_stays(edit, source, guide, reach=8, rim=3)
    assert not (stays & ~edit).any() and not (stays & dilate(source, 5)).any()
    assert not (stays & dilate(guide, 2)).any() and stays[40, 80 + 12 + 5]


def test_a_pocket_enclosed_by_the_guide_is_not_background_that_stays():
    # a guide shaped like a ring: its hole lies beyond the rim and far from the old place, but
    # nothing round the object reaches it from outside the edit: it is synthesized
    guide = disk(140, 140, 70, 70, 40) & ~disk(140, 140, 70, 70, 25)
    source = disk(140, 140, 8, 8, 3)
    edit = dilate(guide | source, 30)
    stays = edit_plan.background_that_stays(edit, source, guide, reach=3, rim=4)
    assert stays[70, 70 + 40 + 8] and stays[70 - 40 - 8, 70]  # round the ring, outside
    assert not stays[70, 70] and not (stays & disk(140, 140, 70, 70, 25)).any()  # its hole
