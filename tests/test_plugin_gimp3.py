"""The GIMP 3 entry file (registration, run, return values) on the fake GIMP 3 API, the
in-process client runner against a real server with a stand-in engine, automatic server start,
the pyzmq hint, and the manifest the installer copies."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import gimp3 as fake

from gimp_plugin import manifest, procedures, workflow

HERE = Path(__file__).resolve().parent
from test_server_support import FakeEngine, ThreadedServer, address

ENTRY = Path(manifest.REPO_ROOT) / manifest.GIMP3.entry


@pytest.fixture
def plugin():
    with fake.installed() as Gimp:
        spec = importlib.util.spec_from_file_location("magic_gimp3", ENTRY)
        module = importlib.util.module_from_spec(spec)
        sys.modules["magic_gimp3"] = module
        spec.loader.exec_module(module)
        yield module, Gimp


def create(module, name):
    return module.MagicPlugIn().do_create_procedure(name)


def scene(Gimp):
    image = Gimp.Image(50, 40)
    base = image.add(Gimp.Layer(image, "photo", 32, 24, 4).fill((80, 90, 100, 255)), 2, 3)
    moved = image.add(Gimp.Layer(image, "moved", 4, 4, 4).fill((1, 2, 3, 255)), 22, 15)
    image.select(5, 6, 9, 10)
    return image, base, moved


def config_for(proc, **over):
    spec = procedures.BY_NAME[proc.name]
    values = procedures.defaults(spec)
    values.update(over)
    return fake.Config(values)


def test_registers_the_procedures_with_the_documented_arguments(plugin):
    module, _ = plugin
    names = module.MagicPlugIn().do_query_procedures()
    binary = ["python-fu-magic-synthesize", "python-fu-magic-move-object",
              "python-fu-magic-copy-object", "python-fu-magic-remove-object"]
    assert names == binary + ["python-fu-magic-layout", "python-fu-magic-label-map",
                              "python-fu-magic-keep-sample"]
    assert names == list(manifest.PROCEDURES)
    keep = create(module, "python-fu-magic-keep-sample")
    assert keep.args == {} and keep.label == "_Keep this sample"
    assert keep.menu_paths == ["<Image>/Filters/MAGIC"]
    for name in names[:-1]:
        proc = create(module, name)
        assert proc.menu_paths == ["<Image>/Filters/MAGIC"]
        assert proc.image_types == "RGB*"
        assert {"seed", "timeout", "server-address"} <= set(proc.args)
    for name in binary:
        proc = create(module, name)
        assert {"source-mask", "samples", "preset", "region", "vary"} <= set(proc.args)
        assert proc.args["vary"][0] == "bool" and proc.args["vary"][3] is True
        assert proc.args["source-mask"][0] == "layer" and proc.args["source-mask"][3] is True
        assert proc.args["preset"][3] == procedures.PRESETS
    synth = create(module, "python-fu-magic-synthesize")
    assert synth.args["guide-mask"][0] == "layer"
    assert synth.args["mode"][3] == ("synthesize", "move", "copy", "reshape", "remove")
    assert create(module, "python-fu-magic-move-object").args["moved-layer"][0] == "layer"
    assert create(module, "python-fu-magic-copy-object").args["moved-layer"][0] == "layer"
    layout = create(module, "python-fu-magic-layout")
    assert list(layout.args)[:2] == ["source-labels", "target-labels"]
    assert all(layout.args[a][0] == "layer" for a in ("source-labels", "target-labels"))
    assert layout.args["preset"][3] == procedures.PRESETS
    assert {"samples", "region", "iterations"} <= set(layout.args)
    assert layout.label == "La_yout edit..."
    label_map = create(module, "python-fu-magic-label-map")
    assert list(label_map.args) == ["labels", "seed", "timeout", "server-address"]
    assert label_map.args["labels"] == ("int", "_Number of labels", label_map.args["labels"][2],
                                        2, 16, 6)
    assert label_map.label == "_Label map..."


def test_run_against_a_real_server_adds_result_layers(plugin, tmp_path, monkeypatch):
    module, Gimp = plugin
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=4)) as srv:
        monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))  # no magic_gimp.json: defaults
        proc = create(module, "python-fu-magic-copy-object")
        image, base, moved = scene(Gimp)
        cfg = config_for(proc, **{"moved-layer": moved, "samples": 2, "seed": 21,
                                  "server-address": srv.address})
        status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                                cfg, None)
    assert (status, message) == ("SUCCESS", None)
    group = image.layers[1]
    assert group.name == "MAGIC copy quality (seeds 21-22)" and image.layers[2] is base
    assert [c.name for c in group.children] == ["MAGIC copy quality seed 21",
                                                "MAGIC copy quality seed 22"]
    # the stand-in engine inverts the image: a pixel inside the edited area
    top = group.children[0]
    assert top.pixel(5, 5) == bytes([255 - 80, 255 - 90, 255 - 100, 255])
    assert image.undo_groups == 1 and image.undo_depth == 0


def test_failures_return_execution_error_with_the_message(plugin, tmp_path, monkeypatch):
    module, Gimp = plugin
    monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
    proc = create(module, "python-fu-magic-move-object")
    image, base, moved = scene(Gimp)
    down = address()
    cfg = config_for(proc, **{"moved-layer": moved, "server-address": down})
    status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                           cfg, None)
    assert status == "EXECUTION_ERROR"
    assert message == workflow.unreachable_message(down)
    # two layers selected, or a group: a clear error, never SUCCESS
    status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image,
                                           [base, moved], cfg, None)
    assert status == "EXECUTION_ERROR" and "exactly one" in message
    # an unexpected exception deep inside is still an error with a message, not a traceback
    monkeypatch.setattr(workflow, "collect", lambda *a: 1 / 0)
    status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                           cfg, None)
    assert status == "EXECUTION_ERROR" and "ZeroDivisionError" in message


def test_broken_config_file_is_reported(plugin, tmp_path, monkeypatch):
    module, Gimp = plugin
    (tmp_path / "magic_gimp.json").write_text("{not json")
    monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
    proc = create(module, "python-fu-magic-move-object")
    image, base, moved = scene(Gimp)
    status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                           config_for(proc, **{"moved-layer": moved}), None)
    assert status == "EXECUTION_ERROR" and "magic_gimp.json" in message


def test_missing_pyzmq_message_says_how_to_fix_it(plugin, monkeypatch):
    from gimp_plugin import gimp3_host

    monkeypatch.setitem(sys.modules, "zmq", None)  # import zmq now raises ImportError
    with pytest.raises(workflow.RunnerError) as err:
        gimp3_host.DirectRunner().handshake("tcp://127.0.0.1:1", 1.0)
    assert err.value.kind == "missing"
    assert "-m pip install --user pyzmq" in err.value.message
    assert "python3-zmq" in err.value.message


def test_cancel_from_gimp_is_seen_as_a_closed_pipe(plugin):
    from gimp_plugin import gimp3_host

    r, w = os.pipe()
    try:
        assert gimp3_host.gimp_read_fd(["x.py", "-gimp", "279", str(r), str(w), "-run"]) == r
        assert gimp3_host.gimp_hung_up(r) is False
        os.close(w)
        w = None
        assert gimp3_host.gimp_hung_up(r) is True
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
    assert gimp3_host.gimp_read_fd(["x.py"]) is None and not gimp3_host.gimp_hung_up(None)


def test_direct_runner_cancels_the_job_on_the_server(plugin):
    from gimp_plugin import gimp3_host

    engine = FakeEngine(step_s=0.05, iterations=400)
    with ThreadedServer(engine) as srv:
        runner = gimp3_host.DirectRunner()
        seen = []
        w, h = 8, 6
        mask = bytes([255] * 3 + [0] * (w * h - 3))
        request = {"width": w, "height": h, "image": bytes(w * h * 4), "source_mask": mask,
                   "guide_mask": mask[::-1],
                   "params": {"mode": "move", "samples": 1, "preset": "tiny", "seed": 0}}
        t0 = time.monotonic()
        with pytest.raises(workflow.RunnerError) as err:
            runner.submit(srv.address, request, lambda k, i: seen.append(k),
                          lambda: "progress" in seen, None)
        assert err.value.kind == "cancelled"
        assert time.monotonic() - t0 < 10  # far less than the 20 s the job would take
        assert engine.calls == 1


def test_autostart_uses_the_installed_server_command(plugin, tmp_path, monkeypatch):
    """Server down + server_command configured: the plug-in starts it and goes on."""
    from gimp_plugin import gimp3_host, settings

    monkeypatch.setattr(settings, "log_path", lambda: str(tmp_path / "server.log"))

    addr = address()
    command = [sys.executable, str(HERE / "test_server_support.py"), "--bind", addr]

    class Host:
        def __init__(self):
            self.texts = []

        def progress_update(self, fraction, text):
            self.texts.append(text)

        def cancel_requested(self):
            return False

    host = Host()
    info = workflow.connect(host, gimp3_host.DirectRunner(), addr,
                            {"server_address": addr, "server_command": command})
    try:
        assert "tiny" in info["presets"]
        assert f"Starting the MAGIC server at {addr}..." in host.texts
        assert "ready" in (tmp_path / "server.log").read_text()
    finally:
        os.kill(info["started_pid"], signal.SIGTERM)


def test_autostart_failure_shows_the_log(plugin, tmp_path, monkeypatch):
    from gimp_plugin import gimp3_host, settings

    monkeypatch.setattr(settings, "log_path", lambda: str(tmp_path / "server.log"))
    command = [sys.executable, "-c", "import sys; print('no weights here'); sys.exit(3)"]

    class Host:
        def progress_update(self, fraction, text):
            pass

        def cancel_requested(self):
            return False

    (tmp_path / "server.log").write_text("magic-server: an older run's reason\n")
    with pytest.raises(workflow.UserError) as err:
        workflow.connect(Host(), gimp3_host.DirectRunner(), address(),
                         {"server_command": command})
    assert "exit code 3" in err.value.message and "no weights here" in err.value.message
    assert "older run" not in err.value.message  # only this start's output


def test_a_started_server_without_weights_is_reported_at_once_with_its_reason(
        plugin, tmp_path, monkeypatch):
    """The real magic-server with no weights installed (an empty cache): the plug-in's
    autostart reports the server's own reason within seconds, not after download retries."""
    from gimp_plugin import gimp3_host, settings

    monkeypatch.setattr(settings, "log_path", lambda: str(tmp_path / "server.log"))
    monkeypatch.setenv("MAGIC_CACHE_DIR", str(tmp_path / "empty-cache"))
    addr = address()
    # as if the stand-in classifier were not installed either (with it, the server starts)
    command = [sys.executable, "-c",
               ("import sys; from magic_server.weights import choice as w; "
                "w.stand_in_available = lambda: False; "
                "from magic_server.serve.command import main; sys.exit(main(sys.argv[1:]))"),
               "--bind", addr, "--device", "cpu"]
    texts = []

    class Host:
        def progress_update(self, fraction, text):
            texts.append(text)

        def cancel_requested(self):
            return False

    t0 = time.monotonic()
    with pytest.raises(workflow.UserError) as err:
        workflow.connect(Host(), gimp3_host.DirectRunner(), addr,
                         {"server_address": addr, "server_command": command})
    took = time.monotonic() - t0
    assert err.value.message.startswith(
        "The MAGIC server could not start: no classifier weights installed: run "
        "`magic-installer weights`"), err.value.message
    assert took < 15, f"reported after {took:.1f} s"
    assert texts[0] == f"Starting the MAGIC server at {addr}..."


def test_a_slow_server_start_is_explained_every_few_seconds(plugin, tmp_path, monkeypatch):
    """Never a silent wait: while a started server is not answering, the progress text says
    how long it has been and what the server last wrote."""
    from gimp_plugin import settings

    monkeypatch.setattr(settings, "log_path", lambda: str(tmp_path / "server.log"))
    now = [1000.0]

    class Proc:
        pid, returncode = 4242, None

        def poll(self):
            return None

    def start_server(command, log):
        with open(log, "a") as f:
            f.write("magic-server loading the classifier\n")
        return Proc()

    monkeypatch.setattr(settings, "start_server", start_server)

    class Runner:
        def handshake(self, address, timeout_s):
            now[0] += timeout_s
            if now[0] > 1021:
                return {"presets": ["draft"]}
            raise workflow.RunnerError("unreachable", "no answer")

    texts = []

    class Host:
        def progress_update(self, fraction, text):
            texts.append((now[0], text))

        def cancel_requested(self):
            return False

    def sleep(s):
        now[0] += s

    info = workflow.connect(Host(), Runner(), "tcp://x:1", {"server_command": ["srv"]},
                            clock=lambda: now[0], sleep=sleep)
    assert info["started_pid"] == 4242
    said = [(t, text) for t, text in texts if "so far" in text]
    assert len(said) >= 3
    assert all(b - a <= workflow.STARTUP_SAY_EVERY_S + 2 for (a, _), (b, _) in
               zip([(texts[0][0], "")] + said, said))
    assert said[0][1].endswith("it says: magic-server loading the classifier")


def test_manifest_lists_existing_files_for_both_variants():
    for variant in manifest.VARIANTS.values():
        files = variant.files()
        assert files[0][1] == variant.folder + ".py"
        for src, rel in files:
            assert src.is_file(), src
            assert not rel.startswith("/")
        rels = [rel for _, rel in files]
        assert "magic_protocol/client.py" in rels and "gimp_plugin/workflow.py" in rels
    assert "gimp_plugin/gimp3_host.py" in [r for _, r in manifest.GIMP3.files()]
    assert "gimp_plugin/bridge_client.py" in [r for _, r in manifest.GIMP2.files()]
    assert "magic_protocol/bridge.py" in [r for _, r in manifest.GIMP2.files()]


def test_preview_frames_from_a_real_server_reach_the_host_not_the_image(plugin, monkeypatch):
    _, Gimp = plugin
    from gimp_plugin.gimp3_host import DirectRunner, Gimp3Host

    host = Gimp3Host(preview=True, display=False)  # no display here: frames are only counted
    shown = []
    real_show = host.show_preview
    monkeypatch.setattr(host, "show_preview",
                        lambda image, base, rgb, w, h: (shown.append((w, h, rgb[:3])),
                                                        real_show(image, base, rgb, w, h)))
    with ThreadedServer(FakeEngine(step_s=0.01, iterations=40)) as srv:
        image, base, moved = scene(Gimp)
        args = procedures.defaults(procedures.BY_NAME["python-fu-magic-move-object"])
        args.update({"moved-layer": moved, "server-address": srv.address, "samples": 1})
        workflow.run(host, DirectRunner(), image, base, "move", args, {})
    assert shown, "no preview frame arrived"
    assert all(w > 0 and h > 0 and len(rgb) == 3 for w, h, rgb in shown)
    assert [la.name for la in image.layers] == ["moved", "MAGIC move quality (seed 0)", "photo"]
    assert image.frozen == 0 and host.previews_received == len(shown)
    # nothing before the result but hiding the moved layer (in the result's undo group)
    assert image.history[:2] == ["visible moved", "insert MAGIC move quality (seed 0)"]


def test_the_plugin_process_imports_only_stdlib_gi_pyzmq_and_our_packages():
    """Thin plug-in: no numpy, no torch, nothing else in GIMP's Python."""
    import subprocess
    import textwrap

    code = textwrap.dedent(f"""
        import importlib.util, sys
        before = set(sys.modules)
        sys.path[:0] = [{str(HERE / "fakes")!r}, {str(HERE)!r}]
        spec = importlib.util.spec_from_file_location("magic_gimp3", {str(ENTRY)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        from gimp_plugin import gimp3_host, workflow
        gimp3_host.load_client()
        try:
            gimp3_host.DirectRunner().handshake("tcp://127.0.0.1:9", 0.2)
        except workflow.RunnerError:
            pass
        new = {{m.split(".")[0] for m in set(sys.modules) - before}}
        third = sorted(m for m in new - set(sys.stdlib_module_names)
                       if not m.startswith(("_cython", "cython_runtime")))  # pyzmq's internals
        print(" ".join(third))
    """)
    r = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                       cwd=manifest.REPO_ROOT, timeout=60, check=False,
                       env={"PYTHONPATH": str(manifest.REPO_ROOT), "PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    imported = set(r.stdout.split())
    assert {"gi", "gimp_plugin", "magic_protocol", "zmq"} <= imported
    assert imported <= {"gi", "fakes", "gimp_plugin", "magic_protocol", "zmq", "_cffi_backend",
                        "cffi"}, imported


def test_seed_from_layer_is_a_boolean_argument_of_move_and_copy(plugin):
    module, _ = plugin
    for name in ("python-fu-magic-move-object", "python-fu-magic-copy-object"):
        arg = create(module, name).args["seed-from-layer"]
        assert arg[0] == "bool" and arg[3] is True
    for name in ("python-fu-magic-synthesize", "python-fu-magic-remove-object"):
        assert "seed-from-layer" not in create(module, name).args


def test_move_seeds_the_server_job_with_the_moved_layer_over_the_photo(plugin, tmp_path,
                                                                       monkeypatch):
    module, Gimp = plugin
    engine = FakeEngine(step_s=0.0, iterations=2)
    with ThreadedServer(engine) as srv:
        monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
        proc = create(module, "python-fu-magic-move-object")
        image, base, moved = scene(Gimp)  # photo at (2, 3), moved 4x4 (1, 2, 3) at (22, 15)
        cfg = config_for(proc, **{"moved-layer": moved, "samples": 1,
                                  "server-address": srv.address})
        status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                                cfg, None)
    assert (status, message) == ("SUCCESS", None)
    call = engine.last_call
    expected = np.full((24, 32, 3), (80, 90, 100), np.uint8)
    expected[12:16, 20:24] = (1, 2, 3)  # the moved layer, in the photo's frame
    assert np.array_equal(call["init_image"], expected)
    assert call["options"].composite is True and call["options"].mode == "move"
    assert call["guide_mask"][12:16, 20:24].all() and call["guide_mask"].sum() == 16


def test_remove_the_only_object_through_a_real_server(plugin, tmp_path, monkeypatch):
    module, Gimp = plugin
    engine = FakeEngine(step_s=0.0, iterations=2)
    with ThreadedServer(engine) as srv:
        monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
        proc = create(module, "python-fu-magic-remove-object")
        image, base, _moved = scene(Gimp)  # selection (5, 6)-(9, 10): photo (3..7, 3..7)
        cfg = config_for(proc, **{"samples": 1, "server-address": srv.address})
        status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                                cfg, None)
    assert (status, message) == ("SUCCESS", None)
    call = engine.last_call
    assert not call["guide_mask"].any() and call["init_image"] is None
    assert call["source_mask"][3:7, 3:7].all() and call["source_mask"].sum() == 16
    group = image.layers[1]
    assert group.name.startswith("MAGIC remove quality (seed ") and image.layers[2] is base


# ------------------------------------------------------------------------ layout and label map

RED, BLUE = (200, 0, 0, 255), (0, 0, 200, 255)


def label_layer(Gimp, image, name, paint=None, colour=BLUE):
    """A 32x24 label map on the scene's photo (at 2, 3): red left half, blue right half;
    `paint`: a photo-local box (x0, y0, x1, y1) painted with `colour`."""
    layer = Gimp.Layer(image, name, 32, 24, 4)
    for y in range(24):
        for x in range(32):
            px = RED if x < 16 else BLUE
            if paint and paint[0] <= x < paint[2] and paint[1] <= y < paint[3]:
                px = colour
            layer.data[(y * 32 + x) * 4:(y * 32 + x) * 4 + 4] = bytes(px)
    return image.add(layer, 2, 3)


def run_layout(module, Gimp, srv, target_colour=BLUE):
    proc = create(module, "python-fu-magic-layout")
    image, base, _moved = scene(Gimp)
    source = label_layer(Gimp, image, "labels")
    target = label_layer(Gimp, image, "wanted", paint=(4, 6, 10, 12), colour=target_colour)
    cfg = config_for(proc, **{"source-labels": source, "target-labels": target, "samples": 1,
                              "seed": 5, "preset": "tiny", "server-address": srv.address})
    result = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base], cfg, None)
    return result, image, base


def test_layout_through_a_real_server_reaches_the_engine_as_label_indices(plugin, tmp_path,
                                                                          monkeypatch):
    module, Gimp = plugin
    monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
    engine = FakeEngine(step_s=0.0, iterations=2)
    with ThreadedServer(engine) as srv:
        (status, message), image, base = run_layout(module, Gimp, srv)
    assert (status, message) == ("SUCCESS", None)
    call = engine.last_call
    source, target = call["source_labels"], call["target_labels"]
    assert source.shape == target.shape == (24, 32)
    assert len(np.unique(source)) == 2  # red and blue: two labels
    changed = np.zeros((24, 32), bool)
    changed[6:12, 4:10] = True
    assert np.array_equal(source != target, changed)
    assert call["options"].mode == "layout" and call["options"].preset == "tiny"
    group = image.layers[image.layers.index(base) - 1]
    assert group.name == "MAGIC layout tiny (seed 5)"
    assert [c.name for c in group.children] == ["MAGIC layout tiny seed 5"]
    assert image.undo_groups == 1


def test_a_foreign_target_colour_is_named_to_the_artist(plugin, tmp_path, monkeypatch):
    module, Gimp = plugin
    monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
    engine = FakeEngine(step_s=0.0, iterations=2)
    with ThreadedServer(engine) as srv:
        (status, message), image, _base = run_layout(module, Gimp, srv,
                                                     target_colour=(250, 250, 0, 255))
    assert status == "EXECUTION_ERROR"
    assert "#fafa00" in message and "not a label colour of the source map" in message
    assert "36 pixels" in message and "\n" not in message and "Traceback" not in message
    assert engine.calls == 0 and not any(la.is_group() for la in image.layers)


def stand_in_label_map(image, labels, seed, on_progress, cancel):
    """The server's label-map step without magic_server.labels.clustering: two halves."""
    from magic_server.engine.api import Progress
    from magic_server.serve.jobs import LabelMapResult

    on_progress(Progress(1, 1, 0.0, stage="label-map"))
    out = np.zeros(image.shape, np.uint8)
    out[:, : image.shape[1] // 2] = RED[:3]
    out[:, image.shape[1] // 2:] = BLUE[:3]
    return LabelMapResult([out], [seed], 0.0, notes=[f"the photo gave 2 regions, not {labels}"])


def test_label_map_through_a_real_server_then_layout_edit_offers_its_layers(plugin, tmp_path,
                                                                            monkeypatch):
    from magic_server.serve import jobs

    module, Gimp = plugin
    monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
    monkeypatch.setattr(jobs, "label_map_result", stand_in_label_map)
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        proc = create(module, "python-fu-magic-label-map")
        image, base, _moved = scene(Gimp)
        cfg = config_for(proc, **{"labels": 4, "seed": 2, "server-address": srv.address})
        status, message = module.run_procedure(proc, Gimp.RunMode.NONINTERACTIVE, image, [base],
                                               cfg, None)
    assert (status, message) == ("SUCCESS", None)
    target, source = image.layers[1], image.layers[2]
    assert (target.name, source.name) == ("MAGIC target labels (paint here)",
                                          "MAGIC source labels")
    assert image.layers[3] is base and image.get_selected_layers() == [target]
    assert target.pixel(0, 0) == bytes(RED) and target.pixel(31, 23) == bytes(BLUE)
    assert bytes(source.data) == bytes(target.data)
    assert image.undo_groups == 1
    told = [c[1] for c in fake.PROGRESS.calls if c[0] == "message"]
    assert len(told) == 1 and "Layout edit" in told[0]
    assert told[0].endswith("Note: the photo gave 2 regions, not 4.")
    # Layout edit's dialog on this image starts with the two new layers
    layout = procedures.BY_NAME["python-fu-magic-layout"]
    cfg = fake.Config(procedures.defaults(layout))
    assert module.restore_memory(image, layout, cfg) is False  # layers only: no values yet
    assert cfg.values["source-labels"] is source and cfg.values["target-labels"] is target
