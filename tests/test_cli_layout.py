"""magic-edit with label maps (--source-labels / --target-labels): a layout edit, locally on the
real engine and through a server, and the artist's mistakes as one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_server_support import FakeEngine, ThreadedServer

from magic_server.cli import edit as cli_edit

SKY, GRASS, TREE = (110, 160, 230), (70, 160, 60), (40, 70, 30)


@pytest.fixture
def painted(tmp_path) -> Path:
    """A photo of sky, grass and a tree; its label map; the map with the tree moved right."""
    h, w = 48, 64
    labels = np.zeros((h, w), np.uint8)
    labels[h // 2 :] = 1
    labels[10:34, 8:20] = 2
    colours = np.array([SKY, GRASS, TREE], np.uint8)
    rng = np.random.default_rng(0)
    photo = np.clip(colours[labels] + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    target = labels.copy()
    target[10:34, 8:20] = np.where(np.arange(10, 34)[:, None] < h // 2, 0, 1)
    target[10:34, 40:52] = 2
    Image.fromarray(photo).save(tmp_path / "photo.png")
    Image.fromarray(colours[labels]).save(tmp_path / "labels.png")
    Image.fromarray(colours[target]).save(tmp_path / "wanted.png")
    Image.fromarray(labels, "L").save(tmp_path / "labels_grey.png")
    Image.fromarray(target, "L").save(tmp_path / "wanted_grey.png")
    foreign = colours[target].copy()
    foreign[30:40, 30:40] = (250, 250, 0)
    Image.fromarray(foreign).save(tmp_path / "foreign.png")
    Image.fromarray(colours[target][:40]).save(tmp_path / "short.png")
    clear = np.dstack([colours[target], np.full((h, w), 255, np.uint8)])
    clear[0, 5, 3] = 0
    Image.fromarray(clear, "RGBA").save(tmp_path / "clear.png")
    Image.new("L", (64, 48), 0).save(tmp_path / "mask.png")
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli_edit.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def layout_args(d: Path, source: str = "labels.png", target: str = "wanted.png") -> list:
    return [d / "photo.png", "--source-labels", d / source, "--target-labels", d / target,
            "-o", d / "out.png", "--weights", "untrained", "--device", "cpu",
            "--preset", "tiny", "--iterations", "12", "--resolution", "48", "--samples", "1"]


def test_a_layout_edit_on_the_real_engine_changes_only_where_the_maps_differ(painted, capsys):
    rc, out, err = run(capsys, *layout_args(painted))
    assert rc == 0, err
    assert "layout edit" in err and f"wrote {painted / 'out.png'}" in out
    photo = np.asarray(Image.open(painted / "photo.png"))
    result = np.asarray(Image.open(painted / "out.png"))
    changed = np.any(result != photo, axis=-1)
    assert changed[10:34, 8:20].mean() > 0.5 and changed[10:34, 40:52].mean() > 0.5
    assert not changed[:, 58:].any() and not changed[44:].any()  # far from the edit


def test_grey_index_maps_work_too(painted, capsys):
    rc, _, err = run(capsys, *layout_args(painted, "labels_grey.png", "wanted_grey.png"))
    assert rc == 0, err


@pytest.mark.parametrize("change, expected", [
    ({"target": "foreign.png"}, (r"uses #fafa00, which is not a label colour of the source "
                                 r"map \(100 pixels, e\.g\. at x=30, y=30\)")),
    ({"target": "short.png"}, r"--target-labels .*short.png is 64x40 but the image is 64x48"),
    ({"target": "clear.png"}, r"clear.png has 1 transparent pixels \(e\.g\. at x=5, y=0\)"),
    ({"target": "absent.png"}, r"absent.png not found"),
])
def test_label_map_mistakes_are_one_clear_line(painted, capsys, change, expected):
    argv = layout_args(painted, target=change.get("target", "wanted.png"))
    rc, _, err = run(capsys, *argv)
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("magic-edit: error: "), err
    assert re.search(expected, lines[0]), lines[0]
    assert not (painted / "out.png").exists()


@pytest.mark.parametrize("change, expected", [
    ({"extra": ["--source-mask", "mask.png"]}, (r"either --source-mask/--guide-mask or "
                                                r"--source-labels/--target-labels, not both")),
    ({"drop": "--target-labels"}, r"needs both --source-labels and --target-labels"),
    ({"extra": ["--mode", "move"]}, r"--mode applies to mask edits"),
    ({"drop": "--source-labels", "drop2": "--target-labels"},
     r"give --source-mask and --guide-mask \(or --source-labels and --target-labels"),
])
def test_masks_or_maps_is_a_usage_error(painted, capsys, change, expected):
    argv = layout_args(painted)
    for key in ("drop", "drop2"):
        if key in change:
            i = argv.index(change[key])
            del argv[i : i + 2]
    for arg in change.get("extra", []):
        argv.append(painted / arg if arg.endswith(".png") else arg)
    with pytest.raises(SystemExit) as info:
        cli_edit.main([str(a) for a in argv])
    assert info.value.code == 2
    assert re.search(expected, capsys.readouterr().err)


def test_a_layout_edit_through_a_server_sends_the_painted_maps(painted, capsys):
    engine = FakeEngine(step_s=0)
    with ThreadedServer(engine) as srv:
        rc, _, err = run(capsys, painted / "photo.png", "--source-labels",
                           painted / "labels.png", "--target-labels", painted / "wanted.png",
                           "-o", painted / "out.png", "--server", srv.address, "--samples", "1")
    assert rc == 0, err
    assert engine.last_call["options"].mode == "layout"
    assert int(engine.last_call["target_labels"][20, 45]) == 2  # the moved tree, as an index
    assert (painted / "out.png").exists()
