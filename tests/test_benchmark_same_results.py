"""benchmarks/same_results.py: what a behaviour-keeping change is checked with."""

from __future__ import annotations

import json

import numpy as np
import same_results
from PIL import Image


def _run(folder, pixel, iou, seconds):
    folder.mkdir()
    Image.fromarray(np.full((4, 4, 3), pixel, np.uint8)).save(folder / "coffee_move.png")
    (folder / "results.json").write_text(json.dumps({
        "machine": {"load_avg": [seconds]},
        "records": [{"scene": "coffee", "guide_iou": iou, "seam": float("nan"),
                     "seconds_per_iteration": seconds,
                     "peak_rss_mb": 100 * seconds}]}))
    return folder


def test_timings_may_differ_pixels_and_figures_may_not(tmp_path, capsys):
    before = _run(tmp_path / "before", 10, 0.8, 1.0)
    assert same_results.main([str(before), str(_run(tmp_path / "slower", 10, 0.8, 2.5))]) == 0
    assert same_results.main([str(before), str(_run(tmp_path / "iou", 10, 0.81, 1.0))]) == 1
    assert "records[0].guide_iou: 0.8 -> 0.81" in capsys.readouterr().out
    assert same_results.main([str(before), str(_run(tmp_path / "pixel", 11, 0.8, 1.0))]) == 1
    assert "coffee_move.png: pixels differ" in capsys.readouterr().out
