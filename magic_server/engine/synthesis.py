"""Engine: owns the frozen classifier on a device and runs MAGIC edits.

An edit is planned once (`_setup`: the region, its start, its budget), then its levels run one
optimisation loop (engine/optimise.py) and the result is finished at the photo's own size:
- `paper`: x' is optimised at one working resolution against the paper's terms
  (`_paper_levels`).
- the product presets: the same loop runs coarse to fine over a pyramid of the edit's region
  (engine/levels.py); only the edit region is free (every other pixel is the photo's), and the
  patch nearest-neighbour term (engine/patch_nn.py) pulls x' towards the photo's own patches
  that carry the label the guide asks for (`_product_levels`); a `layout` edit takes the
  labels from two label maps and may borrow patches from donor windows (`_plan_layout`). The
  classifier and the mask network judge x' at the working resolution, whatever the level.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from magic_protocol.protocol import MAX_LABELS
from magic_server.engine import capture, donors, finish, losses, term_balance
from magic_server.engine.api import (
    EditKind,
    EngineDescription,
    EngineInputError,
    Progress,
    ProgressCallback,
    SynthesisOptions,
    SynthesisResult,
    check_inputs,
)
from magic_server.engine.carried_background import carried_background
from magic_server.engine.edit_plan import (
    EditPlan,
    EditRun,
    EditSetup,
    Level,
    Reference,
    background_that_stays,
    changed_pixels,
    compose,
    grow_edit,
    growth_radius,
    held_and_repair,
    object_extent,
    plan_edit,
)
from magic_server.engine.layout_start import layout_composite
from magic_server.engine.levels import LevelBuilder
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.mask_net import MaskNet, train_mask_net
from magic_server.engine.object_transfer import transfer_start
from magic_server.engine.optimise import EditOptimiser
from magic_server.engine.patch_nn import PATCH, upscale_field
from magic_server.engine.presets import Preset, Schedule, preset_iterations, resolve_preset
from magic_server.engine.previews import PreviewCopies
from magic_server.engine.regions import Box, composite, dilate, region_of_interest
from magic_server.engine.tensors import (
    Normaliser,
    preview_size,
    tensor_to_images,
    working_size,
)

DETERMINISTIC_ENV = "MAGIC_DETERMINISTIC"
# round an object's new place the fill is the photo's own beyond this many of the last
# level's pixels from the guide (the object's rim against its new background is synthesized)
STAYS_RIM = 4


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
        self.levels = LevelBuilder(self.device, self.norm, self.classifier, self._autocast)

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
            preset_iterations=preset_iterations(),
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
                         allow_empty_guide=options.mode == EditKind.REMOVE)
        if init_image is not None and init_image.shape != image.shape:
            raise EngineInputError("the starting composite must have the image's size")
        preset = resolve_preset(options.preset)
        started = time.monotonic()
        setup = self._setup(image, source_mask, guide_mask, options, preset, init_image,
                            schedule, label_maps)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(options.seed)
            weights = self._weights(weights, setup, options)
            run = EditRun(options, weights, torch.Generator().manual_seed(options.seed), cancel,
                          on_progress, total=0)
            patches, judge, report = self._run(setup, run, started)
        box, plan = setup.box, setup.plan
        images = ([composite(image, p, box, plan.alpha) for p in patches]
                  if plan is not None else patches)
        return SynthesisResult(
            images=images,
            seeds=[options.seed + i for i in range(options.samples)],
            predicted_class=judge.target_class,
            iterations=run.total,
            elapsed_s=time.monotonic() - started,
            losses=report,
            region=(box.top, box.left, box.bottom, box.right),
            touched=plan.touched() if plan is not None else None,
            notes=setup.notes,
        )

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
        return self.synthesize(image, differ, differ, replace(options, mode=EditKind.LAYOUT.value),
                               on_progress, cancel, init_image=init_image,
                               label_maps=(source_labels, target_labels))

    # -- the plan, built once ---------------------------------------------------------------

    def _setup(self, image: np.ndarray, source_mask: np.ndarray, guide_mask: np.ndarray,
               options: SynthesisOptions, preset: Preset, init_image: np.ndarray | None,
               schedule: Schedule | None,
               label_maps: tuple[np.ndarray, np.ndarray] | None) -> EditSetup:
        """Where the edit is synthesized and pasted back, what it starts from, its budget."""
        notes: list[str] = []
        pyramid = preset.pyramid and options.composite
        if init_image is None and label_maps is None and pyramid:
            init_image = transfer_start(image, source_mask, guide_mask, options.mode)
            if init_image is not None:
                notes.append("started from the object's own pixels moved where the guide "
                             "puts it (masks only)")
        # decided before a layout's own cut-and-paste start: its old places, which nothing
        # pastes over, need the whole budget
        schedule = schedule or preset.schedule(options.iterations,
                                               from_composite=init_image is not None)
        if label_maps is not None:
            plan, init_image = self._plan_layout(image, label_maps, init_image, pyramid)
        elif options.composite:
            plan = plan_edit(source_mask, guide_mask, image, init_image, options.mode)
        else:  # the paper's whole new image
            plan = None
        h, w = image.shape[:2]
        box = plan.box if plan is not None else Box(0, 0, h, w)
        edit = plan.edit if plan is not None else np.ones((h, w), bool)
        crops = [box.crop(a) for a in (image, source_mask, guide_mask, edit)]
        init = box.crop(init_image) if init_image is not None else None
        layout = tuple(box.crop(m) for m in label_maps) if label_maps is not None else None
        donated = []
        if label_maps is not None and pyramid:
            donated = [(w.crop(image), w.crop(label_maps[0]))
                       for w in donors.donor_windows(*label_maps, edit, box)]
        return EditSetup(preset, schedule, box, plan, crops, init, layout, pyramid, donated,
                         notes)

    @staticmethod
    def _plan_layout(image: np.ndarray, label_maps: tuple[np.ndarray, np.ndarray],
                     init_image: np.ndarray | None, pyramid: bool
                     ) -> tuple[EditPlan, np.ndarray | None]:
        """A layout edit's region: where the label maps differ (and its cut-and-paste start
        changed the photo), grown; its start, the regions pasted where the target map puts
        them, unless the artist gave one."""
        differ = label_maps[0] != label_maps[1]
        if init_image is None and pyramid:
            init_image = layout_composite(image, *label_maps)
        changed = changed_pixels(image, init_image)
        edit = grow_edit(differ if changed is None else differ | changed)
        return EditPlan(region_of_interest(edit), edit), init_image

    def _weights(self, weights: LossWeights | None, setup: EditSetup,
                 options: SynthesisOptions) -> LossWeights:
        """The terms' weights: the caller's, else the product presets' or the paper's."""
        if weights is None and setup.pyramid:
            weights = LossWeights.product(self.trained)
            if not self.trained:
                setup.notes.append("untrained classifier: its class and feature terms are off "
                                   "(measured: with random weights they only add noise)")
        weights = weights or LossWeights.for_mode(options.mode)
        if not options.composite:
            weights = replace(weights, keep=0.0)  # the paper's whole new image
        return weights

    # -- running it -----------------------------------------------------------------------

    def _run(self, setup: EditSetup, run: EditRun, started: float
             ) -> tuple[list[np.ndarray], Reference, dict[str, float]]:
        """The levels, coarse to fine, then the finish: (the region's images, the photo as
        judged at the working resolution, the last report of the terms)."""
        options, box = run.options, setup.box
        judge_size = working_size(box.height, box.width, options.resolution)
        judge = self.levels.reference(*setup.crops, judge_size, layout=setup.layout)
        pasted = held_and_repair(setup.crops, setup.init, setup.layout) if setup.pyramid else None
        levels = (self._product_levels(setup, judge, options, pasted) if setup.pyramid
                  else self._paper_levels(judge, setup.schedule))
        run.total = sum(level.schedule.iterations for level in levels)
        z = self.levels.start(levels[0], setup.init, run, setup.pyramid)
        mask_steps = setup.schedule.mask_net_steps if run.weights.mask else 0
        self._show_start(z, levels[0], run, started, mask_steps)
        mask_net = self._fit_mask_net(judge, setup.schedule, run) if run.weights.mask else None
        run.judge = self._judge_runner(run.total)
        if run.weights.smoothing:
            run.judge = term_balance.Smoothed(run.judge, run.weights.smoothing,
                                              torch.Generator().manual_seed(options.seed))
        run.t0 = time.monotonic()
        optimiser = EditOptimiser(run, self.device, self.norm, self._autocast,
                                  self.capture_mode, self._heard_scales)
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
            z, report, field = optimiser.run_level(z, level, mask_net, field)
        self._last_capture = self._capture_record(run)
        if setup.pyramid:
            long_side = max((setup.plan.edit if setup.plan is not None
                             else setup.crops[0]).shape[:2])
            patches = self._finish(z, levels[-1], field if not setup.donated else None,
                                   setup.crops, setup.init, pasted, options.mode, long_side)
        else:
            patches = tensor_to_images(self.norm.pixels(compose(z, levels[-1])),
                                       size=(box.height, box.width))
        return patches, judge, report

    def _paper_levels(self, judge: Reference, schedule: Schedule) -> list[Level]:
        """The paper's objective: one level at the working resolution."""
        return self.levels.paper_levels(judge, schedule)

    def _product_levels(self, setup: EditSetup, judge: Reference, options: SynthesisOptions,
                        pasted: tuple[np.ndarray, np.ndarray] | None) -> list[Level]:
        """The product presets: a pyramid over the edit's region with the patch term."""
        return self.levels.product_levels(setup.crops, judge, setup.preset, setup.schedule,
                                          options, setup.init, setup.layout, setup.donated,
                                          pasted)

    def _heard_scales(self, scales: term_balance.TermScales) -> None:
        self.last_scales = scales

    def _show_start(self, z: torch.Tensor, level: Level, run: EditRun, started: float,
                    mask_net_steps: int) -> None:
        """The first preview: x' as it starts (the composite or the fill, with its noise),
        shown before the mask network's training and the first iterations (their compile
        when captured), so that the artist sees the edit take shape at once. Reported as
        iteration 0 of the stage that comes next."""
        if run.on_progress is None or not run.options.preview_every:
            return
        copies = PreviewCopies(self.device)
        h, w = z.shape[-2:]
        copies.start(self.norm.pixels(compose(z, level)),
                     preview_size(h, w, run.options.preview_size))
        stage, total = ("mask-net", mask_net_steps) if mask_net_steps else (level.stage,
                                                                            run.total)
        run.on_progress(Progress(0, total, time.monotonic() - started, {},
                                 copies.collect(wait=True), stage=stage))

    def _fit_mask_net(self, ref: Reference, schedule: Schedule, run: EditRun) -> MaskNet:
        t0 = time.monotonic()

        def on_step(step: int, total: int, loss: float | None) -> None:
            if run.on_progress is not None:
                run.on_progress(Progress(step, total, time.monotonic() - t0,
                                         {"mask_net_ce": loss} if loss is not None else {},
                                         stage="mask-net"))

        return train_mask_net(ref.z, ref.source_labels, schedule.mask_net_steps, run.gen,
                              run.cancel, on_step)

    def _finish(self, z: torch.Tensor, level: Level, field: torch.Tensor | None, crops,
                init: np.ndarray | None, pasted: tuple[np.ndarray, np.ndarray] | None,
                mode: str, long_side: int) -> list[np.ndarray]:
        """The region at the photo's own size (engine/finish.py): the last level upsampled,
        the photo's own detail voted where its matches point (`field`; None: the bank was
        not the photo alone), fused in the gradient domain into what stays: the photo, and
        the artist's pasted object where it is held. `long_side`: the photo's longer side."""
        photo, free = crops[0], crops[3]
        around, exact, outline = photo, None, None
        if pasted is not None:
            held, repair = pasted
            free = free & repair & ~held
            around = np.where(held[..., None], init, photo)
            if mode != EditKind.LAYOUT:
                # the object as pasted, at its own size, where the guide puts it: its rim is
                # fused into the new surroundings in the gradient domain (Poisson cloning),
                # not redrawn from an upsampled level (whose outline showed as a staircase)
                exact = crops[2] & changed_pixels(photo, init)
                around = np.where(exact[..., None], init, around)
        if mode != EditKind.REMOVE and crops[2].any():  # the new object and its outline
            outline = dilate(crops[2], 2)
        kept = None
        if mode not in (EditKind.REMOVE, EditKind.LAYOUT) and crops[2].any():
            # round the new place, where nothing moved from, the fill is the photo's own
            # beyond the object's rim (the surroundings are still judged round the whole
            # region: taking these pixels out of it changed the fill of the old place)
            reach = growth_radius(object_extent(crops[1], crops[2]), long_side)
            scale = max(free.shape) / max(z.shape[-2:])
            rim = round(STAYS_RIM * max(1.0, scale))
            kept = background_that_stays(crops[3], crops[1], crops[2], reach, rim) & free
        synth = self.norm.pixels(compose(z, level))
        tight, carried = 0.0, None
        if exact is not None:
            tight = finish.selection_tightness(photo, crops[1])
            carried = carried_background(photo, crops[1])
        return finish.finish_region(synth, photo, around, free, field=field, patch=PATCH,
                                    exact=exact, outline=outline, tight=tight, carried=carried,
                                    kept_background=kept,
                                    edges_are_lines=mode != EditKind.LAYOUT)

    # -- the judged part ---------------------------------------------------------------------

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

    def _capture_record(self, run: EditRun) -> dict:
        levels = run.captures
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
