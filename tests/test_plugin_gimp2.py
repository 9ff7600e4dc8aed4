"""The GIMP 2.10 variant (gimpfu) against the project's gimpfu stand-in (tests/stubs/gimpfu.py),
installed by the installer's code, talking to a real server (stand-in engine) through the real
Python 3 bridge process. One test also runs it under a real Python 2.7, as GIMP 2.10 would."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gimp_plugin import procedures

HERE = Path(__file__).resolve().parent
STUBS = HERE / "stubs"
from test_server_support import FakeEngine, ThreadedServer, address

W, H = 24, 16
LAYOUT, LABEL_MAP = "python-fu-magic-layout", "python-fu-magic-label-map"
KEEP = "python-fu-magic-keep-sample"


@pytest.fixture
def gimpfu(monkeypatch):
    monkeypatch.syspath_prepend(str(STUBS))  # the project's stand-in gimpfu, as GIMP 2.10 has it
    import gimpfu as stub

    stub.stub_reset()
    yield stub
    sys.modules.pop("gimpfu", None)


def install_210(tmp_path: Path, server_address: str, server_command=None) -> Path:
    from installer.plugin_install import install_plugins

    profile = tmp_path / "GIMP" / "2.10"
    profile.mkdir(parents=True, exist_ok=True)
    entries = install_plugins(profile, server_address, server_command, gimp_version="2.10",
                              python=sys.executable)
    return Path(entries[0])


def load_plugin(entry: Path):
    spec = importlib.util.spec_from_file_location("magic_gimp2_under_test", entry)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scene(stub):
    image = stub.Image(40, 30)
    base = image.stub_add(stub.Layer(image, "photo", W, H, stub.RGB_IMAGE).stub_fill(b"\x50\x60\x70"),
                          3, 2)
    moved = stub.Layer(image, "moved", 4, 4, stub.RGBA_IMAGE).stub_fill(b"\x01\x02\x03\xff")
    image.stub_add(moved, 3 + 16, 2 + 8)
    guide = stub.Layer(image, "guide", 5, 5, stub.GRAY_IMAGE).stub_fill(b"\xff")
    image.stub_add(guide, 3 + 12, 2 + 2)
    image.stub_select(3 + 2, 2 + 2, 3 + 6, 2 + 6)
    return image, base, moved, guide


def values(name: str, image, base, **over):
    """Positional arguments in registration order, the way a 2.10 script passes them."""
    out = [image, base]
    for a in procedures.BY_NAME[name].args:
        v = over.get(a.name, a.default)
        if a.kind == "choice":
            v = a.choices.index(v)
        elif a.kind == "bool":
            v = int(v)  # PF_TOGGLE takes 0/1
        out.append(v)
    return out


def test_registers_the_documented_procedures_with_gimpfu_params(gimpfu, tmp_path):
    load_plugin(install_210(tmp_path, "tcp://127.0.0.1:1"))
    regs = gimpfu._registered_plugins_
    assert sorted(regs) == sorted(p.name for p in procedures.PROCEDURES)
    for name, reg in regs.items():
        assert reg["menu"] == "<Image>/Filters/MAGIC"
        names = [p[1] for p in reg["params"]]
        assert names[:2] == ["image", "drawable"]
        if name == KEEP:
            assert names == ["image", "drawable"]
            continue
        assert {"seed", "server-address"} <= set(names)
        if name not in (LAYOUT, LABEL_MAP):
            assert {"samples", "preset", "source-mask"} <= set(names)
    layout = [p[1] for p in regs[LAYOUT]["params"]]
    assert layout[2:4] == ["source-labels", "target-labels"] and "preset" in layout
    assert [p[1] for p in regs[LABEL_MAP]["params"]] == ["image", "drawable", "labels", "seed",
                                                         "timeout", "server-address"]
    labels = regs[LABEL_MAP]["params"][2]
    assert labels[0] == gimpfu.PF_SPINNER and labels[3:] == (6, (2, 16, 1))
    assert "guide-mask" in [p[1] for p in regs["python-fu-magic-synthesize"]["params"]]
    assert "moved-layer" in [p[1] for p in regs["python-fu-magic-move-object"]["params"]]
    preset = next(p for p in regs["python-fu-magic-copy-object"]["params"] if p[1] == "preset")
    assert preset[0] == gimpfu.PF_OPTION and preset[4] == list(procedures.PRESETS)


def test_move_through_the_bridge_adds_layers_in_one_undo_step(gimpfu, tmp_path):
    engine = FakeEngine(step_s=0.0, iterations=3)
    with ThreadedServer(engine) as srv:
        load_plugin(install_210(tmp_path, srv.address))
        image, base, moved, _guide = scene(gimpfu)
        status, message = gimpfu.stub_run(
            "python-fu-magic-move-object",
            *values("python-fu-magic-move-object", image, base,
                    **{"moved-layer": moved, "source-mask": base, "samples": 2, "seed": 9,
                       "vary": False}))
    assert (status, message) == (gimpfu.PDB_SUCCESS, None)
    names = [layer.name for layer in image.layers]
    assert names == ["guide", "moved", "MAGIC move quality (seeds 9-10)", "photo"]
    assert not moved.visible  # the run's input, hidden in its undo group (image.log empty)
    group = image.layers[2]
    assert [c.name for c in group.children] == ["MAGIC move quality seed 9",
                                                "MAGIC move quality seed 10"]
    top = group.children[0]
    # edited area: selection (2..6, 2..6) + moved (16..20, 8..12), margin 4, in photo frame
    assert top.offsets == (3 + 0, 2 + 0) and (top.width, top.height) == (24, 16)
    px = top.get_pixel_rgn(0, 0, top.width, top.height, False)[4:5, 4:5]
    assert px == bytes([255 - 0x50, 255 - 0x60, 255 - 0x70, 255])  # the stand-in inverts
    assert image.undo_groups == 1 and image.undo_depth == 0 and image.log == []
    texts = [c[1] for c in gimpfu.stub_calls if c[0] == "text"]
    assert any(t.startswith("MAGIC move: synthesizing 3/3") for t in texts), texts
    # seed-from-layer (on by default): the moved layer over the photo reached the engine
    init = engine.last_call["init_image"]
    assert init.shape == (H, W, 3)
    assert (init[8:12, 16:20] == (1, 2, 3)).all()
    outside = np.ones((H, W), bool)
    outside[8:12, 16:20] = False
    assert (init[outside] == (0x50, 0x60, 0x70)).all()


def test_vary_reruns_and_keep_this_sample_on_gimp_2_10(gimpfu, tmp_path):
    """Each run a new seed (Vary, on by default), the new group on top and the earlier one
    hidden; Keep this sample drops the other samples of its group."""
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        load_plugin(install_210(tmp_path, srv.address))
        image, base, moved, _guide = scene(gimpfu)
        args = values("python-fu-magic-move-object", image, base,
                      **{"moved-layer": moved, "source-mask": base, "samples": 2, "seed": 9})
        for _ in range(2):
            assert gimpfu.stub_run("python-fu-magic-move-object", *args) == (
                gimpfu.PDB_SUCCESS, None)
    first, second = image.layers[3], image.layers[2]
    assert [la.name for la in image.layers][:2] == ["guide", "moved"]
    assert first.name != second.name and "(seeds 9-10)" not in first.name + second.name
    assert second.visible and not first.visible and image.layers[4] is base
    assert image.log == []  # every change inside an undo group
    kept = second.children[1]
    assert gimpfu.stub_run(KEEP, image, kept) == (gimpfu.PDB_SUCCESS, None)
    assert second.children == [kept] and image.active_layer is kept
    status, message = gimpfu.stub_run(KEEP, image, base)
    assert status == gimpfu.PDB_EXECUTION_ERROR and "Select one MAGIC result layer" in message


def test_errors_are_messages_and_execution_errors(gimpfu, tmp_path):
    load_plugin(install_210(tmp_path, address()))
    image, base, moved, guide = scene(gimpfu)
    status, message = gimpfu.stub_run(
        "python-fu-magic-synthesize",
        *values("python-fu-magic-synthesize", image, base, **{"guide-mask": guide,
                                                               "mode": "reshape"}))
    assert status == gimpfu.PDB_EXECUTION_ERROR
    assert message.startswith("The MAGIC server is not running at tcp://127.0.0.1:")
    assert ("message", message) in gimpfu.stub_calls
    image.selection.data[:] = bytes(len(image.selection.data))
    status, message = gimpfu.stub_run(
        "python-fu-magic-copy-object",
        *values("python-fu-magic-copy-object", image, base, **{"moved-layer": moved}))
    assert status == gimpfu.PDB_EXECUTION_ERROR and "source mask is empty" in message
    assert [la.name for la in image.layers] == ["guide", "moved", "photo"]


def test_missing_python3_for_the_bridge_is_explained(gimpfu, tmp_path):
    entry = install_210(tmp_path, "tcp://127.0.0.1:1")
    config = entry.parent / "magic_gimp.json"
    config.write_text(json.dumps({"server_address": "tcp://127.0.0.1:1", "server_command": None,
                                  "python": str(tmp_path / "no-such-python3")}))
    load_plugin(entry)
    image, base, moved, _ = scene(gimpfu)
    status, message = gimpfu.stub_run(
        "python-fu-magic-move-object",
        *values("python-fu-magic-move-object", image, base, **{"moved-layer": moved}))
    assert status == gimpfu.PDB_EXECUTION_ERROR
    assert "needs Python 3 with pyzmq" in message and "magic-installer" in message


PY27 = shutil.which("python2.7") or shutil.which("python2")


def _python27_works() -> bool:
    if not PY27:
        return False
    env = dict(os.environ, PYENV_VERSION="2.7.18")
    r = subprocess.run([PY27, "-c", "import sys; print(sys.version_info[0])"], env=env,
                       capture_output=True, text=True, check=False)
    return r.stdout.strip() == "2"


def run_under_python_2_7(tmp_path, entry, body: str) -> subprocess.CompletedProcess:
    """Run `body` with Python 2.7 after loading the installed plug-in `entry` with the stand-in
    gimpfu as `g`, on a 40x30 image `image` with a 24x16 photo layer `base` at (3, 2)."""
    preamble = textwrap.dedent("""
        import sys
        sys.path.insert(0, @STUBS@)
        import gimpfu as g
        import imp
        imp.load_source("magic_gimp2_py27", @ENTRY@)
        image = g.Image(40, 30)
        base = image.stub_add(g.Layer(image, "photo", 24, 16, g.RGB_IMAGE)
                              .stub_fill(b"\\x50\\x60\\x70"), 3, 2)
    """).replace("@STUBS@", repr(str(STUBS))).replace("@ENTRY@", repr(str(entry)))
    script = tmp_path / "drive.py"
    script.write_text(preamble + textwrap.dedent(body))
    env = dict(os.environ, PYENV_VERSION="2.7.18")
    env.pop("PYTHONPATH", None)
    return subprocess.run([PY27, str(script)], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.skipif(not _python27_works(), reason="no Python 2.7 on this machine")
def test_the_plugin_runs_under_python_2_7(tmp_path):
    """GIMP 2.10's Python-Fu is Python 2.7: run the installed plug-in with it, for real."""
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        entry = install_210(tmp_path, srv.address)
        r = run_under_python_2_7(tmp_path, entry, """
            moved = image.stub_add(g.Layer(image, "moved", 4, 4, g.RGBA_IMAGE)
                                   .stub_fill(b"\\x01\\x02\\x03\\xff"), 19, 10)
            image.stub_select(5, 4, 9, 8)
            # image, drawable, moved-layer, source-mask, samples, preset, seed, vary, region,
            # iterations, resolution, timeout, server-address, seed-from-layer
            print(g.stub_run("python-fu-magic-copy-object", image, base, moved, None, 1, 0, 4, 0,
                             0, 0, 0, 0, "", 1))
            print([la.name for la in image.layers])
            print(sys.version_info[0])
        """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "('SUCCESS', None)", r.stdout + r.stderr
    assert lines[1] == "['moved', 'MAGIC copy quality (seed 4)', 'photo']"
    assert lines[2] == "2"


def test_layer_sticking_out_of_the_canvas_reads_the_selection_it_overlaps(gimpfu, tmp_path):
    """Pixel regions cannot reach outside the image: the 2.10 host pads the selection."""
    host = load_plugin(install_210(tmp_path, "tcp://127.0.0.1:1")).Gimp2Host()
    image = gimpfu.Image(10, 8)
    image.stub_select(0, 0, 3, 2)
    got = host.read_selection(image, -2, -1, 6, 4)  # a 6x4 layer at (-2, -1)
    rows = [list(got[i * 6:(i + 1) * 6]) for i in range(4)]
    assert rows == [[0] * 6,
                    [0, 0, 255, 255, 255, 0],
                    [0, 0, 255, 255, 255, 0],
                    [0] * 6]
    assert host.read_selection(image, 20, 20, 3, 3) == bytearray(9)
    image.selection.data[:] = bytes(80)
    assert host.read_selection(image, 0, 0, 10, 8) is None


# ------------------------------------------------------------------------ layout and label map

RED, BLUE = b"\xc8\x00\x00\xff", b"\x00\x00\xc8\xff"


def label_layer(stub, image, name, paint=None, colour=BLUE):
    """A label map on the scene's photo (W x H at 3, 2): red left half, blue right half;
    `paint`: a photo-local box painted with `colour`."""
    layer = stub.Layer(image, name, W, H, stub.RGBA_IMAGE)
    for y in range(H):
        for x in range(W):
            px = RED if x < W // 2 else BLUE
            if paint and paint[0] <= x < paint[2] and paint[1] <= y < paint[3]:
                px = colour
            layer.data[(y * W + x) * 4:(y * W + x) * 4 + 4] = px
    return image.stub_add(layer, 3, 2)


def run_layout_210(stub, srv, tmp_path, colour=BLUE):
    load_plugin(install_210(tmp_path, srv.address))
    image, base, _moved, _guide = scene(stub)
    source = label_layer(stub, image, "labels")
    target = label_layer(stub, image, "wanted", paint=(2, 3, 8, 9), colour=colour)
    result = stub.stub_run(LAYOUT, *values(LAYOUT, image, base, **{
        "source-labels": source, "target-labels": target, "samples": 1, "seed": 4,
        "preset": "tiny", "vary": False}))
    return result, image


def test_layout_through_the_bridge_sends_the_label_maps(gimpfu, tmp_path):
    engine = FakeEngine(step_s=0.0, iterations=2)
    with ThreadedServer(engine) as srv:
        (status, message), image = run_layout_210(gimpfu, srv, tmp_path)
    assert (status, message) == (gimpfu.PDB_SUCCESS, None)
    call = engine.last_call
    changed = np.zeros((H, W), bool)
    changed[3:9, 2:8] = True
    assert np.array_equal(call["source_labels"] != call["target_labels"], changed)
    assert call["options"].mode == "layout"
    names = [la.name for la in image.layers]
    assert names == ["wanted", "labels", "guide", "moved", "MAGIC layout tiny (seed 4)", "photo"]
    assert [c.name for c in image.layers[4].children] == ["MAGIC layout tiny seed 4"]
    assert image.undo_groups == 1 and image.undo_depth == 0


def test_layout_foreign_colour_through_the_bridge_is_the_servers_message(gimpfu, tmp_path):
    engine = FakeEngine(step_s=0.0, iterations=2)
    with ThreadedServer(engine) as srv:
        (status, message), image = run_layout_210(gimpfu, srv, tmp_path,
                                                  colour=b"\xfa\xfa\x00\xff")
    assert status == gimpfu.PDB_EXECUTION_ERROR
    assert "#fafa00" in message and "not a label colour of the source map" in message
    assert ("message", message) in gimpfu.stub_calls
    assert engine.calls == 0 and "MAGIC layout" not in [la.name for la in image.layers]


def test_layout_without_a_target_layer_says_so(gimpfu, tmp_path):
    load_plugin(install_210(tmp_path, "tcp://127.0.0.1:1"))
    image, base, _moved, _guide = scene(gimpfu)
    source = label_layer(gimpfu, image, "labels")
    # gimpfu cannot pass "no layer": the photo itself means none
    status, message = gimpfu.stub_run(LAYOUT, *values(LAYOUT, image, base, **{
        "source-labels": source, "target-labels": base}))
    assert status == gimpfu.PDB_EXECUTION_ERROR and "Pick the target labels layer" in message


def stand_in_label_map(image, labels, seed, on_progress, cancel):
    """The server's label-map step without magic_server.labels.clustering: two halves."""
    from magic_server.serve.jobs import LabelMapResult

    out = np.zeros(image.shape, np.uint8)
    out[:, image.shape[1] // 2:] = (0, 0, 200)
    return LabelMapResult([out], [seed], 0.0, notes=[f"the photo gave 2 regions, not {labels}"])


def test_label_map_through_the_bridge_adds_the_two_label_layers(gimpfu, tmp_path,
                                                                monkeypatch):
    from magic_server.serve import jobs

    monkeypatch.setattr(jobs, "label_map_result", stand_in_label_map)
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        load_plugin(install_210(tmp_path, srv.address))
        image, base, _moved, _guide = scene(gimpfu)
        status, message = gimpfu.stub_run(LABEL_MAP, *values(LABEL_MAP, image, base, labels=3,
                                                             seed=1))
    assert (status, message) == (gimpfu.PDB_SUCCESS, None)
    names = [la.name for la in image.layers]
    assert names == ["guide", "moved", "MAGIC target labels (paint here)", "MAGIC source labels",
                     "photo"]
    target, source = image.layers[2], image.layers[3]
    for layer in (target, source):
        assert layer.offsets == base.offsets and (layer.width, layer.height) == (W, H)
        px = layer.get_pixel_rgn(0, 0, W, H, False)
        assert px[0:1, 0:1] == b"\x00\x00\x00\xff" and px[W - 1:W, 0:1] == b"\x00\x00\xc8\xff"
    assert (target.visible, target.opacity, source.visible) == (True, 50.0, False)
    assert image.active_layer is target
    assert image.undo_groups == 1 and image.undo_depth == 0 and image.log == []
    told = [c[1] for c in gimpfu.stub_calls if c[0] == "message"]
    assert len(told) == 1 and "Filters > MAGIC > Layout edit" in told[0]
    assert told[0].endswith("Note: the photo gave 2 regions, not 3.")


@pytest.mark.skipif(not _python27_works(), reason="no Python 2.7 on this machine")
def test_label_map_and_layout_run_under_python_2_7(tmp_path, monkeypatch):
    from magic_server.serve import jobs

    monkeypatch.setattr(jobs, "label_map_result", stand_in_label_map)
    engine = FakeEngine(step_s=0.0, iterations=2)
    with ThreadedServer(engine) as srv:
        entry = install_210(tmp_path, srv.address)
        r = run_under_python_2_7(tmp_path, entry, """
            # image, drawable, labels, seed, timeout, server-address
            print(g.stub_run("python-fu-magic-label-map", image, base, 2, 0, 0, ""))
            print([la.name for la in image.layers])
            target = image.layers[0]
            rgn = target.get_pixel_rgn(0, 0, 24, 16, True)
            rgn[2:6, 3:7] = b"\\x00\\x00\\xc8\\xff" * 16  # paint blue into the black half
            # image, drawable, source-labels, target-labels, samples, preset, seed, vary,
            # region, iterations, resolution, timeout, server-address
            print(g.stub_run("python-fu-magic-layout", image, base, image.layers[1], target, 1,
                             3, 6, 0, 0, 0, 0, 0, ""))
            print([la.name for la in image.layers])
        """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "('SUCCESS', None)", r.stdout + r.stderr
    assert lines[1] == "['MAGIC target labels (paint here)', 'MAGIC source labels', 'photo']"
    assert lines[2] == "('SUCCESS', None)", r.stdout + r.stderr
    # the result on top of the label maps (MAGIC's too), the painted one hidden (an input)
    assert lines[3] == ("['MAGIC layout tiny (seed 6)', 'MAGIC target labels (paint here)', "
                        "'MAGIC source labels', 'photo']")
    changed = np.zeros((H, W), bool)
    changed[3:7, 2:6] = True
    assert np.array_equal(engine.last_call["source_labels"] != engine.last_call["target_labels"],
                          changed)
