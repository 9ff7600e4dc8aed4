"""First label maps for layout edits (issue 12): regions recovered from colour and texture,
every label used, palette colours read_label_maps can tell apart, and magic-label-map."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from magic_server.cli import label_map as cli_label_map
from magic_server.engine.api import Cancelled
from magic_server.engine.components import connected_regions
from magic_server.labels.clustering import (
    LABEL_PALETTE,
    WORK_PIXELS,
    colour_map,
    first_label_map,
    label_palette,
)
from magic_server.labels.maps import read_label_maps
from magic_server.labels.regions import merge_specks

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def textured_scene(h: int = 120, w: int = 160, seed: int = 0):
    """Smooth sky over grass (strong grain) with a smooth disc of the grass's own mean colour:
    sky and grass differ in colour, grass and disc only in texture. Truth 0 sky, 1 grass,
    2 disc."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), np.uint8)
    truth[h * 2 // 5:] = 1
    yy, xx = np.mgrid[0:h, 0:w]
    truth[(yy - h * 2 // 3) ** 2 + (xx - w * 5 // 8) ** 2 < (h * 0.22) ** 2] = 2
    img = np.empty((h, w, 3), np.float32)
    img[:] = (120, 165, 225)
    img += rng.normal(0, 3, (h, w, 1))
    grass = np.array((70, 140, 50), np.float32)
    grain = rng.normal(0, 28, (h, w, 1)) * np.array([0.8, 1, 0.6], np.float32)
    img[truth == 1] = grass + grain[truth == 1]
    img[truth == 2] = grass + rng.normal(0, 3, (h, w, 3))[truth == 2]
    return np.clip(img, 0, 255).astype(np.uint8), truth


def matched_ious(found: np.ndarray, truth: np.ndarray) -> list[float]:
    """Per-region IoU under the best one-to-one matching of found labels to true regions."""
    n = int(truth.max()) + 1
    best = max(itertools.permutations(range(int(found.max()) + 1), n),
               key=lambda p: sum(np.sum((found == p[k]) & (truth == k)) for k in range(n)))
    return [float(np.sum((found == best[k]) & (truth == k))
                  / np.sum((found == best[k]) | (truth == k))) for k in range(n)]


def test_three_textured_regions_are_recovered():
    img, truth = textured_scene()
    found = first_label_map(img, 3)
    ious = matched_ious(found, truth)
    print("\nper-region IoU:", [round(v, 3) for v in ious])
    assert min(ious) >= 0.9


def test_a_large_photo_is_clustered_on_a_small_copy_and_labelled_at_full_size():
    h, w = 600, 900
    assert h * w > 2 * WORK_PIXELS
    yy, xx = np.mgrid[0:h, 0:w]
    truth = np.where(yy < 0.4 * xx, 0, 1).astype(np.uint8)  # a diagonal boundary
    truth[(yy - 420) ** 2 + (xx - 250) ** 2 < 110 ** 2] = 2
    colours = np.array([(200, 60, 50), (60, 90, 200), (230, 220, 90)], np.float32)
    rng = np.random.default_rng(1)
    img = np.clip(colours[truth] + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    found = first_label_map(img, 3)
    assert found.shape == (h, w)
    ious = matched_ious(found, truth)
    print("\nper-region IoU:", [round(v, 4) for v in ious])
    # the boundary follows the photo's pixels, not the working copy's ~1.6 px grid (nearest
    # upsampling of the working map alone: 0.993 for the disc)
    assert min(ious) >= 0.998


@pytest.mark.parametrize("labels", [2, 5, 16])
def test_every_label_is_used_and_ordered_by_area(labels):
    photo = np.asarray(Image.open(SAMPLES / "coffee.png").convert("RGB"))[::2, ::2].copy()
    found = first_label_map(photo, labels, seed=3)
    assert found.dtype == np.uint8 and found.shape == photo.shape[:2]
    assert set(np.unique(found).tolist()) == set(range(labels))
    areas = np.bincount(found.ravel())
    assert np.all(np.diff(areas) <= 0), areas
    # flat regions: no speck smaller than the tidying allows
    regions, _ = connected_regions(found)
    assert np.bincount(regions.ravel()).min() >= 16


def test_same_seed_same_map():
    img, _ = textured_scene(seed=4)
    assert np.array_equal(first_label_map(img, 4, seed=7), first_label_map(img, 4, seed=7))


def test_fewer_distinct_colours_than_labels_gives_one_label_per_colour():
    truth = np.zeros((40, 60), np.uint8)
    truth[:, 20:] = 1
    truth[25:, 35:] = 2
    colours = np.array([(10, 10, 10), (250, 250, 250), (200, 30, 30)], np.uint8)
    found = first_label_map(colours[truth], 6)
    assert found.max() == 2
    assert min(matched_ious(found, truth)) >= 0.99  # the majority filter rounds corners
    flat = first_label_map(np.full((30, 30, 3), 128, np.uint8), 4)
    assert flat.shape == (30, 30) and not flat.any()


def test_specks_join_the_region_around_them():
    labels = np.zeros((30, 30), np.uint8)
    labels[:, 15:] = 1
    labels[5:7, 3:5] = 2  # a 4-pixel speck inside label 0
    labels[20, 20] = 0  # a 1-pixel speck inside label 1
    tidy = merge_specks(labels, min_area=10)
    expected = np.zeros_like(labels)
    expected[:, 15:] = 1
    assert np.array_equal(tidy, expected)


def test_cancel_and_progress():
    img, _ = textured_scene()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        first_label_map(img, 3, cancel=cancel)
    steps = []
    first_label_map(img, 3, on_progress=lambda done, total: steps.append((done, total)))
    total = steps[-1][1]
    assert [d for d, _ in steps] == list(range(1, total + 1))

    cancel = threading.Event()

    def cancel_after_first(done: int, total: int) -> None:
        cancel.set()

    with pytest.raises(Cancelled):
        first_label_map(img, 3, cancel=cancel, on_progress=cancel_after_first)


def test_bad_inputs_are_refused():
    img, _ = textured_scene()
    for labels in (1, 17):
        with pytest.raises(ValueError, match="between 2 and 16"):
            first_label_map(img, labels)
    with pytest.raises(ValueError, match="uint8"):
        first_label_map(img.astype(np.float32), 3)


# ---------------------------------------------------------------------------- palette


def _segment_distance(p, a, b) -> float:
    d = b - a
    t = np.clip((p - a) @ d / (d @ d), 0, 1)
    return float(np.linalg.norm(p - (a + t * d)))


def test_palette_colours_are_far_apart_and_off_each_others_blends():
    pal = LABEL_PALETTE.astype(np.float64)
    assert pal.shape == (16, 3) and len({tuple(c) for c in LABEL_PALETTE}) == 16
    pairwise = [np.linalg.norm(pal[i] - pal[j]) for i, j in itertools.combinations(range(16), 2)]
    assert min(pairwise) > 80  # read_label_maps snaps within 60
    off_line = min(_segment_distance(pal[k], pal[i], pal[j])
                   for i, j in itertools.combinations(range(16), 2)
                   for k in range(16) if k not in (i, j))
    assert off_line > 40  # read_label_maps calls a colour within 12 of a blend line a blend
    assert np.array_equal(label_palette(3), LABEL_PALETTE[:3])
    with pytest.raises(ValueError):
        label_palette(17)
    with pytest.raises(ValueError):
        colour_map(np.full((2, 2), 3, np.uint8), label_palette(3))


def stripes(n: int, h: int = 40, width: int = 12) -> np.ndarray:
    """n labels side by side, each boundary between two labels only (no junctions)."""
    return np.repeat(np.arange(n, dtype=np.uint8), width)[None].repeat(h, axis=0)


@pytest.mark.parametrize("n", [3, 16])
def test_colour_maps_read_back_as_the_same_labels(n):
    img, _ = textured_scene()
    indices = first_label_map(img, 3) if n == 3 else stripes(n)
    painted = colour_map(indices, label_palette(n))
    maps = read_label_maps(painted, painted)
    assert maps.count == n
    assert np.array_equal(maps.palette[maps.source], painted)
    assert np.array_equal(maps.source, maps.target)


@pytest.mark.parametrize("n", [2, 4, 16])
def test_anti_aliased_target_snaps_to_the_labels_around_each_pixel(n):
    """A target blurred by 1 px (what a soft brush or a resize does to label boundaries) reads
    without error; pixels away from a boundary keep their label; for maps of up to 4 labels
    every blended pixel snaps to one of the two labels it blends."""
    source = stripes(n)
    painted = colour_map(source, label_palette(n))
    blurred = np.rint(gaussian_filter(painted.astype(np.float64), (1, 1, 0), mode="nearest"))
    maps = read_label_maps(painted, blurred.astype(np.uint8))
    found = np.asarray(maps.palette[maps.target])
    column = np.arange(source.shape[1])
    near_boundary = np.abs(((column + 6) % 12) - 6) <= 2
    wanted = colour_map(source, label_palette(n))
    assert np.array_equal(found[:, ~near_boundary], wanted[:, ~near_boundary])
    if n <= 4:
        left = colour_map(np.maximum(source.astype(int) - 1, 0), label_palette(n))
        right = colour_map(np.minimum(source + 1, n - 1), label_palette(n))
        ok = (np.all(found == wanted, -1) | np.all(found == left, -1)
              | np.all(found == right, -1))
        assert ok.all()


# ---------------------------------------------------------------------------- the command


@pytest.fixture
def photo(tmp_path) -> Path:
    img, _ = textured_scene(60, 80)
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    return path


def test_cli_writes_the_map_and_a_target_copy(photo, tmp_path, capsys):
    source, target = tmp_path / "maps" / "source.png", tmp_path / "target.png"
    rc = cli_label_map.main([str(photo), "--labels", "3", "--out", str(source),
                             "--target-copy", str(target), "--seed", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    a, b = np.asarray(Image.open(source)), np.asarray(Image.open(target))
    assert a.shape == (60, 80, 3) and np.array_equal(a, b)
    assert read_label_maps(a, b).count == 3
    assert f"wrote {source}" in out and f"wrote {target}" in out
    assert "pencil" in out and "--source-labels" in out and "--target-labels" in out


@pytest.mark.parametrize("labels", ["1", "17"])
def test_cli_refuses_a_label_count_out_of_range(photo, tmp_path, capsys, labels):
    with pytest.raises(SystemExit) as e:
        cli_label_map.main([str(photo), "--labels", labels, "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "between 2 and 16" in err and "Traceback" not in err


def test_cli_errors_for_missing_or_unreadable_images(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert cli_label_map.main([str(tmp_path / "nope.png"), "--labels", "3", "--out",
                               str(out)]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture at all")
    assert cli_label_map.main([str(junk), "--labels", "3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "junk.png" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_never_overwrites_the_photo(photo, capsys):
    with pytest.raises(SystemExit):
        cli_label_map.main([str(photo), "--labels", "3", "--out", str(photo)])
    assert "the photo itself" in capsys.readouterr().err
