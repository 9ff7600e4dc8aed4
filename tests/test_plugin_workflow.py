"""The plug-in's run (gimp_plugin.workflow + gimp3_host.Gimp3Host) on a fake GIMP 3 image,
with a scripted runner standing in for the server."""

from __future__ import annotations

import pytest
from fakes import gimp3 as fake

from gimp_plugin import edit_request, procedures, workflow
from gimp_plugin import masks as M
from gimp_plugin.workflow import RunnerError, UserError

W, H = 40, 30
BASE_AT = (5, 7)  # the photo layer is offset inside the canvas


class ScriptedRunner:
    """Records what the plug-in sends; answers with flat-colour images or a scripted error."""

    def __init__(self, error: RunnerError | None = None, handshake_error=None,
                 info: dict | None = None, events=()):
        self.error, self.handshake_error = error, handshake_error
        self.info = info or {"max_pixels": 10**8, "presets": list(procedures.PRESETS)}
        self.events = list(events)
        self.requests: list[dict] = []
        self.handshakes = 0

    def handshake(self, address, timeout_s):
        self.handshakes += 1
        if self.handshake_error:
            raise self.handshake_error
        return self.info

    def submit(self, address, request, on_event, cancelled, timeout_s):
        self.requests.append(dict(request, address=address, timeout_s=timeout_s))
        for kind, info in self.events:
            on_event(kind, info)
        if self.error:
            raise self.error
        p = request["params"]
        w, h = request["width"], request["height"]
        images = [(bytes([10 * i + 1, 2, 3]) * (w * h), w, h) for i in range(p["samples"])]
        return images, [p["seed"] + i for i in range(p["samples"])], []


@pytest.fixture
def gimp():
    with fake.installed() as Gimp:
        from gimp_plugin.gimp3_host import Gimp3Host

        yield Gimp, Gimp3Host


def scene(Gimp):
    image = Gimp.Image(60, 50)
    base = image.add(Gimp.Layer(image, "photo", W, H, 4).fill((100, 110, 120, 255)), *BASE_AT)
    # Opaque black/white source mask, smaller than the photo and offset (white = object).
    src = Gimp.Layer(image, "src", 10, 10, 4).fill((0, 0, 0, 255))
    for y in range(2, 6):
        for x in range(2, 6):
            src.data[(y * 10 + x) * 4:(y * 10 + x) * 4 + 4] = bytes([255, 255, 255, 255])
    image.add(src, BASE_AT[0] + 8, BASE_AT[1] + 4)  # object at photo (10..14, 6..10)
    # Transparent layer with an opaque patch (guide / moved layer): opaque = object.
    moved = Gimp.Layer(image, "moved", 6, 4, 4)
    for y in range(4):
        for x in range(6):
            moved.data[(y * 6 + x) * 4:(y * 6 + x) * 4 + 4] = bytes([9, 9, 9, 255 if x < 4 else 0])
    image.add(moved, BASE_AT[0] + 30, BASE_AT[1] + 20)  # object at photo (30..34, 20..24)
    return image, base, src, moved


def args_for(name, **over):
    args = procedures.defaults(procedures.BY_NAME[name])
    args.update(over)
    return args


def rect_mask(x0, y0, x1, y1):
    m = bytearray(W * H)
    for y in range(y0, y1):
        m[y * W + x0:y * W + x1] = b"\xff" * (x1 - x0)
    return m


def run(Gimp3Host, runner, image, base, mode, args, config=None):
    return workflow.run(Gimp3Host(), runner, image, base, mode, args,
                        config or {"server_address": "tcp://127.0.0.1:1", "server_command": None})


def test_synthesize_sends_aligned_masks_and_adds_cropped_layers(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner()
    args = args_for("python-fu-magic-synthesize", **{"source-mask": src, "guide-mask": moved,
                                                      "mode": "reshape", "samples": 2, "seed": 4})
    results = run(Gimp3Host, runner, image, base, "reshape", args)

    req = runner.requests[0]
    assert (req["width"], req["height"]) == (W, H)
    assert bytes(req["image"]) == bytes([100, 110, 120, 255]) * (W * H)
    assert req["source_mask"] == rect_mask(10, 6, 14, 10)
    assert req["guide_mask"] == rect_mask(30, 20, 34, 24)
    assert req["params"] == {"mode": "reshape", "samples": 2, "preset": "quality", "seed": 4}
    assert req["address"] == "tcp://127.0.0.1:1"

    margin = edit_request.blend_margin(W, H)
    x0, y0, x1, y1 = 10 - margin, 6 - margin, 34 + margin, 24 + margin
    assert [layer.name for layer in image.layers] == ["moved", "src",
                                                      "MAGIC reshape quality (seeds 4-5)", "photo"]
    group = image.layers[2]
    assert group.is_group() and [c.name for c in group.children] == [
        "MAGIC reshape quality seed 4", "MAGIC reshape quality seed 5"]
    for i, layer in enumerate(group.children):
        assert (layer.x, layer.y) == (BASE_AT[0] + x0, BASE_AT[1] + y0)
        assert (layer.width, layer.height) == (x1 - x0, y1 - y0)
        area = M.crop(M.dilate(M.union(req["source_mask"], req["guide_mask"]), W, H, margin),
                      W, H, (x0, y0, x1, y1))
        assert bytes(layer.data[3::4]) == bytes(area)
        assert layer.pixel(margin, margin)[:3] == bytes([10 * i + 1, 2, 3])
    assert len(results) == 2
    assert image.undo_groups == 1 and image.undo_depth == 0 and image.log == []
    # nothing else changed
    assert bytes(base.data) == bytes([100, 110, 120, 255]) * (W * H)
    assert (base.x, base.y) == BASE_AT


def test_selection_is_the_source_and_move_guide_is_the_moved_alpha(gimp):
    Gimp, Gimp3Host = gimp
    image, base, _src, moved = scene(Gimp)
    image.select(BASE_AT[0] + 1, BASE_AT[1] + 2, BASE_AT[0] + 5, BASE_AT[1] + 6)
    runner = ScriptedRunner()
    run(Gimp3Host, runner, image, base, "move",
        args_for("python-fu-magic-move-object", **{"moved-layer": moved, "samples": 1}))
    req = runner.requests[0]
    assert req["source_mask"] == rect_mask(1, 2, 5, 6)
    assert req["guide_mask"] == rect_mask(30, 20, 34, 24)
    assert req["params"]["mode"] == "move"


def test_copy_guide_keeps_the_object_in_both_places(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner()
    run(Gimp3Host, runner, image, base, "copy",
        args_for("python-fu-magic-copy-object", **{"moved-layer": moved, "source-mask": src}))
    req = runner.requests[0]
    assert req["guide_mask"] == M.union(rect_mask(10, 6, 14, 10), rect_mask(30, 20, 34, 24))


def test_remove_guide_is_source_without_selection_and_whole_image_region(gimp):
    Gimp, Gimp3Host = gimp
    image, base, _src, _moved = scene(Gimp)
    both = Gimp.Layer(image, "objects", W, H, 4).fill((0, 0, 0, 255))
    for x0, y0, x1, y1 in ((2, 2, 6, 6), (20, 10, 25, 15)):
        for y in range(y0, y1):
            for x in range(x0, x1):
                both.data[(y * W + x) * 4:(y * W + x) * 4 + 4] = b"\xff\xff\xff\xff"
    image.add(both, *BASE_AT)
    image.select(BASE_AT[0] + 1, BASE_AT[1] + 1, BASE_AT[0] + 7, BASE_AT[1] + 7)
    runner = ScriptedRunner()
    run(Gimp3Host, runner, image, base, "remove",
        args_for("python-fu-magic-remove-object", **{"source-mask": both,
                                                      "region": "whole-image"}))
    req = runner.requests[0]
    assert req["guide_mask"] == rect_mask(20, 10, 25, 15)
    layer = image.layers[image.layers.index(base) - 1].children[0]
    assert (layer.x, layer.y, layer.width, layer.height) == (*BASE_AT, W, H)
    assert set(layer.data[3::4]) == {255}


@pytest.mark.parametrize("case, message", [
    ("no-selection", "source mask is empty"),
    ("empty-layer", "marks nothing"),
    ("no-guide", "Pick a guide-mask layer"),
    ("guide-is-base", "is the active layer itself"),
    ("full-guide", "covers the whole layer"),
    ("remove-without-selection", "Select the object to remove first"),
    ("move-without-layer", "Pick the moved layer"),
])
def test_mask_problems_are_user_errors_and_change_nothing(gimp, case, message):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    empty = image.add(Gimp.Layer(image, "empty", 5, 5, 4).fill((0, 0, 0, 255)), 0, 0)
    full = image.add(Gimp.Layer(image, "full", 60, 50, 4).fill((255, 255, 255, 255)), 0, 0)
    mode, name, over = {
        "no-selection": ("move", "python-fu-magic-move-object", {"moved-layer": moved}),
        "empty-layer": ("reshape", "python-fu-magic-synthesize",
                        {"source-mask": empty, "guide-mask": moved}),
        "no-guide": ("reshape", "python-fu-magic-synthesize", {"source-mask": src}),
        "guide-is-base": ("reshape", "python-fu-magic-synthesize",
                          {"source-mask": src, "guide-mask": base}),
        "full-guide": ("reshape", "python-fu-magic-synthesize",
                       {"source-mask": src, "guide-mask": full}),
        "remove-without-selection": ("remove", "python-fu-magic-remove-object",
                                     {"source-mask": src}),
        "move-without-layer": ("move", "python-fu-magic-move-object", {}),
    }[case]
    if case == "move-without-layer":
        image.select(5, 5, 9, 9)
    before = [(la.name, la.x, la.y, bytes(la.data)) for la in image.layers]
    runner = ScriptedRunner()
    with pytest.raises(UserError) as err:
        run(Gimp3Host, runner, image, base, mode, args_for(name, **over))
    assert message in err.value.message and "\n" not in err.value.message
    assert not err.value.cancelled
    assert runner.requests == []
    assert [(la.name, la.x, la.y, bytes(la.data)) for la in image.layers] == before
    assert image.undo_groups == 0


@pytest.mark.parametrize("error, message, cancelled", [
    (RunnerError("failed", "engine_input: guide mask is empty"), "could not do this job", False),
    (RunnerError("timeout", "job timed out"), "did not finish in time", False),
    (RunnerError("cancelled", "job cancelled"), "Cancelled", True),
    (RunnerError("mismatch", "protocol 2 vs 1"), "do not match", False),
    (RunnerError("unreachable", "gone"), "magic-server --bind", False),
])
def test_server_side_failures_become_messages_and_no_layers(gimp, error, message, cancelled):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner(error=error)
    n = len(image.layers)
    with pytest.raises(UserError) as err:
        run(Gimp3Host, runner, image, base, "reshape",
            args_for("python-fu-magic-synthesize", **{"source-mask": src, "guide-mask": moved,
                                                       "timeout": 5}))
    assert message in err.value.message
    assert err.value.cancelled == cancelled
    assert runner.requests[0]["timeout_s"] == 5
    assert len(image.layers) == n and image.undo_groups == 0
    assert fake.PROGRESS.calls[-1] == ("end",)


def test_server_down_without_command_says_how_to_start_it(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner(handshake_error=RunnerError("unreachable", "no answer"))
    with pytest.raises(UserError) as err:
        run(Gimp3Host, runner, image, base, "move",
            args_for("python-fu-magic-move-object", **{"moved-layer": moved, "source-mask": src,
                                                        "server-address": "tcp://127.0.0.1:7"}))
    assert err.value.message.startswith("The MAGIC server is not running at tcp://127.0.0.1:7")
    assert "magic-server --bind tcp://127.0.0.1:7" in err.value.message
    assert runner.requests == []


def test_image_too_large_for_the_server(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner(info={"max_pixels": W * H - 1, "presets": ["quality"]})
    with pytest.raises(UserError, match="too large"):
        run(Gimp3Host, runner, image, base, "move",
            args_for("python-fu-magic-move-object", **{"moved-layer": moved, "source-mask": src}))
    assert runner.requests == []


def test_unknown_preset_is_reported(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner(info={"max_pixels": 0, "presets": ["quality"]})
    with pytest.raises(UserError, match="does not know the preset 'tiny'"):
        run(Gimp3Host, runner, image, base, "move",
            args_for("python-fu-magic-move-object", **{"moved-layer": moved, "source-mask": src,
                                                        "preset": "tiny"}))


def test_progress_shows_stage_counts_and_eta(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    events = [("accepted", {"position": 2}),
              ("progress", {"iteration": 30, "total": 120, "eta_s": 95.0, "stage": "synthesis"})]
    run(Gimp3Host, ScriptedRunner(events=events), image, base, "move",
        args_for("python-fu-magic-move-object", **{"moved-layer": moved, "source-mask": src,
                                                    "iterations": 50, "resolution": 64}))
    texts = [c[1] for c in fake.PROGRESS.calls if c[0] == "text"]
    assert "MAGIC move: waiting, 2 job(s) ahead" in texts
    assert "MAGIC move: synthesizing 30/120 - 1 min 35 s left" in texts
    assert ("update", 0.25) in fake.PROGRESS.calls
    assert fake.PROGRESS.calls[0][0] == "init" and fake.PROGRESS.calls[-1] == ("end",)


def test_insert_failure_still_closes_the_undo_group(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    image.insert_layer = lambda *a: False  # GIMP refuses (e.g. a GRAY layer in an RGB image)
    with pytest.raises(RuntimeError):
        run(Gimp3Host, ScriptedRunner(), image, base, "move",
            args_for("python-fu-magic-move-object", **{"moved-layer": moved, "source-mask": src}))
    assert image.undo_groups == 1 and image.undo_depth == 0


def test_preview_frames_never_touch_the_image(gimp):
    """Previews go to the plug-in's own window (none here: no display), never into the image:
    GIMP kills a cancelled plug-in, so a preview layer or frozen undo would stay behind."""
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    seen = []

    class PreviewRunner(ScriptedRunner):
        def submit(self, address, request, on_event, cancelled, timeout_s):
            assert request["params"]["preview"] is True
            for colour in (b"\x10\x20\x30", b"\x40\x50\x60"):
                on_event("progress", {"iteration": 1, "total": 2,
                                      "previews": [(colour * 20, 5, 4)]})
                seen.append(([la.name for la in image.layers], list(image.history),
                             image.frozen))
            return ScriptedRunner.submit(self, address, request, lambda *a: None, cancelled,
                                         timeout_s)

    host = Gimp3Host(preview=True, display=False)
    workflow.run(host, PreviewRunner(), image, base, "move",
                 args_for("python-fu-magic-move-object", **{"moved-layer": moved,
                                                             "source-mask": src}),
                 {"server_address": "tcp://127.0.0.1:1"})
    assert seen == [(["moved", "src", "photo"], [], 0)] * 2
    assert host.previews_received == 2 and host.previews_shown == 0
    group = "MAGIC move quality (seeds 0-2)"
    assert [la.name for la in image.layers] == ["moved", "src", group, "photo"]
    assert image.frozen == 0 and image.undo_groups == 1
    # the inputs (moved layer, source mask layer) hidden, in the result's one undo group
    assert image.history == ["visible src", "visible moved", "insert " + group] + [
        f"insert MAGIC move quality seed {i}" for i in range(3)]
    assert not image.layers[0].visible and not image.layers[1].visible
    assert image.get_selected_layers() == [base]  # the photo again, for Repeat and Re-show


def test_format_eta():
    assert procedures.format_eta(None) == ""
    assert procedures.format_eta(5.4) == "5 s left"
    assert procedures.format_eta(3725) == "1 h 02 min left"


def moved_over_nothing():
    """The scene's moved layer (6x4, opaque 9,9,9 where x < 4, transparent elsewhere) at photo
    (30, 20), written out pixel by pixel: the init frame the plug-in must send."""
    out = bytearray(W * H * 4)
    for y in range(4):
        for x in range(6):
            i = ((20 + y) * W + 30 + x) * 4
            out[i:i + 4] = bytes([9, 9, 9, 255 if x < 4 else 0])
    return out


@pytest.mark.parametrize("mode, name", [("move", "python-fu-magic-move-object"),
                                        ("copy", "python-fu-magic-copy-object")])
def test_move_and_copy_send_the_moved_layer_as_the_init_composite(gimp, mode, name):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner()
    args = args_for(name, **{"moved-layer": moved, "source-mask": src, "samples": 1})
    assert args["seed-from-layer"] is True  # the default
    run(Gimp3Host, runner, image, base, mode, args)
    req = runner.requests[0]
    assert bytes(req["init"]) == bytes(moved_over_nothing())
    assert len(req["init"]) == W * H * 4
    assert "composite" not in req["params"]  # edited-area: the server's default (paste back)


def test_init_follows_layer_offsets_and_is_cropped_at_the_photo_edge(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, _moved = scene(Gimp)
    edge = Gimp.Layer(image, "edge", 4, 3, 4).fill((200, 100, 50, 255))
    image.add(edge, BASE_AT[0] + W - 2, BASE_AT[1] - 1)  # hangs off the top-right corner
    runner = ScriptedRunner()
    run(Gimp3Host, runner, image, base, "move",
        args_for("python-fu-magic-move-object", **{"moved-layer": edge, "source-mask": src}))
    init = runner.requests[0]["init"]
    opaque = {(i // 4 % W, i // 4 // W) for i in range(3, len(init), 4) if init[i]}
    assert opaque == {(x, y) for x in (W - 2, W - 1) for y in (0, 1)}
    i = (1 * W + W - 1) * 4
    assert bytes(init[i:i + 4]) == bytes([200, 100, 50, 255])


def test_seed_from_layer_off_sends_no_init_and_whole_image_asks_for_a_new_picture(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner()
    run(Gimp3Host, runner, image, base, "move",
        args_for("python-fu-magic-move-object", **{"moved-layer": moved, "source-mask": src,
                                                    "seed-from-layer": False,
                                                    "region": "whole-image"}))
    req = runner.requests[0]
    assert req["init"] is None
    assert req["params"]["composite"] is False


def test_other_modes_send_no_init(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    runner = ScriptedRunner()
    run(Gimp3Host, runner, image, base, "reshape",
        args_for("python-fu-magic-synthesize", **{"source-mask": src, "guide-mask": moved,
                                                   "mode": "reshape"}))
    assert runner.requests[0]["init"] is None


@pytest.mark.parametrize("with_layer", [False, True])
def test_remove_the_only_selected_object_sends_an_empty_guide(gimp, with_layer):
    Gimp, Gimp3Host = gimp
    image, base, src, _moved = scene(Gimp)
    # src marks photo (10..14, 6..10); the selection covers it (and a little more).
    image.select(BASE_AT[0] + 9, BASE_AT[1] + 5, BASE_AT[0] + 16, BASE_AT[1] + 12)
    runner = ScriptedRunner()
    over = {"samples": 1, "seed": 2}
    if with_layer:
        over["source-mask"] = src  # the layer marks only the selected object
    results = run(Gimp3Host, runner, image, base, "remove",
                  args_for("python-fu-magic-remove-object", **over))
    req = runner.requests[0]
    assert req["guide_mask"] == bytearray(W * H)
    assert req["source_mask"] == (rect_mask(10, 6, 14, 10) if with_layer
                                  else rect_mask(9, 5, 16, 12))
    assert req["params"]["mode"] == "remove" and req["init"] is None
    margin = edit_request.blend_margin(W, H)
    layer = results[0]
    x0, y0 = (10, 6) if with_layer else (9, 5)
    assert (layer.x, layer.y) == (BASE_AT[0] + max(0, x0 - margin), BASE_AT[1] + max(0, y0 - margin))
    group = image.layers[image.layers.index(base) - 1]
    assert group.name == "MAGIC remove quality (seed 2)" and [
        c.name for c in group.children] == ["MAGIC remove quality seed 2"]


def test_progress_names_the_server_stages(gimp):
    Gimp, Gimp3Host = gimp
    image, base, src, moved = scene(Gimp)
    events = [("progress", {"iteration": 5, "total": 10, "stage": "mask-net"}),
              ("progress", {"iteration": 3, "total": 12, "stage": "synthesis"}),
              ("progress", {"iteration": 9, "total": 12, "stage": "refine"}),
              ("progress", {"iteration": 1, "total": 2, "stage": "something-new"})]
    run(Gimp3Host, ScriptedRunner(events=events), image, base, "move",
        args_for("python-fu-magic-move-object", **{"moved-layer": moved, "source-mask": src}))
    texts = [c[1] for c in fake.PROGRESS.calls if c[0] == "text"]
    assert "MAGIC move: learning the object 5/10" in texts
    assert "MAGIC move: synthesizing 3/12" in texts
    assert "MAGIC move: refining 9/12" in texts
    assert "MAGIC move: something-new 1/2" in texts
    # one bar for the whole job: mask-net takes the first tenth, synthesis + refine the rest,
    # and a count that starts again never moves the bar back
    bar = [c[1] for c in fake.PROGRESS.calls if c[0] == "update"]
    assert bar == sorted(bar)
    assert bar[2:6] == pytest.approx([0.05, 0.05 + 0.95 * 3 / 12, 0.05 + 0.95 * 9 / 12,
                                      0.05 + 0.95 * 9 / 12])


# ------------------------------------------------------------------------ layout and label map

RED, BLUE, GREY = (200, 0, 0), (0, 0, 200), (128, 128, 128)
PAINTED = (4, 8, 10, 14)  # photo-local x0, y0, x1, y1 where the target map turns red into blue


def painted_layer(Gimp, image, name, w, h, colour_at, alpha=255):
    """A layer whose pixel (x, y) (layer-local) is colour_at(x, y)."""
    layer = Gimp.Layer(image, name, w, h, 4)
    for y in range(h):
        for x in range(w):
            layer.data[(y * w + x) * 4:(y * w + x) * 4 + 4] = bytes(colour_at(x, y) + (alpha,))
    return layer


def label_colour(x, y, painted=None):
    """The scene's label maps in photo-local coordinates: red left half, blue right half,
    grey outside the photo; `painted`: a box turned blue."""
    if not (0 <= x < W and 0 <= y < H):
        return GREY
    if painted is not None:
        x0, y0, x1, y1 = painted
        if x0 <= x < x1 and y0 <= y < y1:
            return BLUE
    return RED if x < W // 2 else BLUE


def label_scene(Gimp):
    """The photo plus two label layers larger than it (2 px around it: cropped)."""
    image, base, _src, _moved = scene(Gimp)
    at = (BASE_AT[0] - 2, BASE_AT[1] - 2)
    source = image.add(painted_layer(Gimp, image, "labels", W + 4, H + 4,
                                     lambda x, y: label_colour(x - 2, y - 2)), *at)
    target = image.add(painted_layer(Gimp, image, "wanted", W + 4, H + 4,
                                     lambda x, y: label_colour(x - 2, y - 2, PAINTED)), *at)
    return image, base, source, target


def rgb_frame(colour_at):
    return bytearray(b"".join(bytes(colour_at(x, y)) for y in range(H) for x in range(W)))


LAYOUT, LABEL_MAP = "python-fu-magic-layout", "python-fu-magic-label-map"


def test_layout_sends_both_label_maps_in_the_photo_frame_and_adds_cropped_layers(gimp):
    Gimp, Gimp3Host = gimp
    image, base, source, target = label_scene(Gimp)
    runner = ScriptedRunner()
    args = args_for(LAYOUT, **{"source-labels": source, "target-labels": target, "samples": 2,
                               "seed": 8, "preset": "draft"})
    run(Gimp3Host, runner, image, base, "layout", args)

    req = runner.requests[0]
    assert req["source_labels"] == rgb_frame(label_colour)
    assert req["target_labels"] == rgb_frame(lambda x, y: label_colour(x, y, PAINTED))
    assert "source_mask" not in req and "guide_mask" not in req and req["init"] is None
    assert req["params"] == {"mode": "layout", "samples": 2, "preset": "draft", "seed": 8}
    assert bytes(req["image"]) == bytes([100, 110, 120, 255]) * (W * H)

    group = image.layers[image.layers.index(base) - 1]
    assert group.name == "MAGIC layout draft (seeds 8-9)"
    assert [c.name for c in group.children] == ["MAGIC layout draft seed 8",
                                                "MAGIC layout draft seed 9"]
    # the result covers where the maps differ (red turned blue), plus the blending border
    changed = rect_mask(PAINTED[0], PAINTED[1], PAINTED[2], PAINTED[3])
    margin = edit_request.blend_margin(W, H)
    area = M.dilate(changed, W, H, margin)
    x0, y0, x1, y1 = M.bbox(area, W, H)
    layer = group.children[0]
    assert (layer.x, layer.y, layer.width, layer.height) == (BASE_AT[0] + x0, BASE_AT[1] + y0,
                                                             x1 - x0, y1 - y0)
    assert bytes(layer.data[3::4]) == bytes(M.crop(area, W, H, (x0, y0, x1, y1)))
    assert image.undo_groups == 1 and image.get_selected_layers() == [base]


def test_label_layers_exactly_on_the_photo_and_painted_colours_only(gimp):
    """A label layer of the photo's own size and place; the request carries RGB, 3 bytes a
    pixel, whatever the layer's alpha (opaque)."""
    Gimp, Gimp3Host = gimp
    image, base, _src, _moved = scene(Gimp)
    source = image.add(painted_layer(Gimp, image, "s", W, H, label_colour), *BASE_AT)
    target = image.add(painted_layer(Gimp, image, "t", W, H,
                                     lambda x, y: label_colour(x, y, PAINTED)), *BASE_AT)
    runner = ScriptedRunner()
    run(Gimp3Host, runner, image, base, "layout",
        args_for(LAYOUT, **{"source-labels": source, "target-labels": target, "samples": 1}))
    req = runner.requests[0]
    assert len(req["source_labels"]) == len(req["target_labels"]) == W * H * 3
    assert req["source_labels"] == rgb_frame(label_colour)


@pytest.mark.parametrize("case, message", [
    ("no-source", "Pick the source labels layer"),
    ("no-target", "Pick the target labels layer"),
    ("same-layer", "are the same layer ('labels')"),
    ("photo-as-labels", "The target-labels layer is the active layer itself"),
    ("smaller", "'small' (10x10 at 5,7) does not cover the photo layer (40x30 at 5,7)"),
    ("shifted", "'shifted' (40x30 at 6,7) does not cover the photo layer"),
    ("transparent", "'holey' is transparent at 6 pixel(s), e.g. at x=7, y=8"),
    ("unchanged", "'copy' shows the same map as the source labels"),
])
def test_label_layer_problems_are_user_errors_and_change_nothing(gimp, case, message):
    Gimp, Gimp3Host = gimp
    image, base, source, target = label_scene(Gimp)
    small = image.add(painted_layer(Gimp, image, "small", 10, 10, lambda x, y: RED), *BASE_AT)
    shifted = image.add(painted_layer(Gimp, image, "shifted", W, H, label_colour),
                        BASE_AT[0] + 1, BASE_AT[1])
    holey = painted_layer(Gimp, image, "holey", W, H, label_colour)
    for x, y in ((2, 1), (3, 1), (4, 1), (2, 2), (3, 2), (4, 2)):  # 6 transparent pixels
        holey.data[(y * W + x) * 4 + 3] = 0
    image.add(holey, *BASE_AT)
    copy = image.add(painted_layer(Gimp, image, "copy", W, H, label_colour), *BASE_AT)
    over = {
        "no-source": {"target-labels": target},
        "no-target": {"source-labels": source},
        "same-layer": {"source-labels": source, "target-labels": source},
        "photo-as-labels": {"source-labels": source, "target-labels": base},
        "smaller": {"source-labels": source, "target-labels": small},
        "shifted": {"source-labels": shifted, "target-labels": target},
        "transparent": {"source-labels": source, "target-labels": holey},
        "unchanged": {"source-labels": source, "target-labels": copy},
    }[case]
    before = [(la.name, la.x, la.y, bytes(la.data)) for la in image.layers]
    runner = ScriptedRunner()
    with pytest.raises(UserError) as err:
        run(Gimp3Host, runner, image, base, "layout", args_for(LAYOUT, **over))
    assert message in err.value.message and "\n" not in err.value.message
    assert runner.requests == [] and runner.handshakes == 0
    assert [(la.name, la.x, la.y, bytes(la.data)) for la in image.layers] == before
    assert image.undo_groups == 0


def test_the_servers_foreign_colour_message_reaches_the_artist_as_is(gimp):
    Gimp, Gimp3Host = gimp
    image, base, source, target = label_scene(Gimp)
    said = ("the target label map uses #fafa00, which is not a label colour of the source map "
            "(50 pixels, e.g. at x=20, y=20)")
    runner = ScriptedRunner(error=RunnerError("failed", said))
    with pytest.raises(UserError) as err:
        run(Gimp3Host, runner, image, base, "layout",
            args_for(LAYOUT, **{"source-labels": source, "target-labels": target}))
    assert said in err.value.message and not err.value.cancelled
    assert image.undo_groups == 0


def test_a_server_without_layout_edits_is_named_too_old(gimp):
    Gimp, Gimp3Host = gimp
    image, base, source, target = label_scene(Gimp)
    runner = ScriptedRunner(info={"max_pixels": 0, "presets": ["quality"],
                                  "modes": ["synthesize", "move", "copy", "reshape", "remove"]})
    with pytest.raises(UserError, match="too old for layout jobs: update magic-server"):
        run(Gimp3Host, runner, image, base, "layout",
            args_for(LAYOUT, **{"source-labels": source, "target-labels": target}))
    assert runner.requests == []


class LabelMapRunner(ScriptedRunner):
    """Answers a label-map job with one map (left half red, right half blue) and notes."""

    def __init__(self, notes=()):
        ScriptedRunner.__init__(self)
        self.notes = list(notes)

    def submit(self, address, request, on_event, cancelled, timeout_s):
        self.requests.append(dict(request, address=address, timeout_s=timeout_s))
        on_event("progress", {"iteration": 2, "total": 4, "stage": "label-map"})
        return ([(bytes(rgb_frame(label_colour)), request["width"], request["height"])],
                [request["params"]["seed"]], self.notes)


def test_label_map_sends_the_photo_alone_and_adds_the_two_label_layers(gimp):
    Gimp, Gimp3Host = gimp
    image, base, _src, _moved = scene(Gimp)
    runner = LabelMapRunner(notes=["the photo gave 2 regions, not 5"])
    layers = run(Gimp3Host, runner, image, base, "label-map",
                 args_for(LABEL_MAP, labels=5, seed=3, timeout=9))
    req = runner.requests[0]
    assert req["params"] == {"mode": "label-map", "samples": 1, "preset": "quality", "seed": 3,
                             "labels": 5}
    assert not set(req) & {"source_mask", "guide_mask", "source_labels", "target_labels"}
    assert req["init"] is None and req["timeout_s"] == 9

    names = [la.name for la in image.layers]
    i = names.index("photo")
    assert names[i - 2:i + 1] == ["MAGIC target labels (paint here)", "MAGIC source labels",
                                  "photo"]
    target, source = image.layers[i - 2], image.layers[i - 1]
    assert [r.layer for r in layers] == [target, source]
    expected = bytes(M.rgb_to_rgba(rgb_frame(label_colour), b"\xff" * (W * H)))
    for layer in (target, source):
        assert (layer.x, layer.y, layer.width, layer.height) == (*BASE_AT, W, H)
        assert bytes(layer.data) == expected
    assert (target.visible, target.opacity) == (True, 50.0)
    assert (source.visible, source.opacity) == (False, 100.0)
    assert image.undo_groups == 1 and image.undo_depth == 0 and image.log == []
    assert image.get_selected_layers() == [target]  # ready to paint on
    texts = [c[1] for c in fake.PROGRESS.calls if c[0] == "text"]
    assert "MAGIC label-map: finding the regions 2/4" in texts
    messages = [c[1] for c in fake.PROGRESS.calls if c[0] == "message"]
    assert len(messages) == 1 and "\n" not in messages[0]
    told = messages[0]
    assert "Color Picker" in told and "Pencil tool" in told
    assert "Filters > MAGIC > Layout edit" in told
    assert told.endswith("Note: the photo gave 2 regions, not 5.")
    # told after the progress ended (GIMP 3 shows it in its own dialog)
    calls = [c[0] for c in fake.PROGRESS.calls]
    assert calls.index("message") > calls.index("end")


def test_label_map_of_another_size_is_refused(gimp):
    Gimp, Gimp3Host = gimp
    image, base, _src, _moved = scene(Gimp)

    class WrongSize(LabelMapRunner):
        def submit(self, address, request, on_event, cancelled, timeout_s):
            return [(bytes(3 * 4), 2, 2)], [0], []

    with pytest.raises(UserError, match="sent a 2x2 result for a 40x30 image"):
        run(Gimp3Host, WrongSize(), image, base, "label-map", args_for(LABEL_MAP))
    assert image.undo_groups == 0
