"""Label maps as images: palette from the source map, snapping, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from magic_server.labels.maps import MAX_LABELS, LabelMapError, read_label_maps

SKY, GRASS, TREE = (90, 150, 230), (60, 170, 60), (20, 90, 30)


def painted(h: int = 40, w: int = 60) -> np.ndarray:
    m = np.empty((h, w, 3), np.uint8)
    m[:] = SKY
    m[h // 2 :] = GRASS
    m[5:30, 10:20] = TREE
    return m


def test_colours_become_labels_and_the_target_shares_the_palette():
    source = painted()
    target = source.copy()
    target[5:30, 10:20] = SKY  # the tree moved...
    target[5:30, 40:50] = TREE  # ...to the right
    maps = read_label_maps(source, target)
    assert maps.count == 3
    colours = [tuple(c) for c in maps.palette]
    assert set(colours) == {SKY, GRASS, TREE}
    tree = colours.index(TREE)
    assert (maps.source == tree).sum() == 250 and (maps.target == tree).sum() == 250
    assert maps.target[10, 45] == tree and maps.source[10, 45] == colours.index(SKY)


def test_anti_aliased_boundary_pixels_snap_to_the_nearest_label():
    source = painted()
    for x in range(source.shape[1]):  # an anti-aliased row: blends of sky and grass
        t = 0.2 + 0.6 * x / source.shape[1]
        source[19, x] = (t * np.array(SKY) + (1 - t) * np.array(GRASS)).astype(np.uint8)
    maps = read_label_maps(source, source.copy())
    assert maps.count == 3  # the blend is not a label of its own
    colours = [tuple(c) for c in maps.palette]
    assert set(maps.source[19].tolist()) <= {colours.index(SKY), colours.index(GRASS)}


def test_a_target_colour_the_source_lacks_is_named_with_its_count_and_a_position():
    source = painted()
    target = source.copy()
    target[2:4, 50:55] = (255, 0, 255)
    with pytest.raises(LabelMapError, match=r"#ff00ff.*10 pixels, e\.g\. at x=50, y=2"):
        read_label_maps(source, target)


def test_too_many_labels_other_sizes_and_a_single_colour_are_refused():
    many = np.zeros((3 * (MAX_LABELS + 1), 40, 3), np.uint8)
    for k in range(MAX_LABELS + 1):
        many[k * 3 : k * 3 + 3] = (k * 15, 255 - k * 15, 100)
    with pytest.raises(LabelMapError, match="17 flat colours.*at most 16"):
        read_label_maps(many, many)
    with pytest.raises(LabelMapError, match="60x30.*60x40"):
        read_label_maps(painted(), painted(30, 60))
    flat = np.full((10, 10, 3), 7, np.uint8)
    with pytest.raises(LabelMapError, match="single colour"):
        read_label_maps(flat, flat)


def test_grey_label_indices_are_read_as_they_are():
    source = np.zeros((20, 30), np.uint8)
    source[:, 10:] = 1
    source[5:10, 20:25] = 2
    target = source.copy()
    target[5:10, 20:25] = 1
    maps = read_label_maps(source, target)
    assert maps.count == 3 and np.array_equal(maps.source, source)
    assert np.array_equal(maps.target, target)
    target[0, 0] = 3
    with pytest.raises(LabelMapError, match=r"label 3 .*1 pixels, e\.g\. at x=0, y=0"):
        read_label_maps(source, target)
