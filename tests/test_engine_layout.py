"""Layout edits with K labels (issue 12, engine part): a rearranged label map is followed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magic_server.engine.api import EngineInputError, SynthesisOptions
from magic_server.engine.donors import VOID, donor_windows
from magic_server.engine.donors import canvas as donor_canvas
from magic_server.engine.edit_plan import grow_edit
from magic_server.engine.layout_start import layout_composite
from magic_server.engine.mask_net import train_mask_net
from magic_server.engine.regions import region_of_interest
from magic_server.engine.tensors import Normaliser, image_to_tensor, mask_to_tensor


def three_label_scene(h: int = 72, w: int = 96):
    """Sky over grass with a dark tree: label maps 0 sky, 1 grass, 2 tree; the target moves
    the tree to the right."""
    gen = torch.Generator().manual_seed(0)
    grain = (F.avg_pool2d(torch.randn(1, 3, h, w, generator=gen), 3, 1, 1)[0] * 15).numpy()
    labels = np.zeros((h, w), np.uint8)
    labels[h // 2 :] = 1
    labels[14:50, 14:30] = 2
    colours = np.array([(110, 160, 230), (70, 160, 60), (40, 70, 30)], np.float32)
    img = colours[labels] + grain.transpose(1, 2, 0)
    img = np.clip(img, 0, 255).astype(np.uint8)
    target = labels.copy()
    target[14:50, 14:30] = np.where(np.arange(14, 50)[:, None] < h // 2, 0, 1)
    target[14:50, 62:78] = 2
    return img, labels, target, colours


def judge(img: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """An independent judge: each pixel's label is the nearest label colour of its 3x3 mean."""
    t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
    smooth = F.avg_pool2d(t, 3, 1, 1, count_include_pad=False)[0].permute(1, 2, 0).numpy()
    return np.linalg.norm(smooth[:, :, None] - colours[None, None], axis=-1).argmin(-1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_a_rearranged_three_label_map_is_followed(engine):
    img, source, target, colours = three_label_scene()
    assert min(iou(judge(img, colours) == k, source == k) for k in range(3)) >= 0.9
    options = SynthesisOptions(samples=2, preset="draft", iterations=90, resolution=64)
    result = engine.synthesize_layout(img, source, target, options)
    for out in result.images:
        seen = judge(out, colours)
        ious = [iou(seen == k, target == k) for k in range(3)]
        print("\nper-label IoU with the target:", [round(v, 3) for v in ious])
        assert min(ious) >= 0.8
        assert np.array_equal(out[~result.touched], img[~result.touched])


def test_layout_inputs_are_checked(engine):
    img, source, target, _ = three_label_scene()
    options = SynthesisOptions(samples=1, preset="tiny", iterations=4, resolution=32)
    with pytest.raises(EngineInputError, match="nothing to change"):
        engine.synthesize_layout(img, source, source, options)
    with pytest.raises(EngineInputError, match="image's size"):
        engine.synthesize_layout(img, source[:10], target, options)
    with pytest.raises(EngineInputError, match="at most 16"):
        engine.synthesize_layout(img, source, np.full_like(target, 20), options)


def test_the_mask_network_learns_a_three_label_map():
    """The paper's encoder-decoder with K outputs, trained with softmax cross-entropy on the
    photo and its source map, reproduces every label (the same code a binary mask takes)."""
    img, source, _, _ = three_label_scene()
    device = torch.device("cpu")
    z = Normaliser(device).normalise(image_to_tensor(img, (72, 96), device))
    fractions = torch.cat([mask_to_tensor(source == k, (72, 96), device) for k in range(3)], 1)
    net = train_mask_net(z, fractions, steps=200, gen=torch.Generator().manual_seed(0))
    assert net.labels == 3
    with torch.no_grad():
        predicted = net(z).argmax(1)[0].numpy()
    ious = [iou(predicted == k, source == k) for k in range(3)]
    print("\nmask network per-label IoU on its photo:", [round(v, 3) for v in ious])
    assert min(ious) >= 0.9


def test_the_paper_preset_runs_a_layout_edit_with_the_k_label_mask_network(engine):
    """The paper's objective for a layout: its mask network is fitted on the 3-label source
    map (progress shows the mask-net stage) and its term pulls x' towards the target map."""
    img, source, target, _ = three_label_scene()
    stages, terms = [], []
    options = SynthesisOptions(samples=1, preset="paper", iterations=3, resolution=64)
    result = engine.synthesize_layout(
        img, source, target, options,
        on_progress=lambda p: (stages.append(p.stage), terms.append(set(p.losses))))
    assert "mask-net" in stages and "synthesis" in stages
    assert any("mask" in t for t in terms)
    out = result.images[0]
    assert out.shape == img.shape
    assert np.array_equal(out[~result.touched], img[~result.touched])


def test_a_label_painted_far_from_where_the_photo_has_it_is_followed(engine):
    """"Paint more of a concept": a tree painted into the grass at the far right, where the
    edit's own region holds no tree at all. Its patches come from a donor window around the
    photo's tree (engine/donors.py), and only the tree's pixels vote for the painted ones."""
    img, source, _, colours = three_label_scene(72, 220)
    target = source.copy()
    target[44:64, 190:206] = 2
    differ = source != target
    box = region_of_interest(grow_edit(differ))
    assert not (box.crop(source) == 2).any()  # no tree in the region of interest
    windows = donor_windows(source, target, grow_edit(differ), box)
    assert len(windows) == 1 and (windows[0].crop(source) == 2).any()
    options = SynthesisOptions(samples=2, preset="draft", iterations=90, resolution=64)
    result = engine.synthesize_layout(img, source, target, options)
    for out in result.images:
        seen = judge(out, colours)
        tree = iou(seen[40:68, 186:210] == 2, target[40:68, 186:210] == 2)
        print("\npainted tree IoU:", round(tree, 3))
        assert tree >= 0.8
        assert np.array_equal(out[~result.touched], img[~result.touched])


def test_the_patch_bank_canvas_keeps_pieces_apart_with_a_void_label():
    a = torch.ones(1, 3, 10, 12)
    b = torch.full((1, 3, 6, 5), 2.0)
    la = torch.zeros(1, 2, 10, 12)
    la[:, 0] = 1
    lb = torch.zeros(1, 2, 6, 5)
    lb[:, 1] = 1
    image, labels = donor_canvas([(a, la), (b, lb)], gap=7)
    assert image.shape == (1, 3, 10, 24) and labels.shape == (1, 3, 10, 24)
    assert torch.equal(image[..., :10, :12], a) and torch.equal(image[..., :6, 19:], b)
    assert (labels[0, 2, :, 12:19] == VOID).all() and (labels[0, 2, 6:, 19:] == VOID).all()
    assert (labels[0, 1, :6, 19:] == 1).all() and (labels[0, 2, :10, :12] == 0).all()


def test_a_moved_region_starts_from_the_photo_pixels_of_its_old_place():
    """The layout's cut-and-paste start (engine/layout_start.py): the tree moved right is
    pasted from its old place (whose outline fits it), the regions that only grow or shrink
    are left to the synthesis, and a target with nothing moved gives no composite."""
    img, source, target, _ = three_label_scene()
    composite = layout_composite(img, source, target)
    assert composite is not None
    assert np.array_equal(composite[14:50, 62:78], img[14:50, 14:30])  # the tree, moved
    changed = np.any(composite != img, axis=-1)
    assert not changed[:, :60].any()  # its old place is not pasted over: synthesized later
    grown = source.copy()
    grown[30:36] = 1  # the grass grows up a little: nothing moves
    assert layout_composite(img, source, grown) is None


def test_a_swap_moves_both_regions_even_the_one_inside_the_others_old_place():
    """Two coins of one label swapped: the big one gains pixels and is moved; the small one's
    new place lies inside the big one's old place, so none of its pixels changes label, yet it
    has become another shape than the region under it and fits a whole region elsewhere: it is
    moved from its own old place too (engine/layout_start.py)."""
    h, w = 60, 120
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(1)
    img = np.full((h, w, 3), 40, np.uint8)
    big = (yy - 30) ** 2 + (xx - 85) ** 2 <= 20**2
    small = (yy - 30) ** 2 + (xx - 30) ** 2 <= 12**2
    img[big] = rng.integers(150, 255, (big.sum(), 3))
    img[small] = rng.integers(90, 140, (small.sum(), 3))
    source = (big | small).astype(np.uint8)
    big_there = (yy - 30) ** 2 + (xx - 30) ** 2 <= 20**2
    small_there = (yy - 30) ** 2 + (xx - 85) ** 2 <= 12**2
    target = (big_there | small_there).astype(np.uint8)
    composite = layout_composite(img, source, target)
    assert composite is not None
    assert np.array_equal(composite[small_there], img[small])  # the small coin, moved
    assert np.array_equal(composite[big_there], img[big])  # the big one
