"""benchmarks/run.py and benchmarks/report.py: timing, memory and quality bookkeeping with a
stand-in engine whose timings are known, the files a run writes, and the report's contents."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
import report
import run

from magic_server.engine.api import EngineDescription, Progress, SynthesisResult

ITER_S = 0.03
FORWARD_S = 0.01


class SlowForward(torch.nn.Module):
    def forward_with_features(self, x, stop_after_features=False):
        time.sleep(FORWARD_S)
        return x.mean(dim=(1, 2, 3)), []


class StandInEngine:
    """Follows Engine's interface; every iteration takes ITER_S, previews when asked."""

    def __init__(self, label="untrained (random weights)"):
        self.device = torch.device("cpu")
        self.classifier = SlowForward()
        self.weights_label = label
        self.calls = []

    def describe(self):
        return EngineDescription(device="cpu", device_name="CPU", gpu_memory_mb=None,
                                 weights_label=self.weights_label,
                                 weights_loaded=not self.weights_label.startswith("untr"),
                                 preset_iterations={})

    def warm_up(self):
        pass

    def synthesize(self, image, source_mask, guide_mask, options, on_progress=None, cancel=None):
        self.calls.append(options)
        total = options.iterations or 6
        t0 = time.monotonic()
        for step in range(1, 4):
            on_progress(Progress(step, 3, time.monotonic() - t0, stage="mask-net"))
        for it in range(1, total + 1):
            time.sleep(ITER_S)
            previews = None
            if options.preview_every and it % options.preview_every == 0:
                previews = [image[::4, ::4]] * options.samples
            on_progress(Progress(it, total, time.monotonic() - t0, {}, previews))
        # sample i: the photo with the changed pixels (source XOR guide) painted in a distinct
        # grey (differs between seeds)
        images = []
        for i in range(options.samples):
            img = image.copy()
            img[guide_mask ^ source_mask] = 60 + 40 * i
            images.append(img)
        return SynthesisResult(images, [options.seed + i for i in range(options.samples)], 0,
                               total, time.monotonic() - t0)


@pytest.fixture(scope="module")
def coffee():
    return run.load_scenes(["coffee"])[0]


def test_run_edit_measures_iteration_time_forward_cost_and_first_preview(coffee):
    engine = StandInEngine()
    rec, images = run.run_edit(engine, coffee, "move", "tiny", 64, 2, 0, 8, lambda m: None)
    assert len(images) == 2
    assert rec.iterations == 8 and rec.samples == 2 and rec.mode == "move"
    assert engine.calls[0].preview_every == 2 and engine.calls[0].iterations == 8
    assert rec.seconds_per_iteration == pytest.approx(ITER_S, rel=0.5)
    assert rec.forward_seconds == pytest.approx(FORWARD_S, rel=0.8)
    assert rec.iteration_cost_forwards == pytest.approx(
        rec.seconds_per_iteration / rec.forward_seconds)
    assert rec.first_preview_s is not None
    assert 2 * ITER_S * 0.8 <= rec.first_preview_s < rec.result_s
    assert rec.result_s >= 8 * ITER_S
    assert rec.peak_rss_mb > 10 and rec.peak_gpu_mb is None
    assert rec.weights_trained is False


def test_measure_quality_on_a_stand_in_result(coffee):
    engine = StandInEngine()
    _, images = run.run_edit(engine, coffee, "remove", "tiny", 64, 2, 0, 2, lambda m: None)
    seg = run.quality.ObjectSegmenter(coffee.image, coffee.source_mask)
    q = run.measure_quality(coffee, "remove", images, seg)
    # only pixels where the masks differ changed, all inside the edit region
    assert q["psnr_outside"] == math.inf and q["max_abs_outside"] == 0
    # the two samples differ by 40 grey levels on the guide, nothing elsewhere
    assert 0 < q["diversity"] < 40
    assert 0 <= q["guide_iou"] <= 1 and 0 <= q["segmenter_ceiling_iou"] <= 1
    assert q["coherence_ratio"] > 0
    assert len(q["per_sample"]) == 2


def test_edit_plan_parsing():
    assert run.edit_plan("coffee:move,coffee:remove,rocket:copy", None, None) == {
        "coffee": ["move", "remove"], "rocket": ["copy"]}
    plan = run.edit_plan(None, "coffee,chelsea", "move")
    assert plan == {"coffee": ["move"], "chelsea": ["move"]}
    assert len(run.edit_plan(None, None, None)) >= 6
    with pytest.raises(run.BenchError):
        run.edit_plan("coffee-move", None, None)
    with pytest.raises(run.BenchError):
        run.edit_plan("coffee:teleport", None, None)


def test_unknown_scene_is_a_one_line_error(tmp_path, capsys):
    rc = run.main(["--edits", "nosuch:move", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown scene" in err and "coffee" in err
    assert "Traceback" not in err


def test_main_writes_json_report_and_pictures(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "load_engine", lambda dev, weights, log: StandInEngine())
    report_path = tmp_path / "docs" / "benchmarks.md"
    rc = run.main(["--edits", "coffee:move,chelsea:remove", "--device", "cpu",
                   "--iterations", "4", "--resolution", "64", "--out", str(tmp_path / "o"),
                   "--report", str(report_path)])
    assert rc == 0
    payload = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [(r["scene"], r["mode"]) for r in payload["records"]] == [
        ("coffee", "move"), ("chelsea", "remove")]
    assert payload["machine"]["cpu_count"] >= 1
    text = report_path.read_text()
    for pic in ("benchmarks/coffee_cpu.jpg", "benchmarks/chelsea_cpu.jpg"):
        assert (report_path.parent / pic).is_file()
        assert f"]({pic})" in text
    # every quality row names the classifier weights, and untrained runs say so up front
    quality_rows = text.split("## Quality")[1].split("## Beside the hand-made peers")[0]
    data_rows = [r for r in quality_rows.splitlines()
                 if r.startswith(("| coffee", "| chelsea"))]
    assert len(data_rows) == 2
    assert all("untrained (random weights)" in r for r in data_rows)
    assert "UNTRAINED classifier" in text
    assert "## Speed" in text and "s / iteration" in text
    assert "CC0" in text  # licences table


def test_report_with_trained_weights_has_no_untrained_warning(tmp_path, monkeypatch):
    label = "quasi-robust ResNet-50 (l2, eps 0.05)"
    monkeypatch.setattr(run, "load_engine", lambda dev, weights, log: StandInEngine(label))
    rc = run.main(["--edits", "coffee:copy", "--device", "cpu", "--iterations", "2",
                   "--out", str(tmp_path), "--samples", "2"])
    assert rc == 0
    text = (tmp_path / "report.md").read_text()
    assert "UNTRAINED classifier" not in text
    assert f"**Classifier weights: {label}.**" in text


def test_picture_grid_has_one_row_per_edit_and_all_samples():
    img = np.zeros((60, 90, 3), np.uint8)
    mask = np.zeros((60, 90), bool)
    mask[10:20, 10:20] = True
    rows = [("move", mask, [img, img, img], None), ("copy", mask, [img], None)]
    grid = report.picture_grid(img, mask, rows)
    tile_w = round(90 * report.TILE_H / 60)
    assert grid.height == 2 * (report.TILE_H + report.CAPTION_H) + report.GAP
    # input | masks | 3 samples
    assert grid.width == 5 * tile_w + 4 * report.GAP
    # with the cut-paste + heal peer: input | masks | peer | samples
    heal = np.full_like(img, 200)
    grid = report.picture_grid(img, mask, [("move", mask, [img, img], None, heal)])
    assert grid.width == 5 * tile_w + 4 * report.GAP
    x = 2 * (tile_w + report.GAP) + tile_w // 2
    assert grid.getpixel((x, report.CAPTION_H + 20)) == (200, 200, 200)


# ---------------------------------------------------------------------------- peers, targets


def _figures(**over):
    q = {"coherence_ratio": 0.6, "completeness_ratio": 0.5, "guide_iou": 0.8,
         "segmenter_ceiling_iou": 0.9, "noise_figure": 1.0, "outside_identical": True,
         "max_abs_outside": 0, "diversity": 5.0, "object_left": None}
    q.update(over)
    return q


def test_targets_say_met_or_missed_by_how_much():
    peers = {"cut-paste + heal": _figures(coherence_ratio=0.62)}
    ts = {t["name"]: t for t in run.targets(_figures(), peers, "move")}
    assert set(ts) == {"coherence", "completeness", "guide IoU", "noise figure", "outside",
                       "diversity"}
    assert all(t["met"] and t["missed_by"] is None for t in ts.values())
    bad = _figures(coherence_ratio=0.9, completeness_ratio=1.3, guide_iou=0.5,
                   noise_figure=0.4, outside_identical=False, max_abs_outside=7, diversity=0.0)
    ts = {t["name"]: t for t in run.targets(bad, peers, "move")}
    assert not any(t["met"] for t in ts.values())
    assert ts["coherence"]["missed_by"] == pytest.approx(0.28)
    assert ts["completeness"]["missed_by"] == pytest.approx(0.2)
    assert ts["guide IoU"]["missed_by"] == pytest.approx(0.8 * 0.9 - 0.5)
    assert ts["noise figure"]["missed_by"] == pytest.approx(0.3)
    assert ts["outside"]["missed_by"] == 7
    noisy = {t["name"]: t for t in run.targets(_figures(noise_figure=1.5), peers, "copy")}
    assert noisy["noise figure"]["missed_by"] == pytest.approx(0.2)
    removal = {t["name"]: t for t in run.targets(
        _figures(object_left=0.3, coherence_ratio=1.2), {"cut-paste + heal": _figures(
            coherence_ratio=1.3)}, "remove")}
    assert removal["object left"]["missed_by"] == pytest.approx(0.25)
    assert removal["coherence (remove)"]["missed_by"] == pytest.approx(0.2)
    assert removal["coherence"]["met"]  # below the peer's, yet above 1.0
    summary = run.targets_summary(list(removal.values()))
    assert summary.startswith("6/8 met") and "object left 30.0% (by 25.0%)" in summary


def test_report_puts_the_peers_beside_the_product_with_the_targets(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "load_engine", lambda dev, weights, log: StandInEngine())
    report_path = tmp_path / "report.md"
    rc = run.main(["--edits", "coffee:remove", "--device", "cpu", "--iterations", "2",
                   "--resolution", "64", "--out", str(tmp_path), "--report", str(report_path)])
    assert rc == 0
    rec = json.loads((tmp_path / "results.json").read_text())["records"][0]
    assert list(rec["peers"]) == ["photo", "cut-paste + heal"]  # a removal pastes nothing
    assert rec["peers"]["photo"]["object_left"] > 0.8
    assert rec["peers"]["cut-paste + heal"]["object_left"] <= 0.05
    assert rec["peers"]["cut-paste + heal"]["outside_identical"]
    names = [t["name"] for t in rec["targets"]]
    assert "object left" in names and "coherence (remove)" in names
    text = report_path.read_text()
    section = text.split("## Beside the hand-made peers")[1].split("## Pictures")[0]
    assert "| cut-paste + heal |" in section and "| **MAGIC tiny** |" in section
    assert "| object left | <= 5% |" in section
    assert "cut-paste + heal (the hand-made peer)" in text
    # the hand-written findings have their place beside the targets and survive a re-render
    assert report.marked_section(section, report.FINDINGS) is not None
    report_path.write_text(report.with_marked_section(text, report.FINDINGS, "Loses: reshapes."))
    assert report.main([str(tmp_path / "results.json"), str(report_path)]) == 0
    again = report_path.read_text()
    assert "Loses: reshapes." in report.marked_section(again, report.FINDINGS)
    assert again.count("<!-- findings:start -->") == 1
    assert again.index("Loses: reshapes.") < again.index("## Pictures")


def test_no_report_prints_the_table_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "load_engine", lambda dev, weights, log: StandInEngine())
    out = tmp_path / "o"
    rc = run.main(["--edits", "coffee:move", "--device", "cpu", "--iterations", "2",
                   "--resolution", "64", "--out", str(out), "--no-report"])
    assert rc == 0
    assert not out.exists()
    printed = capsys.readouterr().out
    for row in ("photo", "cut-paste", "cut-paste + heal", "MAGIC tiny (noise)", "targets:"):
        assert row in printed
    assert "coher." in printed and "noise" in printed and "IoU/ceil" in printed


def test_start_from_the_cut_paste_passes_it_to_the_engine(tmp_path, monkeypatch):
    seen = {}

    class Recording(StandInEngine):
        def synthesize(self, image, source_mask, guide_mask, options, on_progress=None,
                       cancel=None, init_image=None):
            seen["init"] = init_image
            return super().synthesize(image, source_mask, guide_mask, options, on_progress)

    monkeypatch.setattr(run, "load_engine", lambda dev, weights, log: Recording())
    rc = run.main(["--edits", "coffee:move", "--device", "cpu", "--iterations", "2",
                   "--resolution", "64", "--no-report", "--no-peers", "--start", "cut-paste"])
    assert rc == 0
    scene = run.load_scenes(["coffee"])[0]
    expected = run.peers_mod.cut_paste(scene.image, scene.source_mask, scene.guides["move"],
                                       "move")
    np.testing.assert_array_equal(seen["init"], expected)


def test_peers_only_needs_no_engine(tmp_path, monkeypatch, capsys):
    def no_engine(*_):
        raise AssertionError("--peers-only must not load an engine")

    monkeypatch.setattr(run, "load_engine", no_engine)
    rc = run.main(["--edits", "chelsea:copy", "--peers-only", "--out", str(tmp_path / "o")])
    assert rc == 0 and not (tmp_path / "o").exists()
    printed = capsys.readouterr().out
    assert "chelsea copy: a third eye on the forehead" in printed
    assert "cut-paste + heal" in printed and "MAGIC" not in printed
