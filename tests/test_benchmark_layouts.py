"""benchmarks/layouts.py and its pieces: the label-by-label PatchMatch peer, the multi-class
judge, the report section between its markers, and benchmarks/run.py keeping that section."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
import label_judge
import layouts
import report
import run


def three_labels(h: int = 60, w: int = 80):
    """Blue sky over green grass with a dark tree; the target moves the tree right."""
    rng = np.random.default_rng(0)
    source = np.zeros((h, w), np.uint8)
    source[h // 2:] = 1
    source[10:45, 10:24] = 2
    colours = np.array([(110, 160, 230), (70, 160, 60), (40, 70, 30)], np.float64)
    photo = np.clip(colours[source] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    target = source.copy()
    target[10:45, 10:24] = np.where(np.arange(10, 45)[:, None] < h // 2, 0, 1)
    target[10:45, 50:64] = 2
    return photo, source, target, colours


def test_peer_fills_each_changed_region_from_its_own_label_only():
    pytest.importorskip("patchmatch")
    photo, source, target, colours = three_labels()
    image, hole = layouts.label_peer(photo, source, target)
    assert np.array_equal(image[~hole], photo[~hole])
    for k in range(3):
        filled = hole & (target == k) & (source != target)
        nearest = np.linalg.norm(image[filled][:, None].astype(float) - colours[None], axis=-1)
        assert (nearest.argmin(1) == k).mean() > 0.95, k


def test_judge_knows_the_photo_and_sees_a_moved_region_where_it_went():
    photo, source, _target, _ = three_labels()
    judge = label_judge.LabelJudge(photo, source)
    assert label_judge.mean_iou(judge.labels(photo), source) > 0.9
    moved = photo.copy()
    moved[10:45, 50:64] = photo[10:45, 10:24]
    seen = judge.labels(moved)
    assert (seen[14:41, 53:61] == 2).mean() > 0.9


def test_per_label_iou_counts_labels_seen_but_not_wanted():
    wanted = np.zeros((4, 4), int)
    seen = wanted.copy()
    seen[0, 0] = 1
    ious = label_judge.per_label_iou(seen, wanted)
    assert ious[1] == 0.0 and ious[0] == pytest.approx(15 / 16)


def test_marked_section_is_replaced_or_appended():
    body = "## Layout edits\n\nnew table"
    text = "# Report\n\nintro\n"
    once = report.with_marked_section(text, "layout-edits", body)
    assert once.startswith("# Report") and once.rstrip().endswith("<!-- layout-edits:end -->")
    assert report.marked_section(once, "layout-edits").count("new table") == 1
    again = report.with_marked_section(once + "\ntail\n", "layout-edits", "other")
    assert "new table" not in again and "other" in again and again.endswith("tail\n")
    assert report.with_marked_section("", "x", "b") == "<!-- x:start -->\nb\n<!-- x:end -->\n"


def test_run_py_keeps_the_layout_section_when_it_rewrites_the_report(tmp_path):
    report_path = tmp_path / "benchmarks.md"
    kept = "## Layout edits (label maps)\n\n| a | b |"
    report_path.write_text(report.with_marked_section("# old report\n", "layout-edits", kept))
    args = argparse.Namespace(quick=False)
    run.write_outputs([], [], args, [], time.time(), tmp_path, report_path)
    text = report_path.read_text()
    assert "# old report" not in text and text.startswith("# Benchmarks")
    section = report.marked_section(text, "layout-edits")
    assert section is not None and kept in section
    run.write_outputs([], [], args, [], time.time(), tmp_path, report_path)
    assert report_path.read_text().count("<!-- layout-edits:start -->") == 1


def test_section_has_the_table_and_the_findings(tmp_path):
    row = {"region_iou": 0.5, "image_iou": 0.9, "coherence": 0.8, "noise_figure": 1.0,
           "max_abs_outside": 0, "seconds": 1.0}
    payload = {
        "machine": {"command": "python benchmarks/layouts.py", "date": "today", "cpu": "cpu",
                    "cpu_count": 2, "threads": 1, "cuda": None, "torch": "2", "python": "3",
                    "wall_s": 1.0},
        "preset": "draft", "resolution": 160, "samples": 2, "seed": 0,
        "weights": "untrained (random weights)",
        "ceilings": {"coins": {"image_iou": 0.93, "paint_region_iou": 0.9}},
        "pictures": {"coins": "benchmarks-layout/coins.jpg"},
        "records": [{"scene": "coins", "edit": "paint", "description": "a new coin",
                     "changed_share": 0.01, "diversity": 2.0,
                     "rows": {"photo": row, "peer": row, "product 1": row,
                              "product 2": row}}],
    }
    text = layouts.section(payload, "The product wins on coins.")
    assert "python benchmarks/layouts.py" in text and "untrained" in text
    assert "| coins | paint: a new coin" in text and "**product**" in text
    assert "](benchmarks-layout/coins.jpg)" in text and "The product wins on coins." in text
    out = tmp_path / "docs" / "benchmarks.md"
    layouts.write_section(out, text)
    layouts.write_section(out, text)
    assert out.read_text().count("## Layout edits") == 1
