"""The full-size scenes (benchmarks/fullsize.py), issue 17's targets and the report's 100% crops
(benchmarks/run.py, benchmarks/report.py), without the photographs: a tiny package built here,
synthetic scenes, a stand-in engine."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import fullsize
import numpy as np
import pytest
import report
import run
from PIL import Image
from test_quality_report import StandInEngine

# ---------------------------------------------------------------------------- scene metadata


def test_the_committed_scenes_are_four_photographs_of_2_mp_or_more_with_a_licence():
    spec = fullsize.spec()
    assert spec["package"]["licence"].startswith("GPL-2+")
    assert spec["package"]["version"]
    scenes = spec["scenes"]
    assert len(scenes) >= 4
    for name, e in scenes.items():
        w, h = e["size"]
        assert w * h >= 2_000_000, name
        assert e["file"] not in fullsize.HELD_BACK
        assert e["copyright"] and e["object"] and e["background"]
        xs, ys = zip(*e["polygon"])
        assert 0 <= min(xs) and max(xs) < w and 0 <= min(ys) and max(ys) < h, name
        assert set(e["edits"]) == {"move", "copy", "reshape", "remove"}
    kinds = " ".join(e["background"] for e in scenes.values())
    assert "smooth" in kinds and "texture" in kinds
    assert "licence" in spec["hummingbird"]
    # no pixels of the package in the repository
    root = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                             check=False).stdout.split()
    assert not [p for p in tracked if Path(p).name in {e["file"] for e in scenes.values()}]


def test_edits_are_derived_from_the_polygon_with_their_transforms():
    square = [[20, 10], [59, 10], [59, 49], [20, 49]]
    source, guides, transforms = fullsize.edits_from_polygon(square, (100, 120), (15, 40), 1.5)
    assert source.sum() == 40 * 40
    assert np.array_equal(guides["move"], fullsize.shifted(source, 15, 40))
    assert np.array_equal(guides["copy"], source | guides["move"])
    assert not guides["remove"].any()
    assert transforms["move"] == transforms["copy"] == (1.0, 1.0, 15.0, 40.0)
    # the reshape: 1.5x about the centroid, and its transform maps the source onto it
    assert guides["reshape"].sum() == pytest.approx(1.5**2 * 1600, rel=0.08)
    sy, sx, ty, tx = transforms["reshape"]
    ys, xs = np.nonzero(source)
    gy, gx = np.nonzero(guides["reshape"])
    assert sy * ys.mean() + ty == pytest.approx(gy.mean(), abs=1)
    assert sx * xs.mean() + tx == pytest.approx(gx.mean(), abs=1)


def _tiny_deb(tmp_path: Path) -> Path:
    """A stand-in mate-backgrounds .deb with one small 'photograph' per committed scene."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not available")
    spec = fullsize.spec()
    pkg = tmp_path / "pkg"
    folder = pkg / spec["package"]["folder"]
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for e in spec["scenes"].values():
        w, h = e["size"]
        Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)).resize(
            (w, h)).save(folder / e["file"], quality=70)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: mate-backgrounds\nVersion: 9.9-test\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: stand-in\n")
    deb = tmp_path / "mate-backgrounds_9.9-test_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(pkg), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_fetch_unpacks_into_the_cache_and_scenes_record_the_package_version(tmp_path):
    deb = _tiny_deb(tmp_path)
    cache = tmp_path / "cache"
    messages = []
    unpacked = fullsize.fetch(cache, deb, log=messages.append)
    assert (unpacked / "VERSION").read_text().strip() == "9.9-test"
    scenes = fullsize.load_scenes(["raindrops", "hummingbird"], cache=cache, log=messages.append)
    assert [s.name for s in scenes] == ["raindrops"]  # no hummingbird folder given: skipped
    assert any("skipping the hummingbird" in m and "--hummingbird" in m for m in messages)
    sc = scenes[0]
    assert sc.image.shape[:2] == (1200, 1920)
    assert "GPL-2+" in sc.licence and "9.9-test" in sc.licence
    assert set(sc.guides) == {"move", "copy", "reshape", "remove"}
    # a second call finds the cache and does not need the .deb
    assert fullsize.fetch(cache, None, log=messages.append) == unpacked


def test_the_hummingbird_comes_from_the_papers_folder_with_its_masks_scaled(tmp_path):
    root = tmp_path / "magic"
    (root / "input_images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.full((160, 250, 3), 90, np.uint8)).save(root / "input_images" /
                                                                "hummingbird.jpg")
    src = np.zeros((40, 62), np.uint8)
    src[10:20, 5:20] = 255
    Image.fromarray(src).save(root / "labels" / "gt_hummingbird.jpg")
    Image.fromarray(np.roll(src, 30, axis=1)).save(root / "labels" / "target_hummingbird.jpg")
    sc = fullsize.load_hummingbird(root)
    assert sc.source_mask.shape == (160, 250) and set(sc.guides) == {"move"}
    sy, sx, ty, tx = sc.transforms["move"]
    assert (sy, sx) == (1.0, 1.0) and abs(ty) <= 1 and tx == pytest.approx(30 * 250 / 62, abs=3)
    with pytest.raises(fullsize.FullsizeError, match="missing"):
        fullsize.load_hummingbird(tmp_path / "nowhere")


# ---------------------------------------------------------------------------- targets, crops


def test_full_resolution_targets_say_met_or_missed_by_how_much():
    q = {"fullres": {"seam": 1.5, "edges": math.nan, "changed_outside": 0.004,
                     "object_structure": 0.6, "beyond_selection_px": None}}
    ts = {t["name"]: t for t in run.fullres_targets(q, "move")}
    assert ts["seam"]["missed_by"] == pytest.approx(0.3)
    assert ts["edges"]["met"]  # no fill: nothing to miss
    assert ts["changed outside"]["missed_by"] == pytest.approx(0.003)
    assert ts["object structure"]["missed_by"] == pytest.approx(0.2)
    q["fullres"].update(seam=1.1, changed_outside=0.0005, beyond_selection_px=12)
    ts = {t["name"]: t for t in run.fullres_targets(q, "remove")}
    assert ts["seam"]["met"] and ts["changed outside"]["met"]
    assert "object structure" not in ts
    assert not ts["beyond selection"]["met"] and ts["beyond selection"]["missed_by"] == 12


def test_crops_are_the_photos_own_pixels_at_the_old_and_new_place():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 255, (900, 1400, 3), dtype=np.uint8)
    source = np.zeros((900, 1400), bool)
    source[400:500, 100:200] = True
    guide = np.roll(source, 1000, axis=1)
    result = photo.copy()
    result[guide] = 7
    pic = np.asarray(report.crops_picture(photo, source, guide, [("MAGIC", result)], size=300))
    assert pic.shape == (2 * (300 + report.CROP_CAPTION_H) + report.GAP,
                         2 * 300 + report.GAP, 3)
    top = report.CROP_CAPTION_H
    y0, x0, y1, x1 = report.crop_box(900, 1400, 450, 150, 300)
    np.testing.assert_array_equal(pic[top:top + 300, :300], photo[y0:y1, x0:x1])
    row2 = 2 * top + 300 + report.GAP
    y0, x0, y1, x1 = report.crop_box(900, 1400, 450, 1150, 300)
    np.testing.assert_array_equal(pic[row2:row2 + 300, 300 + report.GAP:],
                                  result[y0:y1, x0:x1])
    # a crop near the border slides inside the image
    assert report.crop_box(900, 1400, 10, 1395, 300) == (0, 1100, 300, 1400)


# ---------------------------------------------------------------------------- run.py --fullsize


def _synthetic_fullsize(names, **_):
    h, w = 300, 480
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([60 + xx // 4, 90 + yy // 4, 120 + 0 * xx], -1).astype(np.uint8)
    poly = [[60, 100], [140, 100], [140, 180], [60, 180]]
    source, guides, transforms = fullsize.edits_from_polygon(poly, (h, w), (20, 220), 1.3)
    img[source] = (220, 40, 40)
    return [fullsize.Scene("synth", img, source, guides, "test licence",
                               {m: m for m in guides}, transforms)]


class StartingEngine(StandInEngine):
    """The stand-in engine, taking a start image (and recording which it got)."""

    def __init__(self):
        super().__init__()
        self.inits = []

    def synthesize(self, image, source_mask, guide_mask, options, on_progress=None,
                   cancel=None, init_image=None):
        self.inits.append(init_image)
        return super().synthesize(image, source_mask, guide_mask, options, on_progress)


def test_fullsize_runs_every_start_and_reports_crops_and_the_new_figures(tmp_path, monkeypatch):
    engine = StartingEngine()
    monkeypatch.setattr(run, "load_engine", lambda dev, weights, log: engine)
    monkeypatch.setattr(run.fullsize_mod, "load_scenes", _synthetic_fullsize)
    monkeypatch.setattr(run.fullsize_mod, "scene_names", lambda: ["synth"])
    report_path = tmp_path / "r" / "full.md"
    rc = run.main(["--fullsize", "--edits", "synth:move,synth:remove", "--device", "cpu",
                   "--iterations", "2", "--start", "noise,cut-paste", "--crop", "128",
                   "--out", str(tmp_path / "o"), "--report", str(report_path)])
    assert rc == 0
    payload = json.loads((tmp_path / "o" / "results.json").read_text())
    recs = payload["records"]
    # a removal from cut-paste would be the removal from noise again: run once
    assert [(r["mode"], r["start"]) for r in recs] == [
        ("move", "noise"), ("move", "cut-paste"), ("remove", "noise")]
    assert all(r["resolution"] == 224 and r["samples"] == 1 for r in recs)
    # masks only, then from the composite made with the scene's known transform
    scene = _synthetic_fullsize(["synth"])[0]
    assert engine.inits[0] is None and engine.inits[2] is None and len(engine.inits) == 3
    expected = scene.image.copy()
    expected[scene.guides["move"]] = np.roll(scene.image, (20, 220), (0, 1))[scene.guides["move"]]
    np.testing.assert_array_equal(engine.inits[1], expected)
    move = recs[0]
    assert move["image_size"] == [480, 300]
    f = move["quality"]["fullres"]
    assert f["object_structure"] is not None and f["beyond_selection_px"] is None
    assert f["edges_whole_ring"] >= 0 or math.isnan(f["edges_whole_ring"])
    assert "cut-paste + heal" in move["peers"] and "fullres" in move["peers"]["cut-paste"]
    assert {t["name"] for t in move["fullres_targets"]} >= {"seam", "edges", "changed outside",
                                                           "object structure"}
    assert "beyond selection" in {t["name"] for t in recs[2]["fullres_targets"]}
    text = report_path.read_text()
    assert "## At the photo's own resolution (issue 17)" in text
    assert "| row | seam | edges | edges (whole ring) | edges (object) |" in text
    for r in recs:
        assert (report_path.parent / r["crops"]).is_file()
        assert f"]({r['crops']})" in text
    assert "test licence" in text


def test_fullsize_unknown_scene_is_a_one_line_error(capsys):
    assert run.main(["--fullsize", "--scenes", "nosuch", "--no-report"]) == 2
    assert "unknown full-size scene" in capsys.readouterr().err


def test_the_worst_rim_crop_finds_a_step_where_the_changes_end():
    rng = np.random.default_rng(2)
    photo = np.clip(120 + rng.normal(0, 1.5, (400, 600, 3)), 0, 255).astype(np.uint8)
    source = np.zeros((400, 600), bool)
    source[180:220, 100:140] = True
    guide = np.zeros_like(source)
    result = photo.copy()
    result[150:250, 70:170] = 120  # a flat fill beyond the mask ...
    result[150:250, 150:170] = 150  # ... whose right edge is a tone step
    y, x = report.worst_rim_centre(photo, result, source, guide)
    assert 150 <= y < 250 and abs(x - 169) <= 10
    pic = report.crops_picture(photo, source, guide, [("MAGIC", result)], size=100,
                               rim_from=result)
    assert pic.width == 2 * 100 + report.GAP  # old place and the worst rim
    assert report.worst_rim_centre(photo, photo.copy(), source, guide) is None


def test_the_classifier_terms_benchmark_measures_full_size_scenes(tmp_path, monkeypatch, capsys):
    # issue 19's measurement on the full-size scenes: the same figures, and issue 17's beside
    import classifier_terms

    monkeypatch.setattr(run.fullsize_mod, "load_scenes", _synthetic_fullsize)
    rc = classifier_terms.main(["--fullsize", "--edits", "synth:move", "--weights", "untrained",
                                "--configs", "off", "--iterations", "2", "--resolution", "64",
                                "--out", str(tmp_path)])
    assert rc == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    (rec,) = payload["records"]
    assert rec["scene"] == "synth" and rec["config"] == "off"
    assert rec["quality"]["fullres"]["object_structure"] is not None
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("| edit | terms |"))
    assert "| edges |" in header and "| object_structure |" in header
    assert (tmp_path / "synth_move.jpg").is_file()
