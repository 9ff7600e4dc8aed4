"""samples/: index.json follows the shared schema, the files are there and consistent, the
licences are recorded, and the masks are exactly what samples/make_masks.py draws."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
INDEX = json.loads((SAMPLES / "index.json").read_text(encoding="utf-8"))
SCENES = INDEX["scenes"]
MODES = ("move", "copy", "reshape", "remove")


def load_mask(rel: str) -> np.ndarray:
    im = Image.open(SAMPLES / rel)
    assert im.mode == "L", f"{rel} is {im.mode}, expected 8-bit grayscale"
    a = np.asarray(im)
    assert set(np.unique(a)) <= {0, 255}, f"{rel} is not strictly black/white"
    return a == 255


def test_index_has_a_default_scene_and_at_least_six_scenes():
    assert INDEX["default"] in SCENES
    assert len(SCENES) >= 6


@pytest.mark.parametrize("name", sorted(SCENES))
def test_scene_entry_follows_the_schema(name):
    e = SCENES[name]
    assert {"image", "source_mask", "guides", "licence", "origin"} <= set(e)
    assert set(e["guides"]) == set(MODES)
    assert e["licence"].strip() and e["origin"].strip()
    for rel in [e["image"], e["source_mask"], *e["guides"].values()]:
        assert not Path(rel).is_absolute() and (SAMPLES / rel).is_file(), rel


@pytest.mark.parametrize("name", sorted(SCENES))
def test_photo_is_small_rgb_and_masks_match_its_size(name):
    e = SCENES[name]
    photo = Image.open(SAMPLES / e["image"])
    assert photo.format == "PNG" and photo.mode == "RGB"
    assert max(photo.size) <= 512
    src = load_mask(e["source_mask"])
    assert src.shape == (photo.height, photo.width)
    assert 0.003 < src.mean() < 0.5  # marks an object, not the whole photo
    for mode, rel in e["guides"].items():
        g = load_mask(rel)
        assert g.shape == src.shape, (mode, rel)
        assert g.any() and not g.all(), (mode, rel)  # the engine needs a non-empty guide


@pytest.mark.parametrize("name", sorted(SCENES))
def test_guides_follow_magic_semantics(name):
    e = SCENES[name]
    src = load_mask(e["source_mask"])
    g = {m: load_mask(p) for m, p in e["guides"].items()}
    # remove: the source mask without one object -> a strict subset
    assert not (g["remove"] & ~src).any()
    assert g["remove"].sum() < src.sum()
    # copy: keeps everything and adds the copy
    assert not (src & ~g["copy"]).any()
    assert g["copy"].sum() > src.sum()
    # move: same amount of object (up to overlaps and the border), in a different place
    assert (g["move"] != src).any()
    assert abs(int(g["move"].sum()) - int(src.sum())) < 0.2 * src.sum()
    # reshape: different shape, the other objects untouched
    assert (g["reshape"] != src).any()


def test_every_scene_licence_is_recorded_in_licenses_md():
    text = (SAMPLES / "LICENSES.md").read_text(encoding="utf-8")
    for name, e in SCENES.items():
        assert e["image"] in text, name
    for word in ("CC0", "public domain", "No known copyright restrictions"):
        assert word.lower() in text.lower()


def test_samples_readme_documents_the_remove_choice():
    text = " ".join((SAMPLES / "README.md").read_text(encoding="utf-8").split())
    assert "remove" in text and "never empty" in text


def test_make_masks_reproduces_the_committed_masks_and_index(tmp_path):
    subprocess.run([sys.executable, str(SAMPLES / "make_masks.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    assert json.loads((tmp_path / "index.json").read_text()) == INDEX
    for e in SCENES.values():
        for rel in [e["source_mask"], *e["guides"].values()]:
            fresh = np.asarray(Image.open(tmp_path / rel))
            committed = np.asarray(Image.open(SAMPLES / rel))
            assert np.array_equal(fresh, committed), rel


# ---------------------------------------------------------------------------- layout edits

LAYOUT_SCENES = sorted(n for n, e in SCENES.items() if "layouts" in e)
LAYOUT_EDITS = ("rearrange", "paint", "remove")


def load_label_map(rel: str) -> np.ndarray:
    im = Image.open(SAMPLES / rel)
    assert im.mode == "RGB", f"{rel} is {im.mode}, expected flat RGB colours"
    return np.asarray(im)


def test_at_least_two_scenes_have_layout_edits():
    assert len(LAYOUT_SCENES) >= 2


@pytest.mark.parametrize("name", LAYOUT_SCENES)
def test_layout_entry_follows_the_schema(name):
    lay = SCENES[name]["layouts"]
    assert {"source", "targets", "edits", "labels"} <= set(lay)
    assert set(lay["targets"]) == set(LAYOUT_EDITS) == set(lay["edits"])
    assert all(lay["edits"][m].strip() for m in LAYOUT_EDITS)
    for rel in [lay["source"], *lay["targets"].values()]:
        assert not Path(rel).is_absolute() and (SAMPLES / rel).is_file(), rel


@pytest.mark.parametrize("name", LAYOUT_SCENES)
def test_every_target_map_reads_with_its_source_and_asks_for_a_change(name):
    from magic_server.labels.maps import read_label_maps

    e = SCENES[name]
    lay = e["layouts"]
    photo = Image.open(SAMPLES / e["image"])
    source = load_label_map(lay["source"])
    assert source.shape[:2] == (photo.height, photo.width)
    colours = {c.split(":")[0] for c in lay["labels"].values()}
    for edit, rel in lay["targets"].items():
        maps = read_label_maps(source, load_label_map(rel))
        assert maps.count == len(lay["labels"]), (edit, maps.count)
        assert {"#" + bytes(c.tolist()).hex() for c in maps.palette} == colours
        changed = (maps.source != maps.target).mean()
        assert 0.002 < changed < 0.2, (edit, changed)  # an edit, not a new photo


def test_make_label_maps_reproduces_the_committed_maps_and_index(tmp_path):
    subprocess.run([sys.executable, str(SAMPLES / "make_label_maps.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True, timeout=300)
    fresh_index = json.loads((tmp_path / "index.json").read_text())
    assert fresh_index == INDEX
    for name in LAYOUT_SCENES:
        lay = SCENES[name]["layouts"]
        for rel in [lay["source"], *lay["targets"].values()]:
            fresh = np.asarray(Image.open(tmp_path / rel))
            committed = np.asarray(Image.open(SAMPLES / rel))
            # k-means sums in float32 (BLAS): another CPU may flip a few boundary pixels
            assert np.all(fresh == committed, axis=-1).mean() > 0.995, rel
