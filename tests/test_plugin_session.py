"""The artist's session on the fake GIMP 3: remembered arguments (Re-show, Repeat, failed runs),
server-fitting defaults, the dialog's presets and title, one progress bar, and the cancel guard
that cancels the job on the real server when GIMP kills the plug-in."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fakes import gimp3 as fake

from gimp_plugin import cancel_guard, manifest, memory, procedures, settings, workflow

HERE = Path(__file__).resolve().parent
from test_server_support import FakeEngine, ThreadedServer, address

ENTRY = Path(manifest.REPO_ROOT) / manifest.GIMP3.entry
SYNTH = "python-fu-magic-synthesize"
LAYOUT, LABEL_MAP = "python-fu-magic-layout", "python-fu-magic-label-map"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    with fake.installed() as Gimp:
        spec = importlib.util.spec_from_file_location("magic_gimp3", ENTRY)
        module = importlib.util.module_from_spec(spec)
        sys.modules["magic_gimp3"] = module
        spec.loader.exec_module(module)
        monkeypatch.setattr(module, "PLUGIN_DIR", str(tmp_path))
        yield module, Gimp


def scene(Gimp):
    """Photo with a white source mask layer and a white guide mask layer, both 4x4."""
    image = Gimp.Image(40, 30)
    base = image.add(Gimp.Layer(image, "photo", 40, 30, 4).fill((80, 90, 100, 255)))
    src = image.add(Gimp.Layer(image, "source", 4, 4, 4).fill((255, 255, 255, 255)), 5, 5)
    guide = image.add(Gimp.Layer(image, "guide", 4, 4, 4).fill((255, 255, 255, 255)), 25, 15)
    return image, base, src, guide


def config(name=SYNTH, **over):
    values = procedures.defaults(procedures.BY_NAME[name])
    values.update(over)
    return fake.Config(values)


def run(module, Gimp, mode, image, base, cfg, name=SYNTH):
    proc = module.MagicPlugIn().do_create_procedure(name)
    return module.run_procedure(proc, mode, image, [base], cfg, None)


# ------------------------------------------------------------------------ remembered arguments

def test_repeat_and_reshow_use_the_remembered_layers(plugin, monkeypatch):
    module, Gimp = plugin
    dialogs = []

    def dialog(procedure, cfg, spec, *shown):
        dialogs.append(dict(cfg.values))
        return True

    monkeypatch.setattr(module, "show_dialog", dialog)
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        image, base, src, guide = scene(Gimp)
        first = config(**{"source-mask": src, "guide-mask": guide, "samples": 2,
                          "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, first) == ("SUCCESS",
                                                                                    None)
        history = list(image.history)
        # GIMP 3.0 hands Repeat (and Re-show) the last values without the layers
        empty = config(**{"samples": 2, "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.WITH_LAST_VALS, image, base, empty) == (
            "SUCCESS", None)
        assert empty.values["source-mask"] is src and empty.values["guide-mask"] is guide
        reshow = config()
        assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, reshow)[0] == "SUCCESS"
    assert dialogs[1]["source-mask"] is src and dialogs[1]["samples"] == 2
    assert dialogs[1]["server-address"] == srv.address
    groups = [la for la in image.layers if la.is_group()]
    assert [g.name.split(" (")[0] for g in groups] == ["MAGIC reshape quality"] * 3
    # the newest on top and shown, the earlier ones hidden; Vary (on) gave each its own seed
    assert [g.visible for g in groups] == [True, False, False]
    assert len({g.name for g in groups}) == 3
    # remembering made no undo step and the photo is the selected layer again
    assert not any(h.startswith("parasite") for h in image.history)
    # the first result group hidden, then the next one inserted above it
    assert image.history[len(history)].startswith("visible MAGIC reshape quality (seeds "), image.history
    assert image.history[len(history) + 1].startswith("insert MAGIC reshape quality (seeds ")
    assert image.get_selected_layers() == [base]
    assert image.parasites[memory.PARASITE_NAME].flags == 0


def test_repeat_after_undo_and_redo_runs_on_the_photo_not_on_the_result(plugin, monkeypatch):
    """GIMP's Redo selects the result layer it adds back: Repeat still runs on the photo (with
    the same masks), not on MAGIC's own cropped result. A layer the artist picked stays."""
    module, Gimp = plugin
    monkeypatch.setattr(module, "show_dialog", lambda procedure, cfg, spec, *shown: True)
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        image, base, src, guide = scene(Gimp)
        first = config(**{"source-mask": src, "guide-mask": guide, "samples": 1,
                          "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, first)[0] == "SUCCESS"
        group = next(la for la in image.layers if la.is_group())
        result = group.children[0]
        assert module.made_by_magic(result) and module.made_by_magic(group)
        assert not module.made_by_magic(base)
        first_masks = {k: srv.engine.last_call[k].copy() for k in ("source_mask", "guide_mask")}
        image.set_selected_layers([result])  # what Redo leaves selected
        again = config(**{"samples": 1, "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.WITH_LAST_VALS, image, base=result,
                   cfg=again) == ("SUCCESS", None)
        call = srv.engine.last_call
        assert call["image"].shape[:2] == (30, 40)  # the photo's pixels, not the result's
        for k, mask in first_masks.items():
            assert (call[k] == mask).all(), k
        assert [la.name.split(" (")[0] for la in image.layers] == [
            "guide", "source", "MAGIC reshape quality", "MAGIC reshape quality", "photo"]
        assert image.get_selected_layers() == [base]
        # the artist's own layer is run on as chosen (here: refused, it is the source mask)
        status, message = run(module, Gimp, Gimp.RunMode.WITH_LAST_VALS, image, base=src,
                              cfg=config(**{"server-address": srv.address}))
        assert status == "EXECUTION_ERROR" and "active layer itself" in message


def test_a_failed_run_keeps_the_dialog_values(plugin, monkeypatch):
    module, Gimp = plugin
    seen = []

    def dialog(procedure, cfg, spec, *shown):
        seen.append(dict(cfg.values))
        if len(seen) == 1:  # the artist's choices in the first dialog
            cfg.set_property("samples", 5)
            cfg.set_property("seed", 77)
            cfg.set_property("vary", False)  # a fixed seed: the next dialog shows it
            cfg.set_property("guide-mask", guide)
            cfg.set_property("server-address", down)
        return True

    monkeypatch.setattr(module, "show_dialog", dialog)
    image, base, src, guide = scene(Gimp)
    down = address()
    status, message = run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base,
                          config(**{"source-mask": src}))
    assert status == "EXECUTION_ERROR" and "not running" in message
    run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, config())  # GIMP kept nothing
    again = seen[1]
    assert (again["samples"], again["seed"], again["server-address"]) == (5, 77, down)
    assert again["source-mask"] is src and again["guide-mask"] is guide


def test_a_remembered_layer_is_found_by_name_when_its_id_is_gone(plugin):
    module, Gimp = plugin
    image, _base, src, _guide = scene(Gimp)
    store = memory.remember({}, SYNTH, {"samples": 4},
                            {"source-mask": (999999, "source"), "guide-mask": None})
    image.attach_parasite(Gimp.Parasite.new(memory.PARASITE_NAME, 0, memory.encode(store)))
    cfg = config()
    assert module.restore_memory(image, procedures.BY_NAME[SYNTH], cfg)
    assert cfg.values["source-mask"] is src and cfg.values["guide-mask"] is None
    assert cfg.values["samples"] == 4
    # a layer of another image with the remembered id is not taken
    other, *_ = scene(Gimp)
    store = memory.remember({}, SYNTH, {}, {"source-mask": (other.layers[0].id, "nothing")})
    image.attach_parasite(Gimp.Parasite.new(memory.PARASITE_NAME, 0, memory.encode(store)))
    module.restore_memory(image, procedures.BY_NAME[SYNTH], cfg)
    assert cfg.values["source-mask"] is None


def test_memory_ignores_foreign_or_broken_data():
    assert memory.decode(b"not json") == {}
    assert memory.decode(b'{"version": 99, "procedures": {}}') == {}
    assert memory.recall({}, SYNTH) is None
    store = memory.decode(memory.encode(memory.remember({}, "p", {"a": 1}, {"l": (3, "x")})))
    assert memory.recall(store, "p") == ({"a": 1}, {"l": (3, "x")})


# ------------------------------------------------------------------------ defaults and dialog

def test_defaults_fit_the_server(plugin, monkeypatch):
    module, _Gimp = plugin
    spec = procedures.BY_NAME[SYNTH]
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:  # device "cpu"
        cfg = config(**{"server-address": srv.address})
        module.fit_defaults_to_server(spec, cfg, {})
        assert (cfg.values["preset"], cfg.values["samples"]) == ("draft", 1)
    cfg = config(**{"server-address": address()})  # nobody there: the quick choice
    module.fit_defaults_to_server(spec, cfg, {})
    assert (cfg.values["preset"], cfg.values["samples"]) == ("draft", 1)
    from gimp_plugin import gimp3_host

    monkeypatch.setattr(gimp3_host.DirectRunner, "handshake",
                        lambda self, a, t: {"device": "cuda:0", "presets": []})
    cfg = config()
    module.fit_defaults_to_server(spec, cfg, {})
    assert (cfg.values["preset"], cfg.values["samples"]) == ("quality", 3)
    cfg = config(preset="paper")  # the artist's own choice stays
    module.fit_defaults_to_server(spec, cfg, {})
    assert (cfg.values["preset"], cfg.values["samples"]) == ("paper", 3)


def test_dialog_title_and_presets():
    assert procedures.dialog_title(procedures.BY_NAME[SYNTH]) == "MAGIC - Mask-guided synthesis"
    assert all("_" not in procedures.dialog_title(p) for p in procedures.PROCEDURES)
    assert "tiny" in procedures.PRESETS and "tiny" in procedures.TEST_PRESETS


def test_test_presets_are_removed_from_the_dialog_combo(plugin):
    module, _ = plugin

    class Model:
        def __init__(self, ids):
            self.rows = list(ids)

        def get_iter_first(self):
            return 0 if self.rows else None

        def get_value(self, it, column):
            assert column == 1
            return self.rows[it]

        def iter_next(self, it):
            return it + 1 if it + 1 < len(self.rows) else None

        def remove(self, it):
            del self.rows[it]
            return it < len(self.rows)

    class Combo:
        model = Model(procedures.PRESETS)

        def get_model(self):
            return self.model

        def get_property(self, name):
            assert name == "id-column"
            return 1

    class Labeled:
        def get_widget(self):
            return Combo()

    class Dialog:
        def get_widget(self, name, widget_type):
            assert name == "preset"
            return Labeled()

    fake_ui = type("GimpUi", (), {"StringComboBox": type("S", (), {"__gtype__": "GType"})})
    sys.modules["gi.repository"].GimpUi = fake_ui
    cfg = config(preset="tiny")
    assert module.hide_test_presets(Dialog(), cfg, procedures.BY_NAME[SYNTH]) == [
        "quality", "draft", "paper"]
    assert Combo.model.rows == ["quality", "draft", "paper"]
    assert cfg.values["preset"] == "draft"
    # the label map's dialog has no preset (its config no such property): nothing to hide
    assert module.hide_test_presets(Dialog(), config(LABEL_MAP),
                                    procedures.BY_NAME[LABEL_MAP]) is None


def test_every_mnemonic_in_a_dialog_is_unique():
    taken_by_gimp = set("hrcols")  # _Help _Reset _Cancel _OK _Load/_Save Settings
    for proc in procedures.PROCEDURES:
        keys = [a.label[a.label.index("_") + 1].lower() for a in proc.args]
        assert len(keys) == len(set(keys)), proc.name
        assert not set(keys) & taken_by_gimp, proc.name
        assert all(a.plain_label == a.label.replace("_", "") for a in proc.args)


# ------------------------------------------------------------------------ masks and progress

def test_mask_guided_synthesis_with_mode_move_uses_the_guide_layer(plugin):
    module, Gimp = plugin
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        for mode in ("move", "copy"):
            image, base, src, guide = scene(Gimp)
            cfg = config(**{"source-mask": src, "guide-mask": guide, "mode": mode,
                            "samples": 1, "server-address": srv.address})
            assert run(module, Gimp, Gimp.RunMode.NONINTERACTIVE, image, base, cfg) == (
                "SUCCESS", None)
            assert [la.name for la in image.layers if la.is_group()] == [
                f"MAGIC {mode} quality (seed 0)"]
        # remove may go without a guide: nothing stays
        image, base, src, _guide = scene(Gimp)
        cfg = config(**{"source-mask": src, "mode": "remove", "samples": 1,
                        "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.NONINTERACTIVE, image, base, cfg) == (
            "SUCCESS", None)
        assert not srv.engine.last_call["guide_mask"].any()


def test_one_bar_whose_time_left_is_measured():
    now = [100.0]
    bar = workflow.JobProgress("move", clock=lambda: now[0])
    f, text = bar.event("progress", {"iteration": 60, "total": 120, "stage": "mask-net",
                                     "eta_s": 30})
    assert f == pytest.approx(0.05) and text == ("MAGIC move: learning the object 60/120 - "
                                                 "this step: 30 s left")
    f, _ = bar.event("progress", {"iteration": 120, "total": 120, "stage": "mask-net"})
    assert f == pytest.approx(0.1)
    fractions = []
    for i in range(0, 101, 10):  # 10 iterations every 2 s, then 10 every 8 s (refine)
        now[0] += 2.0 if i <= 50 else 8.0
        f, text = bar.event("progress", {"iteration": i, "total": 100, "eta_s": 1.0,
                                         "stage": "synthesis" if i <= 50 else "refine"})
        fractions.append(f)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    # half way through the slow part the estimate follows the recent pace, not the average
    now[0] = 0.0
    bar = workflow.JobProgress("move", clock=lambda: now[0])
    for i in range(0, 51, 10):
        now[0] += 8.0
        f, text = bar.event("progress", {"iteration": i, "total": 100, "eta_s": 1.0})
    assert text.endswith("- 40 s left")  # 50 left at 10 per 8 s
    assert bar.event("accepted", {"position": 0}) == (None, "MAGIC move: started")


def test_the_first_progress_text_names_the_job_not_a_stage(plugin):
    _module, _Gimp = plugin
    from gimp_plugin.gimp3_host import Gimp3Host

    host = Gimp3Host()
    host.progress_start("MAGIC move")
    host.progress_update(None, "MAGIC move: connecting to tcp://x")
    assert fake.PROGRESS.calls[0] == ("init", "MAGIC move")
    assert ("text", "MAGIC move: connecting to tcp://x") in fake.PROGRESS.calls
    assert not any(c[0] in ("pulse", "update") for c in fake.PROGRESS.calls)


def test_server_field_and_curve_options():
    cfg = {"server_address": "tcp://a:1", "server_public_key": "S" * 40,
           "client_public_key": "P" * 40, "client_secret_key": "Q" * 40}
    assert settings.resolve_address("", cfg) == "tcp://a:1"
    assert settings.curve_options("", cfg)["server_public_key"] == "S" * 40
    # another server named in the dialog: the installed server key is not its key
    assert settings.curve_options("tcp://b:2", cfg) == {}
    field = settings.curve_options("tcp://b:2 server-key=K=K client-keys=/k", cfg)
    assert field["server_public_key"] == "K=K" and field["client_keys"] == "/k"
    assert "client_secret_key" not in field
    assert settings.curve_options("", {"server_address": "tcp://a:1"}) == {}


# ------------------------------------------------------------------------ cancel guard

def test_guard_cancels_only_when_the_plugin_dies_before_the_end():
    calls = []
    lines = ['{"address": "tcp://x", "curve": null, "cancel_key": "k123"}\n', '{"job": "j1"}\n']
    assert cancel_guard.watch(lines, lambda *a: calls.append(a)) == "j1"
    assert calls == [("tcp://x", {}, "j1", None)]  # by id once the server accepted the job
    calls.clear()
    assert cancel_guard.watch(lines + ['{"done": true}\n'], lambda *a: calls.append(a)) is None
    assert calls == []
    # died before the answer was read (the job may still be on its way): by the cancel key
    assert cancel_guard.watch(lines[:1] + ["garbage\n"], lambda *a: calls.append(a)) == "k123"
    assert calls == [("tcp://x", {}, None, "k123")]
    calls.clear()
    old_setup = ['{"address": "tcp://x", "curve": null}\n']  # no key: nothing to cancel by
    assert cancel_guard.watch(old_setup, lambda *a: calls.append(a)) is None
    assert calls == []


def _plugin_with_a_guarded_job(address: str, prelude: str = "") -> subprocess.Popen:
    """A plug-in process (the GIMP 3 host's runner, its cancel guard on) submitting a long
    move job to `address`; `prelude` runs first in it."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(HERE / "fakes")!r}, {str(HERE)!r}, {str(manifest.REPO_ROOT)!r}]
        from magic_protocol import client
        from gimp_plugin.gimp3_host import DirectRunner
        {{prelude}}
        w, h = 8, 6
        mask = bytes([255] * 3 + [0] * (w * h - 3))
        request = {{"width": w, "height": h, "image": bytes(w * h * 4),
                    "source_mask": mask, "guide_mask": mask[::-1],
                    "params": {{"mode": "move", "samples": 1, "preset": "tiny", "seed": 0}}}}
        DirectRunner(guard=True).submit({address!r}, request,
            lambda kind, info: print(kind, flush=True), lambda: False, None)
    """).replace("{prelude}", prelude)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _seconds_until_the_job_stops(client, child: subprocess.Popen) -> float:
    """SIGKILL the plug-in (as GIMP ends a cancelled one) and time until the server runs
    nothing (10 s at most)."""
    assert client.status()["running"] is not None, "the job never ran"
    os.kill(child.pid, signal.SIGKILL)
    t0 = time.monotonic()
    while client.status()["running"] is not None and time.monotonic() - t0 < 10:
        time.sleep(0.02)
    return time.monotonic() - t0


@pytest.mark.parametrize("deaf, said", [
    (False, "cancelled on the server"),
    # killed after its job reached the server but before the plug-in saw the job's id (while
    # the image is on its way, or just after): cancelled by its key, not when the server
    # misses its heartbeats (10 s)
    (True, "(by its cancel key) cancelled on the server"),
], ids=["after-its-first-progress", "before-it-read-the-servers-answer"])
def test_a_killed_plugin_has_its_job_cancelled_on_the_server_within_2_s(deaf, said):
    """GIMP ends a cancelled plug-in with SIGKILL: the guard process cancels the job."""
    from magic_protocol.client import MagicClient

    engine = FakeEngine(step_s=0.05, iterations=4000)
    with ThreadedServer(engine) as srv:
        # deaf: the answers never reach this plug-in, it dies knowing no job id
        child = _plugin_with_a_guarded_job(
            srv.address,
            "client.MagicClient._recv = lambda self, timeout_s: time.sleep(timeout_s)"
            if deaf else "")
        try:
            if not deaf:
                for line in child.stdout:
                    if line.strip() == "progress":
                        break
            with MagicClient(srv.address, timeout_s=5) as client:
                t0 = time.monotonic()
                while client.status()["running"] is None and time.monotonic() - t0 < 30:
                    assert child.poll() is None, child.stderr.read()
                    time.sleep(0.02)
                took = _seconds_until_the_job_stops(client, child)
        finally:
            child.kill()
            child.wait()
        assert took < 2.0, f"the job ran on for {took:.1f} s"
        assert said in child.stderr.read()


# ------------------------------------------------------------------------ label map and layout

def test_label_map_and_layout_remember_their_arguments(plugin, monkeypatch):
    import numpy as np

    from magic_server.serve import jobs
    from magic_server.serve.jobs import LabelMapResult

    def two_halves(image, labels, seed, on_progress, cancel):
        out = np.zeros(image.shape, np.uint8)
        out[:, 20:] = (0, 0, 200)
        return LabelMapResult([out], [seed], 0.0)

    module, Gimp = plugin
    monkeypatch.setattr(jobs, "label_map_result", two_halves)
    dialogs = []

    def dialog(procedure, cfg, spec, *shown):
        dialogs.append((spec.name, dict(cfg.values)))
        if spec.name == LABEL_MAP and len(dialogs) == 1:
            cfg.set_property("labels", 4)
        return True

    monkeypatch.setattr(module, "show_dialog", dialog)
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        image, base, _src, _guide = scene(Gimp)
        cfg = config(LABEL_MAP, **{"server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, cfg,
                   LABEL_MAP) == ("SUCCESS", None)
        target = image.get_layer_by_name("MAGIC target labels (paint here)")
        source = image.get_layer_by_name("MAGIC source labels")
        target.data[:4] = bytes([0, 0, 200, 255])  # paint one pixel blue
        # Layout edit's first dialog: the label map's layers, the server-fitting defaults
        empty = config(LAYOUT, **{"server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, empty,
                   LAYOUT) == ("SUCCESS", None)
        # Repeat of the layout edit (GIMP 3.0 hands it no layers) and Re-show of the label map
        again = config(LAYOUT, **{"server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.WITH_LAST_VALS, image, base, again,
                   LAYOUT) == ("SUCCESS", None)
        assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, config(LABEL_MAP),
                   LABEL_MAP)[0] == "SUCCESS"
    layout_dialog = dialogs[1][1]
    assert dialogs[1][0] == LAYOUT
    assert layout_dialog["source-labels"] is source and layout_dialog["target-labels"] is target
    assert (layout_dialog["preset"], layout_dialog["samples"]) == ("draft", 1)  # a CPU server
    assert again.values["source-labels"] is source and again.values["target-labels"] is target
    assert dialogs[2][0] == LABEL_MAP and dialogs[2][1]["labels"] == 4
    assert dialogs[2][1]["server-address"] == srv.address
    assert [la.name.split(" (")[0] for la in image.layers if la.is_group()] == [
        "MAGIC layout draft"] * 2


# ------------------------------------------------------------------------ the artist's loop

def move_scene(Gimp):
    """A photo, its object selected, and the object pasted as a visible layer somewhere else
    (what an artist does before Move object...)."""
    image = Gimp.Image(40, 30)
    base = image.add(Gimp.Layer(image, "photo", 40, 30, 4).fill((80, 90, 100, 255)))
    moved = image.add(Gimp.Layer(image, "Pasted Layer", 4, 4, 4).fill((9, 9, 9, 255)), 25, 15)
    image.select(5, 5, 9, 9)
    image.set_selected_layers([base])
    return image, base, moved


def visible_on_top(image):
    """The top-most visible layer (or group) of the image: what covers the canvas first."""
    return next(la for la in image.layers if la.visible)


MOVE = "python-fu-magic-move-object"
KEEP = "python-fu-magic-keep-sample"


def test_the_canvas_shows_each_new_result_and_undo_brings_back_the_moved_layer(plugin,
                                                                              monkeypatch):
    module, Gimp = plugin
    monkeypatch.setattr(module, "show_dialog", lambda procedure, cfg, spec, *shown: True)
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        image, base, moved = move_scene(Gimp)
        cfg = config(MOVE, **{"moved-layer": moved, "samples": 2,
                              "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, cfg, MOVE)[0] == \
            "SUCCESS"
        first = image.layers[1]
        # the moved layer is hidden (not deleted), the result is what the canvas shows
        assert image.layers[0] is moved and not moved.visible
        assert first.is_group() and visible_on_top(image) is first
        assert image.layers[2] is base
        seed1 = srv.engine.last_call["options"].seed
        # Filters > Repeat: a new seed, a new group on top of the first, which is hidden
        again = config(MOVE, **{"samples": 2, "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.WITH_LAST_VALS, image, base, again,
                   MOVE)[0] == "SUCCESS"
        seed2 = srv.engine.last_call["options"].seed
        second = image.layers[1]
        assert seed2 != seed1 and second is not first
        assert [la.name for la in image.layers] == [
            "Pasted Layer", f"MAGIC move quality (seeds {seed2}-{seed2 + 1})",
            f"MAGIC move quality (seeds {seed1}-{seed1 + 1})", "photo"]
        assert visible_on_top(image) is second and not first.visible
        assert run(module, Gimp, Gimp.RunMode.NONINTERACTIVE, image, base,
                   config(MOVE, **{"moved-layer": moved, "samples": 1, "seed": 5,
                                   "server-address": srv.address}), MOVE)[0] == "SUCCESS"
        assert srv.engine.last_call["options"].seed == 5  # a script's seed is used as given
    # Edit > Undo, three times: each run goes, the earlier result shows again, then the paste
    assert image.undo() and image.undo()
    assert image.layers[1] is first and first.visible and not moved.visible
    assert image.undo()
    assert [la.name for la in image.layers] == ["Pasted Layer", "photo"] and moved.visible


def test_vary_off_keeps_the_seed_and_the_dialog_shows_the_seed_it_will_use(plugin,
                                                                            monkeypatch):
    module, Gimp = plugin
    shown = []

    def dialog(procedure, cfg, spec, *rest):
        if len(shown) == 2:  # the artist turns Vary off and types a seed in the third dialog
            cfg.set_property("vary", False)
            cfg.set_property("seed", 7)
        shown.append(cfg.values["seed"])
        return True

    monkeypatch.setattr(module, "show_dialog", dialog)
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        image, base, moved = move_scene(Gimp)
        seeds = []
        for _ in range(4):
            cfg = config(MOVE, **{"moved-layer": moved, "samples": 1,
                                  "server-address": srv.address})
            assert run(module, Gimp, Gimp.RunMode.INTERACTIVE, image, base, cfg, MOVE)[0] == \
                "SUCCESS"
            seeds.append(srv.engine.last_call["options"].seed)
    assert seeds == shown  # what the dialog showed is what ran
    assert seeds[0] != seeds[1] and seeds[2] == seeds[3] == 7


def test_keep_this_sample_drops_the_other_samples_of_its_run(plugin, monkeypatch):
    module, Gimp = plugin
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        image, base, moved = move_scene(Gimp)
        cfg = config(MOVE, **{"moved-layer": moved, "samples": 3, "seed": 10,
                              "server-address": srv.address})
        assert run(module, Gimp, Gimp.RunMode.NONINTERACTIVE, image, base, cfg, MOVE)[0] == \
            "SUCCESS"
    group = image.layers[1]
    chosen = group.children[1]
    assert chosen.name == "MAGIC move quality seed 11"
    proc = module.MagicPlugIn().do_create_procedure(KEEP)
    # on the photo (no sample selected): says what to select, changes nothing
    status, message = module.run_procedure(proc, Gimp.RunMode.INTERACTIVE, image, [base],
                                           fake.Config({}), None)
    assert status == "EXECUTION_ERROR" and "Select one MAGIC result layer" in message
    assert len(group.children) == 3
    chosen.set_visible(False)
    status, message = module.run_procedure(proc, Gimp.RunMode.INTERACTIVE, image, [chosen],
                                           fake.Config({}), None)
    assert (status, message) == ("SUCCESS", None)
    assert group.children == [chosen] and chosen.visible
    assert image.get_selected_layers() == [chosen]
    assert image.undo()  # one undo step brings the other samples back
    assert [c.name for c in group.children] == [f"MAGIC move quality seed {s}"
                                                for s in (10, 11, 12)]


def test_a_long_run_asks_first_and_a_no_starts_nothing(plugin, monkeypatch):
    _module, Gimp = plugin
    from gimp_plugin.gimp3_host import DirectRunner, Gimp3Host

    questions = []
    host = Gimp3Host()
    host.confirm = lambda text: questions.append(text) or False
    with ThreadedServer(FakeEngine(step_s=0.0, iterations=2)) as srv:
        image, base, moved = move_scene(Gimp)
        srv.server.estimates.iterations = {"paper": 18000, "draft": 240}
        srv.server.estimates.observe("draft", 240, 1, 76.8)  # 0.32 s an iteration
        args = procedures.defaults(procedures.BY_NAME[MOVE])
        args.update({"moved-layer": moved, "samples": 1, "preset": "paper",
                     "server-address": srv.address})
        with pytest.raises(workflow.UserError) as err:
            workflow.run(host, DirectRunner(), image, base, "move", args, {})
        assert err.value.cancelled and "Not started" in err.value.message
        assert srv.engine.calls == 0 and [la.name for la in image.layers] == [
            "Pasted Layer", "photo"]
        assert len(questions) == 1 and questions[0].startswith(
            "This run is estimated to take 1 h 36 min on the MAGIC server")
        # a short one (draft) is not asked about
        args["preset"] = "draft"
        workflow.run(host, DirectRunner(), image, base, "move", args, {})
        assert len(questions) == 1 and srv.engine.calls == 1


def test_the_dialog_summary_names_what_the_run_will_use():
    spec = procedures.BY_NAME[MOVE]
    values = procedures.defaults(spec)
    values.update({"seed": 42, "vary": True, "moved-layer": None})
    info = {"device": "cpu", "estimates": {"draft": {"iterations": 240, "seconds": 76.8,
                                                     "seconds_per_iteration": 0.32,
                                                     "source": "measured"}}}
    text = procedures.dialog_summary(spec, values, lambda la: la, "photo", "about 1 min")
    assert text.splitlines() == [
        "Runs on the photo layer 'photo'.", "Moved layer: none: pick the layer you moved",
        "Source: none: the selection marks the object",
        "Seed: 42 (Vary is on: the next run draws a new one)", "Time: about 1 min"]
    values.update({"moved-layer": "Pasted Layer", "vary": False, "preset": "draft"})
    text = procedures.dialog_summary(spec, values, lambda la: la, "photo", "x")
    assert "Moved layer: 'Pasted Layer'" in text and "Seed: 42 (fixed)" in text
    assert workflow.preset_estimate_text(info, "draft") == "about 1 min"
    assert workflow.preset_estimate_text(info, "paper") == ""
    assert workflow.estimate_seconds(info, {"preset": "draft", "samples": 3,
                                            "iterations": 100})[0] == pytest.approx(96.0)
