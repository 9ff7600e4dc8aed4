# ruff: noqa: UP004, UP031, C402, RUF046  (Python 2.7 compatible: GIMP 2.10)
"""The plug-in's procedures and their arguments, declared once for GIMP 3 and GIMP 2.10.

Python 2.7 + 3 common subset, standard library only. Each variant turns these declarations into
its own registration calls (GIMP 3: Gimp.Procedure.add_*_argument; 2.10: gimpfu PF_* tuples).
"""

MODES = ("synthesize", "move", "copy", "reshape", "remove")
LAYOUT = "layout"  # an edit from two label maps instead of masks
LABEL_MAP = "label-map"  # no edit: a first label map of the photo, to paint a layout on
KEEP = "keep-sample"  # no job: keep the selected result layer, drop the other samples
PRESETS = ("quality", "draft", "paper", "tiny")  # first one is the default
MIN_LABELS, MAX_LABELS = 2, 16
SOURCE_LABELS_LAYER = "MAGIC source labels"
TARGET_LABELS_LAYER = "MAGIC target labels (paint here)"
TARGET_LABELS_OPACITY = 50.0  # the photo shows through while the artist paints
TEST_PRESETS = ("tiny",)  # accepted by the procedures (scripts, CI), not offered in dialogs
REGIONS = ("edited-area", "whole-image")
MAX_SAMPLES = 16
MAX_SEED = 2 ** 31 - 1  # GIMP int arguments are 32-bit signed
MENU_ROOT = "Filters/MAGIC"


class Arg(object):
    """One procedure argument. kind: "layer", "int", "string", "choice", "bool"."""

    def __init__(self, name, kind, label, blurb, default=None, lo=None, hi=None, choices=None,
                 optional=False):
        self.name = name
        self.kind = kind
        self.label = label
        self.blurb = blurb
        self.default = default
        self.lo = lo
        self.hi = hi
        self.choices = choices
        self.optional = optional

    @property
    def plain_label(self):
        """The label without its mnemonic underscore (GIMP 2.10's gimpfu shows it literally)."""
        return self.label.replace("_", "")


# What a procedure reads for its masks (EditRequest): the guide-mask layer (Mask-guided
# synthesis), the moved layer (Move / Copy object), the selection alone (Remove object); label
# maps and the photo alone are their modes' (layout, label-map)
READS_GUIDE, READS_MOVED_LAYER, READS_SELECTION = "guide-mask", "moved-layer", "selection"


class Procedure(object):
    def __init__(self, name, mode, label, blurb, args, reads=None):
        self.name = name
        self.mode = mode  # None: the "mode" argument decides
        self.label = label
        self.blurb = blurb
        self.args = args
        self.reads = reads  # READS_*: where its masks come from (None: not masks)

    def arg(self, name):
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)


SOURCE_MASK = Arg("source-mask", "layer", "So_urce mask layer",
                  "Layer marking the object in white or opaque pixels; none = use the selection",
                  optional=True)
GUIDE_MASK = Arg("guide-mask", "layer", "_Guide mask layer",
                 "Layer marking where and in what shape the object should be (white or opaque)",
                 optional=True)
MOVED_LAYER = Arg("moved-layer", "layer", "_Moved layer",
                  "The object copied to its own layer and moved or transformed; its alpha is the "
                  "guide", optional=True)
SEED_FROM_LAYER = Arg("seed-from-layer", "bool", "Start from the moved la_yer",
                      "Start the synthesis from the moved layer laid over the photo (its pixels "
                      "seed the result, fewer iterations needed) instead of from noise",
                      default=True)
MODE = Arg("mode", "choice", "_Mode", "What the synthesis should do with the object",
           default="reshape", choices=MODES)

SOURCE_LABELS = Arg("source-labels", "layer", "Source la_bels layer",
                    "The photo's label map: one flat colour per region (Filters > MAGIC > Label "
                    "map makes a first one)", optional=True)
TARGET_LABELS = Arg("target-labels", "layer", "Tar_get labels layer",
                    "The wanted label map: a copy of the source map painted over with its own "
                    "colours (pencil tool, no anti-aliasing)", optional=True)
LABELS = Arg("labels", "int", "_Number of labels",
             "How many regions (flat colours) the label map should have",
             default=6, lo=MIN_LABELS, hi=MAX_LABELS)
LABEL_MAP_SEED = Arg("seed", "int", "See_d", "Random seed of the clustering (another seed may "
                     "draw other regions)", default=0, lo=0, hi=MAX_SEED)

COMMON = [
    Arg("samples", "int", "Sam_ples", "How many different results to make (one layer each)",
        default=3, lo=1, hi=MAX_SAMPLES),
    Arg("preset", "choice", "_Quality preset",
        "quality: good and slow (a GPU server); draft: a quick look (fits a CPU server); "
        "paper: the paper's setting",
        default=PRESETS[0], choices=PRESETS),
    Arg("seed", "int", "See_d", "Random seed of the first sample (the next ones use seed+1, "
        "...); with Vary on, a new one is drawn for every run and shown here",
        default=0, lo=0, hi=MAX_SEED),
    Arg("vary", "bool", "_Vary the seed (a new one every run)",
        "On: every run (and Filters > Repeat) draws a new seed, so each run gives new samples; "
        "the dialog shows the seed it will use. Off: the Seed field is used as it is",
        default=True),
    Arg("region", "choice", "Result cov_ers",
        "edited-area: only the edited area (plus a border) is replaced, the rest stays exactly "
        "as it was; whole-image: the whole synthesized picture", default=REGIONS[0],
        choices=REGIONS),
    Arg("iterations", "int", "_Iterations", "0 = the preset's iteration count", default=0, lo=0,
        hi=1000000),
    Arg("resolution", "int", "Wor_king resolution",
        "Synthesize at about this many pixels squared; 0 = the server's default", default=0, lo=0,
        hi=1024),
    Arg("timeout", "int", "_Timeout (s)", "Give up and cancel after this many seconds; 0 = never",
        default=0, lo=0, hi=7 * 24 * 3600),
    Arg("server-address", "string", "Server _address",
        "ZeroMQ address of the MAGIC server, optionally with CurveZMQ keys: ADDRESS "
        "[server-key=KEY|FILE] [client-keys=FILE]; empty = the installed configuration "
        "(tcp://127.0.0.1:5591 by default)", default=""),
]

# A label map is no edit: samples, preset, region, iterations and resolution mean nothing to it.
LABEL_MAP_COMMON = [a for a in COMMON if a.name in ("timeout", "server-address")]

PROCEDURES = [
    Procedure("python-fu-magic-synthesize", None, "Mask-guided _synthesis...",
              "Synthesize new versions of the active layer with the object (source mask: the "
              "selection or a layer) placed and shaped as the guide mask layer says.",
              [SOURCE_MASK, GUIDE_MASK, MODE] + COMMON, READS_GUIDE),
    Procedure("python-fu-magic-move-object", "move", "_Move object...",
              "Move the selected object to where the moved layer is: the old place becomes "
              "background.", [MOVED_LAYER, SOURCE_MASK] + COMMON + [SEED_FROM_LAYER],
              READS_MOVED_LAYER),
    Procedure("python-fu-magic-copy-object", "copy", "_Copy object...",
              "Copy the selected object to where the moved layer is: it appears in both places.",
              [MOVED_LAYER, SOURCE_MASK] + COMMON + [SEED_FROM_LAYER], READS_MOVED_LAYER),
    Procedure("python-fu-magic-remove-object", "remove", "_Remove object...",
              "Remove the selected object. Without a source mask layer the selection is the "
              "only object; with one (marking all objects) the others stay where they are.",
              [SOURCE_MASK] + COMMON, READS_SELECTION),
    Procedure("python-fu-magic-layout", LAYOUT, "La_yout edit...",
              "Rearrange the photo after a painted label map: where the target labels layer "
              "differs from the source labels layer, each pixel is synthesized from the photo's "
              "regions of its wanted label.", [SOURCE_LABELS, TARGET_LABELS] + COMMON),
    Procedure("python-fu-magic-label-map", LABEL_MAP, "_Label map...",
              "Make a first label map of the photo (flat colours, one per region) as two layers: "
              "the source labels and a copy to paint the wanted layout on.",
              [LABELS, LABEL_MAP_SEED] + LABEL_MAP_COMMON),
    Procedure("python-fu-magic-keep-sample", KEEP, "_Keep this sample",
              "Keep the selected MAGIC result layer: the other samples of its run are deleted "
              "(one undo step) and it is shown. Select the sample in the Layers dock first.",
              []),
]

BY_NAME = dict((p.name, p) for p in PROCEDURES)


def defaults(procedure):
    """The procedure's arguments at their defaults, and its name as "procedure"."""
    return arguments_of(procedure, dict((a.name, a.default) for a in procedure.args))


def arguments_of(procedure, values):
    """A run's arguments: `values` by argument name, with "procedure" naming the procedure
    (what the run reads depends on it: EditRequest)."""
    args = dict(values)
    args["procedure"] = procedure.name
    return args


def dialog_title(procedure):
    """"MAGIC - Mask-guided synthesis": the menu label without its mnemonic and dots."""
    return "MAGIC - " + procedure.label.replace("_", "").rstrip(".").strip()


def server_defaults(device):
    """Preset and samples that fit the server's device (None: unknown, e.g. not running):
    quality with 3 samples on a GPU, one draft sample elsewhere (a CPU needs minutes for it)."""
    device = (device or "").lower()
    if device.startswith(("cuda", "mps", "rocm", "xpu")):
        return {"preset": "quality", "samples": 3}
    return {"preset": "draft", "samples": 1}


def result_layer_name(mode, preset, seed):
    """One sample: "MAGIC move draft seed 123" (mode, preset, seed: every sample of every run
    has its own name, so GIMP adds no " #1")."""
    return "MAGIC %s %s seed %d" % (mode, preset, seed)


def group_name(mode, preset, seeds):
    """One run's group: "MAGIC move draft (seed 123)" or "(seeds 123-125)"."""
    seeds = list(seeds)
    if len(seeds) == 1:
        which = "seed %d" % seeds[0]
    else:
        which = "seeds %d-%d" % (min(seeds), max(seeds))
    return "MAGIC %s %s (%s)" % (mode, preset, which)


RESULT_PREFIX = "MAGIC "


def new_seed(rng=None):
    """A fresh seed for a run with Vary on (random, within GIMP's int argument range)."""
    import random

    return (rng or random).randint(0, MAX_SEED)


def format_duration(seconds):
    """A time estimate for the artist: "about 40 s", "about 3 min", "about 1 h 35 min"."""
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return "about %d s" % max(1, seconds)
    if seconds < 3600:
        return "about %d min" % int(round(seconds / 60.0))
    return "about %d h %02d min" % (seconds // 3600, (seconds % 3600) // 60)


# What the server's progress stages are called in GIMP's progress bar.
STAGE_LABELS = {"mask-net": "learning the object", "synthesis": "synthesizing",
                "refine": "refining", "label-map": "finding the regions"}


def stage_label(stage):
    stage = stage or "synthesis"
    return STAGE_LABELS.get(stage, stage)


def format_eta(seconds):
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return "%d s left" % seconds
    if seconds < 3600:
        return "%d min %02d s left" % (seconds // 60, seconds % 60)
    return "%d h %02d min left" % (seconds // 3600, (seconds % 3600) // 60)


LAYER_WORDS = {"source-mask": "Source", "guide-mask": "Guide mask", "moved-layer": "Moved layer",
               "source-labels": "Source labels", "target-labels": "Target labels"}
EMPTY_LAYER = {"source-mask": "none: the selection marks the object",
               "guide-mask": "none: pick the layer that marks the new place",
               "moved-layer": "none: pick the layer you moved",
               "source-labels": "none: pick the photo's label map",
               "target-labels": "none: pick the label map you painted"}


def dialog_summary(procedure, values, layer_name, photo, estimate):
    """What the dialog says this run will use, one fact a line: the photo, each layer (by
    name: GIMP's layer pickers show only a thumbnail), the seed, the time. values: the
    arguments as they are now; layer_name(layer) -> its name; photo: the photo's name;
    estimate: "about 3 min (...)" or a sentence why there is none."""
    lines = ["Runs on the photo layer '%s'." % photo]
    for a in procedure.args:
        if a.kind == "layer":
            layer = values.get(a.name)
            lines.append("%s: %s" % (LAYER_WORDS.get(a.name, a.name), EMPTY_LAYER.get(
                a.name, "none") if layer is None else "'%s'" % layer_name(layer)))
    names = [a.name for a in procedure.args]
    if "vary" in names:
        lines.append("Seed: %d%s" % (values["seed"], " (Vary is on: the next run draws a new "
                                     "one)" if values.get("vary") else " (fixed)"))
    if "preset" in names and estimate:
        lines.append("Time: %s" % estimate)
    return "\n".join(lines)
