"""Engine: owns the frozen classifier on a device and runs MAGIC edits.

One optimisation loop (`_optimise`) serves both objectives:
- `paper`: x' is optimised at one working resolution against the paper's terms.
- the product presets: the same loop runs coarse to fine over a pyramid of the edit's region
  (engine/pyramid.py); only the edit region is free (every other pixel is the photo's), and the
  patch nearest-neighbour term (engine/patch_nn.py) pulls x' towards the photo's own patches
  that carry the label the guide asks for. The classifier and the mask network judge x' at the
  working resolution, whatever the level.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field

import numpy as np
import torch
import torch.nn.functional as F

from magic_protocol.protocol import MAX_LABELS
from magic_server.engine import capture, donors, finish, losses, term_balance
from magic_server.engine.adam import Adam
from magic_server.engine.api import (
    Cancelled,
    EngineDescription,
    EngineInputError,
    Progress,
    ProgressCallback,
    SynthesisOptions,
    SynthesisResult,
    check_inputs,
)
from magic_server.engine.carried_background import carried_background
from magic_server.engine.discriminator import CriticTrainer
from magic_server.engine.iteration_capture import CapturedStep
from magic_server.engine.layout_start import layout_composite
from magic_server.engine.mask_net import MaskNet, binary_fractions, train_mask_net
from magic_server.engine.object_transfer import transfer_start
from magic_server.engine.patch_nn import PATCH, PatchBank, patch_loss, upscale_field
from magic_server.engine.presets import (
    PRESETS,
    Preset,
    Schedule,
    learning_rate,
    resolve_preset,
)
from magic_server.engine.previews import PreviewCopies
from magic_server.engine.pyramid import level_sizes, split_iterations
from magic_server.engine.regions import (
    Box,
    bounding_box,
    composite,
    dilate,
    dilate_round,
    feathered_alpha,
    nearest_side_fill,
    region_of_interest,
    round_radius_within,
)
from magic_server.engine.tensors import (
    Normaliser,
    image_to_tensor,
    mask_to_tensor,
    preview_size,
    tensor_to_images,
    working_size,
)


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights, plus `keep`: L1 to the photo outside the edit region (as GANPaint
    Studio does) so that the pasted-back region has no visible seam, and `patch`, the patch
    nearest-neighbour term of the product presets (0 in the paper's objective).
    `critic` is 0.1 instead of 0.05 for pure position control (move)."""

    classifier: float = 1.0
    feature_stats: float = 500.0
    mask: float = 30.0
    critic: float = 0.05
    tv_l1: float = 1e-3
    tv_l2: float = 1e-3
    l2: float = 1e-5
    keep: float = 3.0
    patch: float = 0.0
    # True (product presets): `classifier` and `feature_stats` are shares of the patch term's
    # pull, not weights: each term's gradient is rescaled at every patch matching so that its
    # norm is that fraction of the patch term's (engine/term_balance.py)
    relative: bool = False
    smoothing: int = 0  # > 0: the judged gradient averaged over this many noisy, shifted copies

    @classmethod
    def for_mode(cls, mode: str) -> LossWeights:
        return cls(critic=0.1) if mode == "move" else cls()

    @classmethod
    def product(cls, trained_classifier: bool) -> LossWeights:
        """The product presets' weights (patch term scale: mean squared distance in normalised
        units). The patch term asks every patch of x' to be one of the photo's with the label
        the guide gives it, which is what the critic (realism) and the mask network (the
        object where the guide is) ask too: measured on the sample scenes, both left guide
        IoU and coherence unchanged and cost most of the time, so they are off. The
        classifier's two terms are weighted as shares of the patch term's pull (`relative`,
        engine/term_balance.py), and off by default: with an untrained classifier random
        features carry no meaning and only added noise (docs/benchmarks.md); with a real one
        (EfficientNet-Lite0, ImageNet) they improved no edit consistently at a share of 0.1,
        made guide adherence worse from 0.5 on, and cost 2-9 times the time per iteration
        (docs/classifier-terms.md). `trained_classifier` still gates them for experiments that
        set the shares."""
        semantic = 1.0 if trained_classifier else 0.0
        return cls(classifier=PRODUCT_CLASS_SHARE * semantic,
                   feature_stats=PRODUCT_FEATURE_SHARE * semantic, mask=0.0, critic=0.0,
                   tv_l1=0.0, tv_l2=0.0, l2=0.0, keep=0.0, patch=1.0, relative=True,
                   smoothing=PRODUCT_SMOOTHING)

    def shares(self) -> dict[str, float]:
        return {"classifier": self.classifier, "feature_stats": self.feature_stats}


# The product presets' judged terms, as shares of the patch term's gradient norm: off, chosen from
# measurements with EfficientNet-Lite0 on the sample scenes (docs/classifier-terms.md)
PRODUCT_CLASS_SHARE = 0.0
PRODUCT_FEATURE_SHARE = 0.0
PRODUCT_SMOOTHING = 0


LEARNING_RATE = 0.2
PRODUCT_LEARNING_RATE = 0.15
CRITIC_WARM_START_STEPS = 10
LOSS_REPORT_EVERY = 10
INIT_NOISE = 0.5  # std (normalised units) of the noise added to an artist's composite (paper)
REMOVAL_REACH = 0.02  # a removal changes nothing farther than this x the hole's size
COMPOSITE_NOISE = 0.15  # product: the composite only needs repairing, not re-noising
HELD_BAND = 0.03  # a pasted object's rim (of the region's size) that is re-synthesized
FILL_NOISE = 0.3  # product without a composite: noise on the smooth fill, for diversity


@dataclass
class Reference:
    """Everything computed once from the photo x at one resolution."""

    z: torch.Tensor  # normalised x, (1, 3, h, w)
    source: torch.Tensor  # y, (1, 1, h, w)
    guide: torch.Tensor  # y', (1, 1, h, w)
    source_labels: torch.Tensor  # y as label fractions, (1, K, h, w): K = 2 for a mask
    target_labels: torch.Tensor  # y' as label fractions, (1, K, h, w)
    keep: torch.Tensor  # 1 outside the edit region, (1, 1, h, w)
    target_class: int
    feature_targets: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Level:
    """One run of the optimisation loop: a resolution, its budget and what x' is judged by."""

    ref: Reference  # the photo at this level
    judge: Reference  # the photo at the working resolution (classifier, features, mask)
    schedule: Schedule
    peak_lr: float
    stage: str
    free: torch.Tensor | None = None  # (1, 1, h, w): where x' is synthesized; None: everywhere
    base: torch.Tensor | None = None  # (1, 3, h, w): x' where it is not free (the photo, or
    #                                   the artist's composite inside a pasted object)
    bank: PatchBank | None = None
    centres: torch.Tensor | None = None  # (h, w) bool: patches matched by the patch term
    labels: torch.Tensor | None = None  # (1, K, h, w): the labels x' should carry
    refresh_every: int = 1
    photo_labels: torch.Tensor | None = None  # (1, K, h, w): the photo's labels
    label_colours: torch.Tensor | None = None  # (K, 3): mean colours of a donor canvas
    agree: bool = False  # votes count only with pixels of the wanted label (PatchBank.match)


@dataclass
class EditRun:
    """Per-edit state shared by the stages."""

    options: SynthesisOptions
    weights: LossWeights
    gen: torch.Generator
    cancel: threading.Event | None
    on_progress: ProgressCallback | None
    total: int
    done: int = 0
    t0: float = 0.0
    captures: list[dict] = dataclass_field(default_factory=list)  # per level: how its steps ran

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()


def edit_region(source: np.ndarray, guide: np.ndarray,
                changed: np.ndarray | None = None, mode: str = "move") -> np.ndarray:
    """Pixels the edit may change: where the source and guide masks differ (and where the
    artist's composite differs from the photo), grown for the object's rim and shadow by 5% of
    the object's size (not of how far it moves), at most 2% of the photo's longer side; a
    removal only as far as 2% of the hole's size reaches, rounded down (what the artist did
    not select stays: a 51 px coin's selection grows by 1 px, its anti-aliased rim goes with
    it; a 27 px galaxy's not at all). Parts of the object that stay where they are stay the photo's own pixels."""
    differ = source ^ guide
    if changed is not None:
        differ = differ | changed
    if not differ.any():
        raise EngineInputError("the guide mask equals the source mask: nothing to change "
                               "(paint where the object should be)")
    if mode == "remove":
        hole = bounding_box(differ)
        return dilate_round(differ, round_radius_within(REMOVAL_REACH * max(hole.height,
                                                                           hole.width)))
    sides = [max(b.height, b.width) for b in map(bounding_box, (source, guide)) if b is not None]
    return grow_edit(differ, max(sides) if sides else None)


def grow_edit(differ: np.ndarray, extent: int | None = None) -> np.ndarray:
    """The pixels that change, dilated by 5% of `extent` (default: their own extent), at most
    2% of the image's longer side, for the rim and the shadow (round: no corner of a square
    reaches further)."""
    box = bounding_box(differ)
    extent = extent or max(box.height, box.width)
    radius = min(round(0.05 * extent), round(0.02 * max(differ.shape)))
    return dilate_round(differ, max(3, radius))


@dataclass
class EditPlan:
    """Where an edit is synthesized (box) and how it is pasted back (alpha, box-sized)."""

    box: Box
    edit: np.ndarray  # full-size bool: the edit region

    @functools.cached_property
    def alpha(self) -> np.ndarray:
        """Box-sized float32 compositing alpha (computed only when something composites)."""
        feather = max(2, round(0.02 * max(self.box.height, self.box.width)))
        return feathered_alpha(self.box.crop(self.edit), feather)

    def touched(self) -> np.ndarray:
        """Full-size bool mask of every pixel the composite may change; all others are the
        photo's own, bit for bit."""
        out = np.zeros(self.edit.shape, bool)
        out[self.box.top : self.box.bottom, self.box.left : self.box.right] = self.alpha > 0
        return out


def changed_pixels(image: np.ndarray, init: np.ndarray | None) -> np.ndarray | None:
    if init is None:
        return None
    return np.any(init != image, axis=-1)


def plan_edit(source: np.ndarray, guide: np.ndarray, image: np.ndarray | None = None,
              init: np.ndarray | None = None, mode: str = "move") -> EditPlan:
    edit = edit_region(source, guide, changed_pixels(image, init) if image is not None else None,
                       mode)
    return EditPlan(region_of_interest(edit), edit)


def edit_labels(source: torch.Tensor, guide: torch.Tensor, edit: torch.Tensor, mode: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Label fractions (1, K, h, w) of the photo and of x' for the patch term.

    Background and object, as the masks say; x' carries the guide's labels in the edit
    region and the photo's elsewhere. A removal gives what it removes a label of its own that x'
    never carries, so that no patch of the removed object is copied back, not even next to
    the part of the object that stays."""
    photo = binary_fractions(source)
    if mode == "remove":
        kept = torch.minimum(source, guide)
        photo = torch.cat([1 - source, kept, source - kept], dim=1)
    target = torch.cat([1 - guide, guide] + [torch.zeros_like(guide)] * (photo.shape[1] - 2),
                       dim=1)
    return photo, target * edit + photo * (1 - edit)


def held_and_repair(crops, init: np.ndarray | None, layout) -> tuple[np.ndarray, np.ndarray] | None:
    """(held, repair) of a start from the artist's composite `init` (region-sized, like the
    `crops` photo, source, guide, edit), None without one (composite_repair)."""
    if init is None:
        return None
    box_h, box_w = crops[0].shape[:2]
    changed = changed_pixels(crops[0], init)
    extent = bounding_box(changed)
    side = min(extent.height, extent.width) if extent else max(box_h, box_w)
    # the rim of a thin object (a rocket, a spoon's handle) must not eat its inside
    band = max(2, round(HELD_BAND * min(max(box_h, box_w), 4 * side)))
    # a layout's masks are both "where the maps differ": all of it is to repair
    guide = crops[2] if layout is None else np.zeros_like(crops[2])
    return composite_repair(changed, crops[1], guide, band)


def composite_repair(changed: np.ndarray, source: np.ndarray, guide: np.ndarray, band: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(held, repair) for a start from an artist's composite; `changed`: where it differs from
    the photo (changed_pixels). held: the changed pixels shrunk by `band` px, the pasted
    object's inside, kept as the artist made it. repair: what is synthesized, the seams and the
    object's edges (`band` px either side of the change) and the pixels whose label changes but
    the composite did not touch (the uncovered old place), grown by `band`."""
    held = closed = changed
    if changed.any():
        # closed first: a pasted object has pixels equal to the photo's where both are flat
        closed = ~dilate(~dilate(changed, band), band)
        held = ~dilate(~closed, band)
    stale = (source ^ guide) & ~closed
    return held, dilate(closed | stale, band) & ~held


DETERMINISTIC_ENV = "MAGIC_DETERMINISTIC"


def resolve_deterministic(value: bool | None) -> bool:
    """The engine's determinism: `value`, else $MAGIC_DETERMINISTIC ("0", "false", "no" or
    "off" for cuDNN free to pick), else True."""
    if value is not None:
        return value
    raw = os.environ.get(DETERMINISTIC_ENV, "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{DETERMINISTIC_ENV}={raw!r}: use 1 (same seed, same pixels) or 0 "
                     "(cuDNN free to pick the fastest algorithms)")


class Engine:
    def __init__(self, classifier: torch.nn.Module, device: torch.device | str = "cpu",
                 weights_label: str = "untrained", *, capture_mode: str | None = None,
                 capture_backend: str = "inductor", channels_last: bool | None = None,
                 deterministic: bool | None = None) -> None:
        """capture_mode: "auto" (default, or $MAGIC_CAPTURE): on CUDA each level of 40+
        iterations runs captured whole as CUDA graphs, eager elsewhere; "graph" (always; on
        the CPU the trace stand-in); "eager"; "compile": only the classifier's judgement,
        through torch.compile (engine/capture.py).
        capture_backend: torch.compile's backend ("inductor"; tests use "aot_eager").
        channels_last: run the classifier and x' in NHWC (default: on CUDA only; tests force
        it on the CPU to check the CUDA layout's code path).
        deterministic: cuDNN's deterministic algorithms on CUDA, so that the same seed gives
        the same pixels (default: yes, or $MAGIC_DETERMINISTIC=0 for cuDNN free to pick the
        fastest; `bench_engine --compare-determinism` measures what it costs)."""
        self.device = torch.device(device)
        self.channels_last = (self.device.type == "cuda") if channels_last is None \
            else channels_last
        self.capture_mode = capture.resolve_mode(capture_mode)
        self.capture_backend = capture_backend
        self._captured: capture.Captured | None = None  # the compiled judgement (kept)
        self._judge = None  # the latest edit's judged step: _judged_gradient or its capture
        self._last_capture: dict | None = None
        self.last_scales: term_balance.TermScales | None = None  # the latest balance (tests)
        self.classifier = classifier.to(self.device).eval()
        if self.channels_last:  # convolutions run fastest on NHWC on CUDA
            self.classifier = self.classifier.to(memory_format=torch.channels_last)
        self.deterministic = resolve_deterministic(deterministic)
        if self.device.type == "cuda":
            # same seed, same GPU, same pixels: cuDNN may otherwise pick algorithms whose
            # backward sums in a different order on every run (the critic, the mask network)
            torch.backends.cudnn.deterministic = self.deterministic
            torch.backends.cudnn.benchmark = not self.deterministic
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.weights_label = weights_label
        self.trained = not weights_label.startswith("untrained")
        self.norm = Normaliser(self.device)
        self.use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()

    def describe(self) -> EngineDescription:
        name, memory = "CPU", None
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            name, memory = props.name, props.total_memory // 2**20
        elif self.device.type == "mps":
            name = "Apple GPU (MPS)"
        return EngineDescription(
            device=str(self.device), device_name=name, gpu_memory_mb=memory,
            weights_label=self.weights_label, weights_loaded=self.trained,
            preset_iterations={n: p.iterations for n, p in PRESETS.items()},
            bf16=self.use_bf16, capture=self.capture_mode, deterministic=self.deterministic)

    def warm_up(self) -> None:
        """One small forward/backward so the first real job does not pay for kernel setup."""
        z = torch.zeros(1, 3, 64, 64, device=self.device, requires_grad=True)
        with self._autocast():
            logits, _ = self.classifier.forward_with_features(self.norm.pixels(z))
        logits.float().sum().backward()

    def _autocast(self):
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- one edit -------------------------------------------------------------------------

    def synthesize(self, image: np.ndarray, source_mask: np.ndarray, guide_mask: np.ndarray,
                   options: SynthesisOptions, on_progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None, *,
                   init_image: np.ndarray | None = None,
                   weights: LossWeights | None = None,
                   schedule: Schedule | None = None,
                   label_maps: tuple[np.ndarray, np.ndarray] | None = None) -> SynthesisResult:
        """Run one edit.

        init_image: the artist's rough composite (HxWx3 uint8, same size): x' starts from it
        instead of pure noise. `weights` and `schedule` override the preset's loss weights
        and schedule (benchmarks and experiments only). label_maps: (source, target) label
        index maps for a layout edit (synthesize_layout); the masks are then where they differ.
        """
        options.validate()
        if label_maps is None:
            check_inputs(image, source_mask, guide_mask,
                         allow_empty_guide=options.mode == "remove")
        if init_image is not None and init_image.shape != image.shape:
            raise EngineInputError("the starting composite must have the image's size")
        preset = resolve_preset(options.preset)
        started = time.monotonic()
        notes: list[str] = []
        if (init_image is None and label_maps is None and options.composite
                and preset.pyramid):
            init_image = transfer_start(image, source_mask, guide_mask, options.mode)
            if init_image is not None:
                notes.append("started from the object's own pixels moved where the guide "
                             "puts it (masks only)")
        # decided before a layout's own cut-and-paste start: its old places, which nothing
        # pastes over, need the whole budget
        schedule = schedule or preset.schedule(options.iterations,
                                               from_composite=init_image is not None)
        h, w = image.shape[:2]
        if label_maps is not None:
            differ = label_maps[0] != label_maps[1]
            if init_image is None and preset.pyramid and options.composite:
                init_image = layout_composite(image, *label_maps)
            changed = changed_pixels(image, init_image)
            edit = grow_edit(differ if changed is None else differ | changed)
            plan = EditPlan(region_of_interest(edit), edit)
            box = plan.box
        elif options.composite:
            plan = plan_edit(source_mask, guide_mask, image, init_image, options.mode)
            box = plan.box
        else:
            plan, box = None, Box(0, 0, h, w)
            edit = np.ones((h, w), bool)
        edit = plan.edit if plan is not None else edit
        crops = [box.crop(a) for a in (image, source_mask, guide_mask, edit)]
        init = box.crop(init_image) if init_image is not None else None
        layout = tuple(box.crop(m) for m in label_maps) if label_maps is not None else None
        pyramid = preset.pyramid and options.composite
        donated = []
        if label_maps is not None and pyramid:
            donated = [(w.crop(image), w.crop(label_maps[0]))
                       for w in donors.donor_windows(*label_maps, edit, box)]

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(options.seed)
            if weights is None and pyramid:
                weights = LossWeights.product(self.trained)
                if not self.trained:
                    notes.append("untrained classifier: its class and feature terms are off "
                                 "(measured: with random weights they only add noise)")
            weights = weights or LossWeights.for_mode(options.mode)
            if not options.composite:
                weights = replace(weights, keep=0.0)  # the paper's whole new image
            job = EditRun(options, weights, torch.Generator().manual_seed(options.seed), cancel,
                      on_progress, total=0)
            judge_size = working_size(box.height, box.width, options.resolution)
            judge = self._reference(*crops, judge_size, layout=layout)
            pasted = held_and_repair(crops, init, layout) if pyramid else None
            levels = (self._pyramid_levels(crops, judge, preset, schedule, options, init, layout,
                                           donated, pasted)
                      if pyramid else self._paper_levels(judge, schedule))
            job.total = sum(level.schedule.iterations for level in levels)
            z = self._initial(levels[0], init, job, pyramid)
            self._show_start(z, levels[0], job, started,
                             schedule.mask_net_steps if weights.mask else 0)
            mask_net = self._fit_mask_net(judge, schedule, job) if weights.mask else None
            self._judge = self._judge_runner(job.total)
            if weights.smoothing:
                self._judge = term_balance.Smoothed(self._judge, weights.smoothing,
                                                    torch.Generator().manual_seed(options.seed))
            job.t0 = time.monotonic()
            report: dict[str, float] = {}
            field = None
            for i, level in enumerate(levels):
                if i:
                    z = F.interpolate(z, size=level.ref.z.shape[-2:], mode="bicubic",
                                      align_corners=False)
                    if field is not None:
                        h_i, w_i = level.ref.z.shape[-2:]
                        field = upscale_field(field, (h_i - PATCH + 1, w_i - PATCH + 1),
                                              levels[i - 1].bank.grid, level.bank.grid)
                z, report, field = self._optimise(z, level, mask_net, job, field)
            self._last_capture = self._capture_record(job)
            if pyramid:
                patches = self._finish(z, levels[-1], field if not donated else None, crops,
                                       init, pasted, options.mode)
            else:
                patches = tensor_to_images(self.norm.pixels(self._compose(z, levels[-1])),
                                           size=(box.height, box.width))

        if plan is not None:
            images = [composite(image, p, box, plan.alpha) for p in patches]
        else:
            images = patches
        return SynthesisResult(
            images=images,
            seeds=[options.seed + i for i in range(options.samples)],
            predicted_class=judge.target_class,
            iterations=job.total,
            elapsed_s=time.monotonic() - started,
            losses=report,
            region=(box.top, box.left, box.bottom, box.right),
            touched=plan.touched() if plan is not None else None,
            notes=notes,
        )

    # -- levels ---------------------------------------------------------------------------

    def _paper_levels(self, judge: Reference, schedule: Schedule) -> list[Level]:
        return [Level(judge, judge, schedule, LEARNING_RATE, "synthesis")]

    def _pyramid_levels(self, crops, judge: Reference, preset: Preset, schedule: Schedule,
                        options: SynthesisOptions, init: np.ndarray | None,
                        layout: tuple[np.ndarray, np.ndarray] | None = None,
                        donated: list[tuple[np.ndarray, np.ndarray]] = (),
                        pasted: tuple[np.ndarray, np.ndarray] | None = None) -> list[Level]:
        """donated: (photo, source labels) windows from outside the region whose patches a
        layout edit may use too (engine/donors.py); pasted: (held, repair) of a start from a
        composite (held_and_repair)."""
        box_h, box_w = crops[0].shape[:2]
        held, repair = pasted if pasted is not None else (None, None)
        finest = preset.finest_side if options.refine else max(judge.z.shape[-2:])
        # From a composite too the pyramid starts small: measured on the sample scenes,
        # starting at the finer levels only left more of the paste's seams (coherence 0.60
        # against 0.52 on the coffee move).
        sizes = level_sizes(box_h, box_w, finest)[-schedule.iterations:]
        counts = split_iterations(schedule.iterations, sizes, options.resolution)
        levels = []
        for i, (size, count) in enumerate(zip(sizes, counts)):
            ref = self._reference(*crops, size, judged=False, layout=layout)
            blurred = None
            if i:
                small = F.interpolate(ref.z, size=sizes[i - 1], mode="bilinear",
                                      antialias=True, align_corners=False)
                blurred = F.interpolate(small, size=size, mode="bicubic", align_corners=False)
            edit = 1 - ref.keep
            free, base = edit, ref.z
            if held is not None:
                inside = (mask_to_tensor(held, size, self.device) > 0.999).float()
                free = edit * (1 - inside) * mask_to_tensor(repair, size, self.device).ceil()
                pasted = self.norm.normalise(image_to_tensor(init, size, self.device))
                base = ref.z * (1 - inside) + pasted * inside
            r = PATCH // 2
            centres = F.max_pool2d(free, 2 * r + 1, stride=1, padding=r)[0, 0] > 0
            if layout is not None:
                photo_labels = ref.source_labels
                labels = ref.target_labels * edit + photo_labels * (1 - edit)
            else:
                photo_labels, labels = edit_labels(ref.source, ref.guide, edit, options.mode)
            bank_z, bank_labels, bank_blurred = ref.z, photo_labels, blurred
            if donated:
                previous = sizes[i - 1] if i else None
                pieces = [self._donor_piece(p, m, size, (box_h, box_w), previous, layout)
                          for p, m in donated]
                gap = PATCH
                bank_z, bank_labels = donors.canvas(
                    [(ref.z, photo_labels)] + [(z, m) for z, m, _ in pieces], gap)
                if blurred is not None:
                    bank_blurred, _ = donors.canvas(
                        [(blurred, photo_labels)] + [(b, m) for _, m, b in pieces], gap)
                photo_labels, labels = donors.with_void(photo_labels), donors.with_void(labels)
            bank = PatchBank(bank_z, bank_labels, blurred=bank_blurred,
                             gen=torch.Generator().manual_seed(options.seed))
            stage = "synthesis" if max(size) <= 1.25 * options.resolution else "refine"
            levels.append(Level(ref, judge, Schedule(count, 1, count, 0), PRODUCT_LEARNING_RATE,
                                stage, free, base, bank, centres, labels, preset.refresh_every,
                                photo_labels,
                                self._label_colours(bank_z, bank_labels) if donated else None,
                                agree=layout is not None))
        return levels

    def _donor_piece(self, photo: np.ndarray, labels: np.ndarray, size: tuple[int, int],
                     box: tuple[int, int], previous: tuple[int, int] | None,
                     layout: tuple[np.ndarray, np.ndarray]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A donor window at the level's scale (the region's `box` (h, w) shown at `size`):
        normalised pixels, label fractions and, after the first level, its blurred keys."""
        scale = (size[0] / box[0], size[1] / box[1])
        piece = (max(PATCH, round(photo.shape[0] * scale[0])),
                 max(PATCH, round(photo.shape[1] * scale[1])))
        z = self.norm.normalise(image_to_tensor(photo, piece, self.device))
        blurred = None
        if previous is not None:
            down = (max(1, round(piece[0] * previous[0] / size[0])),
                    max(1, round(piece[1] * previous[1] / size[1])))
            small = F.interpolate(z, size=down, mode="bilinear", antialias=True,
                                  align_corners=False)
            blurred = F.interpolate(small, size=piece, mode="bicubic", align_corners=False)
        return z, self._label_fractions(labels, piece, layout), blurred

    @staticmethod
    def _label_colours(image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(K, 3): each label's mean colour in the patch bank's image (NaN: label absent)."""
        weight = (labels == labels.max(1, keepdim=True).values).float() * (labels > 0.5)
        total = weight.sum(dim=(2, 3))[0]  # (K,)
        colours = torch.einsum("nkhw,nchw->kc", weight, image) / total[:, None]
        return colours

    def _label_fractions(self, labels: np.ndarray, size: tuple[int, int],
                         layout: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
        """(1, K, h, w) fractions of each label of an index map, K from both maps."""
        count = int(max(m.max() for m in layout)) + 1
        return torch.cat([mask_to_tensor(labels == k, size, self.device) for k in range(count)],
                         dim=1)

    def synthesize_layout(self, image: np.ndarray, source_labels: np.ndarray,
                          target_labels: np.ndarray, options: SynthesisOptions,
                          on_progress: ProgressCallback | None = None,
                          cancel: threading.Event | None = None, *,
                          init_image: np.ndarray | None = None) -> SynthesisResult:
        """A layout edit: the photo's label map (H, W ints, K <= 16 labels) and the wanted one.
        Where they differ (dilated) is synthesized from the photo's patches of each pixel's
        wanted label; everything else stays the photo's. The `paper` preset follows the
        paper's objective with its mask network trained on the K-label source map."""
        if source_labels.shape != image.shape[:2] or target_labels.shape != image.shape[:2]:
            raise EngineInputError("the label maps must have the image's size")
        if max(int(source_labels.max()), int(target_labels.max())) >= MAX_LABELS:
            raise EngineInputError(f"at most {MAX_LABELS} labels are supported")
        differ = source_labels != target_labels
        if not differ.any():
            raise EngineInputError("the target label map equals the source map: nothing to "
                                   "change")
        return self.synthesize(image, differ, differ, replace(options, mode="layout"),
                               on_progress, cancel, init_image=init_image,
                               label_maps=(source_labels, target_labels))

    def _reference(self, image, source_mask, guide_mask, edit, size, judged: bool = True,
                   layout: tuple[np.ndarray, np.ndarray] | None = None) -> Reference:
        """The photo at `size`; `layout`: the (source, target) label index maps of a layout
        edit, else the masks are the labels (background, object)."""
        pixels = image_to_tensor(image, size, self.device)
        target_class, feature_targets = -1, []
        if judged:
            with torch.no_grad(), self._autocast():
                logits, feats = self.classifier.forward_with_features(pixels)
            target_class = int(logits.float().argmax(dim=1).item())
            feature_targets = [losses.channel_stats(f) for f in feats]
        source = mask_to_tensor(source_mask, size, self.device)
        guide = mask_to_tensor(guide_mask, size, self.device)
        if layout is not None:
            source_labels, target_labels = (self._label_fractions(m, size, layout)
                                            for m in layout)
        else:
            source_labels, target_labels = binary_fractions(source), binary_fractions(guide)
        return Reference(
            z=self.norm.normalise(pixels),
            source=source,
            guide=guide,
            source_labels=source_labels,
            target_labels=target_labels,
            keep=1 - mask_to_tensor(edit, size, self.device).ceil(),
            target_class=target_class,
            feature_targets=feature_targets,
        )

    def _noise(self, shape: torch.Size, job: EditRun) -> torch.Tensor:
        # Sample k starts from noise seeded with seed + k (the seed in its layer name); the
        # networks it is optimised against are shared by the batch and seeded with `seed`.
        base = job.options.seed
        return torch.stack([
            torch.randn(shape, generator=torch.Generator().manual_seed(base + k))
            for k in range(job.options.samples)
        ]).to(self.device)

    def _initial(self, level: Level, init: np.ndarray | None, job: EditRun, pyramid: bool
                 ) -> torch.Tensor:
        ref = level.ref
        noise = self._noise(ref.z.shape[1:], job)
        if init is None and pyramid:
            return self._label_fill(level) + FILL_NOISE * noise
        if init is None:
            return noise
        start = self.norm.normalise(image_to_tensor(init, ref.z.shape[-2:], self.device))
        if pyramid:
            # Where the composite still shows the photo but the label changes (the old place
            # of a pasted layer, an object to remove), start from the label's smooth fill.
            relabel = (level.labels.argmax(1, keepdim=True)
                       != level.photo_labels.argmax(1, keepdim=True)).float() * level.free
            same = (start - ref.z).abs().amax(1, keepdim=True) < 1e-3
            stale = relabel * same.float()
            start = start * (1 - stale) + self._label_fill(level) * stale
        z = start + (COMPOSITE_NOISE if pyramid else INIT_NOISE) * noise
        self.norm.clamp_(z)
        return z

    def _label_fill(self, level: Level) -> torch.Tensor:
        """A start with no composite: each free pixel filled from the nearest photo pixels that
        carry the label it should have (the object's colours where the guide is, the
        surrounding background's elsewhere), so the first matching sees plausible colours.
        Nearest, not smooth: measured on the helmet removal, a smooth blend of the suit and
        the table became suit everywhere (coherence 0.61); from the nearest side the suit
        and the table each continue (0.50), the other edits unchanged."""
        free = level.free
        target = level.labels.argmax(1, keepdim=True)
        photo_labels = level.photo_labels.argmax(1, keepdim=True)
        start = level.base.clone()
        for k in range(level.labels.shape[1]):
            known = ((target == k).float() * (1 - free))
            source = level.base
            if float(known.sum()) == 0:  # a label only the free pixels carry: the photo's
                known, source = (photo_labels == k).float(), level.ref.z
            colour = level.label_colours[k] if level.label_colours is not None else None
            if float(known.sum()) == 0 and colour is not None and bool(colour.isfinite().all()):
                fill = colour.view(1, 3, 1, 1).expand_as(start)  # only donors have it
            else:
                fill = nearest_side_fill(source, known)
            here = (target == k).float() * free
            start = start * (1 - here) + fill * here
        return start

    def _show_start(self, z: torch.Tensor, level: Level, job: EditRun, started: float,
                    mask_net_steps: int) -> None:
        """The first preview: x' as it starts (the composite or the fill, with its noise),
        shown before the mask network's training and the first iterations (their compile
        when captured), so that the artist sees the edit take shape at once. Reported as
        iteration 0 of the stage that comes next."""
        if job.on_progress is None or not job.options.preview_every:
            return
        copies = PreviewCopies(self.device)
        h, w = z.shape[-2:]
        copies.start(self.norm.pixels(self._compose(z, level)),
                     preview_size(h, w, job.options.preview_size))
        stage, total = ("mask-net", mask_net_steps) if mask_net_steps else (level.stage,
                                                                            job.total)
        job.on_progress(Progress(0, total, time.monotonic() - started, {},
                                 copies.collect(wait=True), stage=stage))

    def _fit_mask_net(self, ref: Reference, schedule: Schedule, job: EditRun) -> MaskNet:
        t0 = time.monotonic()

        def on_step(step: int, total: int, loss: float | None) -> None:
            if job.on_progress is not None:
                job.on_progress(Progress(step, total, time.monotonic() - t0,
                                         {"mask_net_ce": loss} if loss is not None else {},
                                         stage="mask-net"))

        return train_mask_net(ref.z, ref.source_labels, schedule.mask_net_steps, job.gen,
                              job.cancel, on_step)

    def _finish(self, z: torch.Tensor, level: Level, field: torch.Tensor | None, crops,
                init: np.ndarray | None, pasted: tuple[np.ndarray, np.ndarray] | None,
                mode: str) -> list[np.ndarray]:
        """The region at the photo's own size (engine/finish.py): the last level upsampled,
        the photo's own detail voted where its matches point (`field`; None: the bank was
        not the photo alone), fused in the gradient domain into what stays: the photo, and
        the artist's pasted object where it is held."""
        photo, free = crops[0], crops[3]
        around, exact, outline = photo, None, None
        if pasted is not None:
            held, repair = pasted
            free = free & repair & ~held
            around = np.where(held[..., None], init, photo)
            if mode != "layout":
                # the object as pasted, at its own size, where the guide puts it: its rim is
                # fused into the new surroundings in the gradient domain (Poisson cloning),
                # not redrawn from an upsampled level (whose outline showed as a staircase)
                exact = crops[2] & changed_pixels(photo, init)
                around = np.where(exact[..., None], init, around)
        if mode != "remove" and crops[2].any():  # the new object and its outline
            outline = dilate(crops[2], 2)
        synth = self.norm.pixels(self._compose(z, level))
        tight, carried = 0.0, None
        if exact is not None:
            tight = finish.selection_tightness(photo, crops[1])
            carried = carried_background(photo, crops[1])
        return finish.finish_region(synth, photo, around, free, field=field, patch=PATCH,
                                    exact=exact, outline=outline, tight=tight, carried=carried,
                                    edges_are_lines=mode != "layout")

    # -- the optimisation loop --------------------------------------------------------------

    def _compose(self, z: torch.Tensor, level: Level) -> torch.Tensor:
        """x' from the free pixels: the photo wherever the level does not synthesize."""
        if level.free is None:
            return z
        return level.base * (1 - level.free) + z * level.free

    def _optimise(self, z: torch.Tensor, level: Level, mask_net: MaskNet | None, job: EditRun,
                  field: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        """Run one level; `field` is the patch match field to search around (patch term).

        An iteration: the critic's step (once it has joined), the patch matching (every
        `refresh_every` iterations) with the terms' balance, then the update of x' (_update).
        The critic's step and the update read only tensors that stay in place, so that a level
        may run them captured (engine/iteration_capture.py, chosen by _LevelSteps)."""
        z = z.detach().clone().requires_grad_(True)
        schedule = level.schedule
        paper = level.free is None
        opt = Adam([z], lr=level.peak_lr, betas=(0.5, 0.9) if paper else (0.9, 0.99), eps=1e-8)
        critic = CriticTrainer(level.ref.z, job.gen) if job.weights.critic > 0 else None
        steps = _LevelSteps(self, z, opt, level, mask_net, critic, job)
        report: dict[str, float] = {}
        options = job.options
        h, w = z.shape[-2:]
        matches = None
        jw, measured = job.weights, None  # jw: the weights in force (relative: rescaled)
        copies = PreviewCopies(self.device)
        for it in range(schedule.iterations):
            job.check_cancel()
            opt.set_lr(learning_rate(it, schedule, level.peak_lr))
            critic_on = critic is not None and it >= schedule.discriminator_start
            if critic_on:
                count = CRITIC_WARM_START_STEPS if it == schedule.discriminator_start else 1
                for _ in range(count):
                    wasserstein = steps.critic(*critic.draw(z.shape))
            if level.bank is not None and it % level.refresh_every == 0:
                x = self._compose(z, level)
                matches = level.bank.match(x.detach(), level.labels, level.centres,
                                           blurred=True, prior=field, agree=level.agree)
                field = matches.field
                if job.weights.relative:
                    jw, measured = self._balance(z, x, level, matches, job.weights)
            matched = (matches.target, matches.covered) if matches is not None else ()
            terms, loss = steps.update(critic_on, matched, jw, measured)
            measured = None
            job.done += 1
            last = job.done == job.total
            fresh: dict[str, float] = {}
            if job.done % LOSS_REPORT_EVERY == 0 or it + 1 == schedule.iterations:
                fresh = {k: float(v) for k, v in terms.items()}
                fresh["total"] = float(loss)
                if critic_on:
                    fresh["wasserstein"] = float(wasserstein)
                report = fresh
            if job.on_progress is not None:
                if options.preview_every and (job.done % options.preview_every == 0 or last):
                    copies.start(self.norm.pixels(self._compose(z, level)),
                                 preview_size(h, w, options.preview_size))
                previews = copies.collect(wait=it + 1 == schedule.iterations)
                job.on_progress(Progress(job.done, job.total, time.monotonic() - job.t0,
                                         fresh, previews, stage=level.stage))
        job.captures.append(steps.record())
        return z.detach(), report, field

    def _update(self, z: torch.Tensor, opt: Adam, level: Level, mask_net: MaskNet | None,
                critic: CriticTrainer | None, jw: LossWeights, target: torch.Tensor | None = None,
                covered: torch.Tensor | None = None, measured: tuple | None = None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One update of x': its terms (the patch term from the matched `target` and `covered`),
        their gradient, Adam's step and the clamp to valid pixels. Returns the terms' values
        and their weighted total, as detached tensors. Asks the host for nothing: a level may
        capture it whole."""
        x = self._compose(z, level)
        extra = {"measured": measured} if measured is not None else {}
        terms, surrogate = self._objective(x, level, mask_net, critic, jw, **extra)
        if target is not None:
            terms["patch"] = patch_loss(x, target, covered, level.free)
        live = [getattr(jw, k) * v for k, v in terms.items() if v.requires_grad]
        if surrogate is not None:
            live.append(surrogate)
        loss = sum(getattr(jw, k) * v.detach().float() for k, v in terms.items())
        if live:
            (gradient,) = torch.autograd.grad(sum(live), [z])
            opt.step([gradient])
        with torch.no_grad():
            self.norm.clamp_(z)
        return {k: v.detach() for k, v in terms.items()}, loss.detach()

    @staticmethod
    def _seen(x: torch.Tensor, judge: Reference) -> torch.Tensor:
        """x' as the classifier sees it: at the working resolution."""
        if x.shape[-2:] == judge.z.shape[-2:]:
            return x
        return F.interpolate(x, size=judge.z.shape[-2:], mode="bilinear",
                             antialias=x.shape[-1] > judge.z.shape[-1], align_corners=False)

    def _balance(self, z: torch.Tensor, x: torch.Tensor, level: Level, matches,
                 weights: LossWeights) -> tuple[LossWeights, tuple | None]:
        """The weights that give the judged terms their shares of the patch term's pull, from
        gradient norms measured now on the free pixels (engine/term_balance.py), and this
        iteration's judged (values, gradient), already computed for the measurement."""
        shares = weights.shares()
        if not any(shares.values()):
            return weights, None
        seen = self._seen(x, level.judge)

        def back(gradient: torch.Tensor) -> torch.Tensor:
            return torch.autograd.grad((seen * gradient).sum(), z, retain_graph=True)[0]

        values, grads, norms = term_balance.measure(self._judge, seen.detach(), level.judge,
                                                    weights, back, shares)
        patch = weights.patch * patch_loss(x, matches.target, matches.covered, level.free)
        patch_norm = float(torch.autograd.grad(patch, z, retain_graph=True)[0].float().norm())
        scales = term_balance.balance(shares, norms, patch_norm)
        self.last_scales = scales
        jw = replace(weights, classifier=scales.classifier, feature_stats=scales.feature_stats)
        if weights.mask:  # the mask network's term is not in the measured gradient
            return jw, None
        gradient = sum(getattr(scales, k) * g for k, g in grads.items())
        return jw, (values, gradient)

    def _objective(self, x: torch.Tensor, level: Level, mask_net: MaskNet | None,
                   critic: CriticTrainer | None, jw: LossWeights, measured: tuple | None = None
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """The terms of this level (terms whose weight is 0 are not computed) and the judged
        part's surrogate: the classifier and mask network judge x' through `self._judge`, which
        returns their values (detached, for the report) and their weighted gradient with respect
        to what they saw; (seen * gradient).sum() carries that gradient back to x'.
        measured: that (values, gradient), already computed (_balance)."""
        judge = level.judge
        terms: dict[str, torch.Tensor] = {}
        surrogate = None
        if measured is not None or jw.classifier or jw.feature_stats or jw.mask:
            seen = self._seen(x, judge)
            judged, gradient = measured or self._judge(seen.detach(), judge, mask_net, jw)
            terms.update(judged)
            surrogate = (seen * gradient).sum()
        with self._autocast():
            if jw.tv_l1:
                terms["tv_l1"] = losses.total_variation_l1(x)
            if jw.tv_l2:
                terms["tv_l2"] = losses.total_variation_l2(x)
            if jw.l2:
                terms["l2"] = losses.l2_prior(x)
            if jw.keep and level.free is None:
                terms["keep"] = losses.keep_loss(x, level.ref.z, level.ref.keep)
            if critic is not None:
                terms["critic"] = critic.generator_loss(x)
        return terms, surrogate

    def _judged_gradient(self, seen: torch.Tensor, judge: Reference, mask_net: MaskNet | None,
                         jw: LossWeights) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The classifier's and the mask network's terms on x' at the working resolution and
        the gradient of their weighted sum with respect to x'. Its shapes are fixed for a
        whole edit: this is the part that is captured (engine/capture.py)."""
        # NHWC before it is marked for the gradient: the tensor differentiated must be the one
        # the graph uses (a copy made after it is not, and torch.compile then refuses it)
        if self.channels_last:
            seen = seen.contiguous(memory_format=torch.channels_last)
        seen = seen.detach().requires_grad_(True)
        terms: dict[str, torch.Tensor] = {}
        with torch.enable_grad(), self._autocast():
            if jw.classifier or jw.feature_stats:
                logits, feats = self.classifier.forward_with_features(self.norm.pixels(seen))
                terms["classifier"] = losses.class_loss(logits, judge.target_class)
                terms["feature_stats"] = losses.feature_stats_loss(feats, judge.feature_targets)
            if jw.mask:
                terms["mask"] = losses.mask_loss(mask_net(seen), judge.target_labels)
            total = sum(getattr(jw, k) * v.float() for k, v in terms.items())
            (gradient,) = torch.autograd.grad(total, seen)
        return {k: v.detach() for k, v in terms.items()}, gradient

    def _judge_runner(self, iterations: int):
        """The judged part for this edit: compiled when the capture mode is "compile" (its
        success is reported in last_capture), else eager (a captured level records it whole)."""
        choice = capture.decide(self.capture_mode, self.device, iterations)
        if choice.how == "compile":
            cached = self._captured
            if cached is None or not cached.active:
                cached = self._captured = capture.Captured(self._judged_gradient,
                                                           backend=self.capture_backend)
            return cached
        return self._judged_gradient

    def _capture_record(self, job: EditRun) -> dict:
        levels = job.captures
        compiled = self._captured if self.capture_mode == "compile" else None
        if compiled is not None:
            failure = compiled.failure
            captured = compiled.active and compiled.calls > 0
            reason = "capture mode compile"
        else:
            steps = [step for level in levels for step in level["steps"].values()]
            failure = next((step["failure"] for step in steps if step["failure"]), None)
            captured = failure is None and any(step["replays"] for step in steps)
            reason = levels[-1]["reason"] if levels else None
        return {"captured": captured, "failure": failure, "mode": self.capture_mode,
                "reason": reason, "levels": levels}

    @property
    def last_capture(self) -> dict | None:
        """How the latest edit's iterations ran (benchmarks, logs): captured, why not, and per
        level (`levels`: how, reason, backend, replays, failure)."""
        return self._last_capture


class _LevelSteps:
    """The critic's step and the update of x' for one level, eager or captured whole as the
    capture mode decides (engine/capture.py); `record()` says how they ran."""

    def __init__(self, engine: Engine, z: torch.Tensor, opt: Adam, level: Level,
                 mask_net: MaskNet | None, critic: CriticTrainer | None, job: EditRun) -> None:
        choice = capture.decide(engine.capture_mode, engine.device, level.schedule.iterations)
        weights = job.weights
        if choice.how == "graph":
            blocker = None
            if weights.smoothing:
                blocker = "the judged gradient is smoothed with noise drawn on the host"
            elif weights.relative and any(weights.shares().values()):
                blocker = "the judged terms are re-weighted at every patch matching"
            if blocker:
                choice = capture.Choice("eager", f"{choice.reason}; eager: {blocker}")
        capture.log.debug("level %s: %s (%s)", tuple(z.shape[-2:]), choice.how, choice.reason)
        self.choice = choice
        self.engine, self.z, self.opt, self.level = engine, z, opt, level
        self.mask_net, self.critic_trainer, self.weights = mask_net, critic, weights
        self.keys: dict[str, list[str]] = {}
        self.captured: dict[str, CapturedStep] = {}

    def critic(self, index: torch.Tensor, floats: torch.Tensor) -> torch.Tensor:
        """One critic step on x' with this step's random draw; its Wasserstein estimate."""
        trainer = self.critic_trainer
        assert trainer is not None
        return self._run("critic", lambda i, f: (trainer.update(self.z, i, f),),
                         lambda: trainer.state, (index, floats))[0]

    def update(self, critic_on: bool, matched: tuple[torch.Tensor, ...], weights: LossWeights,
               measured: tuple | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The update of x' (Engine._update) with the latest matching's (target, covered).
        Weights rescaled at this matching, or judged values it measured, are this iteration's
        own: that update runs eager."""
        name = "update with critic" if critic_on else "update"
        critic = self.critic_trainer if critic_on else None
        if measured is not None or weights is not self.weights:
            return self.engine._update(self.z, self.opt, self.level, self.mask_net, critic,
                                       weights, *matched, measured=measured)

        def step(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            terms, loss = self.engine._update(self.z, self.opt, self.level, self.mask_net,
                                              critic, self.weights, *tensors)
            self.keys[name] = list(terms)
            return (*terms.values(), loss)

        out = self._run(name, step, lambda: [self.z, *self.opt.state], matched)
        return dict(zip(self.keys[name], out[:-1])), out[-1]

    def _run(self, name: str, step, state, inputs: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, ...]:
        if self.choice.how != "graph":
            return step(*inputs)
        runner = self.captured.get(name)
        if runner is None:
            runner = self.captured[name] = CapturedStep(step, state, self.choice.backend, name)
        return runner(*inputs)

    def record(self) -> dict:
        return {"size": list(self.z.shape[-2:]), "how": self.choice.how,
                "reason": self.choice.reason, "backend": self.choice.backend,
                "steps": {name: {"replays": r.replays, "failure": r.failure}
                          for name, r in self.captured.items()}}
