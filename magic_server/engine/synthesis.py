"""Engine: owns the frozen classifier on a device and runs MAGIC edits."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from magic_server.engine import losses
from magic_server.engine.api import (
    Cancelled,
    EngineInputError,
    Progress,
    ProgressCallback,
    SynthesisOptions,
    SynthesisResult,
    check_inputs,
)
from magic_server.engine.discriminator import CriticTrainer
from magic_server.engine.mask_net import MaskNet, train_mask_net
from magic_server.engine.presets import PRESETS, Schedule, learning_rate, resolve_schedule
from magic_server.engine.regions import (
    Box,
    composite,
    dilate,
    feathered_alpha,
    region_of_interest,
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
    Studio does) so that the pasted-back region has no visible seam.
    `critic` is 0.1 instead of 0.05 for pure position control (move)."""

    classifier: float = 1.0
    feature_stats: float = 500.0
    mask: float = 30.0
    critic: float = 0.05
    tv_l1: float = 1e-3
    tv_l2: float = 1e-3
    l2: float = 1e-5
    keep: float = 3.0

    @classmethod
    def for_mode(cls, mode: str) -> LossWeights:
        return cls(critic=0.1) if mode == "move" else cls()


LEARNING_RATE = 0.2
REFINE_LEARNING_RATE = 0.05
CRITIC_WARM_START_STEPS = 10
LOSS_REPORT_EVERY = 10
INIT_NOISE = 0.5  # std (normalised units) of the noise added to an artist's composite
REFINE_MIN_GAIN = 1.25  # refine only when the region has this much more detail than level 0


@dataclass
class Reference:
    """Everything computed once from the photo x at one resolution."""

    z: torch.Tensor  # normalised x, (1, 3, h, w)
    source: torch.Tensor  # y, (1, 1, h, w)
    guide: torch.Tensor  # y', (1, 1, h, w)
    keep: torch.Tensor  # 1 outside the edit region, (1, 1, h, w)
    target_class: int
    feature_targets: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Job:
    """Per-edit state shared by the stages."""

    options: SynthesisOptions
    weights: LossWeights
    gen: torch.Generator
    cancel: threading.Event | None
    on_progress: ProgressCallback | None
    total: int
    done: int = 0
    t0: float = 0.0

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()


def edit_region(source: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """Pixels the edit may change: source and guide, dilated a little for the object's rim."""
    union = source | guide
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    return dilate(union, max(2, round(0.03 * side)))


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


def plan_edit(source: np.ndarray, guide: np.ndarray) -> EditPlan:
    edit = edit_region(source, guide)
    return EditPlan(region_of_interest(edit), edit)


class Engine:
    def __init__(self, classifier: torch.nn.Module, device: torch.device | str = "cpu",
                 weights_label: str = "untrained") -> None:
        self.device = torch.device(device)
        self.classifier = classifier.to(self.device).eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.weights_label = weights_label
        self.norm = Normaliser(self.device)
        self.use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()

    def describe(self) -> dict:
        info: dict = {
            "device": str(self.device),
            "device_name": "CPU",
            "gpu_memory_mb": None,
            "weights": self.weights_label,
            "weights_loaded": not self.weights_label.startswith("untrained"),
            "bf16": self.use_bf16,
            "presets": {name: p.iterations for name, p in PRESETS.items()},
        }
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            info["device_name"] = props.name
            info["gpu_memory_mb"] = props.total_memory // 2**20
        elif self.device.type == "mps":
            info["device_name"] = "Apple GPU (MPS)"
        return info

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
                   schedule: Schedule | None = None) -> SynthesisResult:
        """Run one edit.

        init_image: the artist's rough composite (HxWx3 uint8, same size): x' starts from it
        plus noise instead of pure noise. `weights` and `schedule` override the paper's loss
        weights and the preset's schedule (benchmarks and experiments only).
        """
        options.validate()
        check_inputs(image, source_mask, guide_mask, allow_empty_guide=options.mode == "remove")
        if init_image is not None and init_image.shape != image.shape:
            raise EngineInputError("the starting composite must have the image's size")
        schedule = schedule or resolve_schedule(options.preset, options.iterations,
                                                from_composite=init_image is not None)
        started = time.monotonic()
        plan = plan_edit(source_mask, guide_mask)
        edit = plan.edit
        h, w = image.shape[:2]
        box = plan.box if options.composite else Box(0, 0, h, w)
        size0 = working_size(box.height, box.width, options.resolution)
        size1 = working_size(box.height, box.width, 2 * options.resolution)
        refine = (options.refine and schedule.refine_iterations > 0
                  and box.height * box.width >= (REFINE_MIN_GAIN ** 2) * size0[0] * size0[1])
        crops = [box.crop(a) for a in (image, source_mask, guide_mask, edit)]
        init = box.crop(init_image) if init_image is not None else None

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(options.seed)
            weights = weights or LossWeights.for_mode(options.mode)
            if not options.composite:
                weights = replace(weights, keep=0.0)  # the paper's whole new image
            job = Job(options, weights,
                      torch.Generator().manual_seed(options.seed), cancel, on_progress,
                      total=schedule.iterations + (schedule.refine_iterations if refine else 0))
            ref = self._reference(*crops, size0)
            mask_net = self._fit_mask_net(ref, schedule, job)
            job.t0 = time.monotonic()
            z = self._initial(ref, init, job)
            z, report = self._optimise(z, ref, mask_net, schedule, job, "synthesis")
            if refine:
                ref1 = self._reference(*crops, size1)
                z = F.interpolate(z, size=size1, mode="bicubic", align_corners=False)
                fine = Schedule(schedule.refine_iterations, warmup=1, discriminator_start=0,
                                mask_net_steps=0)
                z, report = self._optimise(z, ref1, mask_net, fine, job, "refine")

        patches = tensor_to_images(self.norm.pixels(z), size=(box.height, box.width))
        if options.composite:
            images = [composite(image, p, box, plan.alpha) for p in patches]
        else:
            images = patches
        return SynthesisResult(
            images=images,
            seeds=[options.seed + i for i in range(options.samples)],
            predicted_class=ref.target_class,
            iterations=job.total,
            elapsed_s=time.monotonic() - started,
            losses=report,
            region=(box.top, box.left, box.bottom, box.right),
        )

    def _reference(self, image, source_mask, guide_mask, edit, size) -> Reference:
        pixels = image_to_tensor(image, size, self.device)
        with torch.no_grad(), self._autocast():
            logits, feats = self.classifier.forward_with_features(pixels)
        return Reference(
            z=self.norm.normalise(pixels),
            source=mask_to_tensor(source_mask, size, self.device),
            guide=mask_to_tensor(guide_mask, size, self.device),
            keep=1 - mask_to_tensor(edit, size, self.device).ceil(),
            target_class=int(logits.float().argmax(dim=1).item()),
            feature_targets=[losses.channel_stats(f) for f in feats],
        )

    def _initial(self, ref: Reference, init: np.ndarray | None, job: Job) -> torch.Tensor:
        # Sample k starts from noise seeded with seed + k (the seed in its layer name); the
        # networks it is optimised against are shared by the batch and seeded with `seed`.
        base = job.options.seed
        noise = torch.stack([
            torch.randn(ref.z.shape[1:], generator=torch.Generator().manual_seed(base + k))
            for k in range(job.options.samples)
        ]).to(self.device)
        if init is None:
            return noise
        start = self.norm.normalise(image_to_tensor(init, ref.z.shape[-2:], self.device))
        z = start + INIT_NOISE * noise
        self.norm.clamp_(z)
        return z

    def _fit_mask_net(self, ref: Reference, schedule: Schedule, job: Job) -> MaskNet:
        t0 = time.monotonic()

        def on_step(step: int, total: int, loss: float | None) -> None:
            if job.on_progress is not None:
                job.on_progress(Progress(step, total, time.monotonic() - t0,
                                         {"mask_net_bce": loss} if loss is not None else {},
                                         stage="mask-net"))

        return train_mask_net(ref.z, ref.source, schedule.mask_net_steps, job.gen, job.cancel,
                              on_step)

    def _optimise(self, z: torch.Tensor, ref: Reference, mask_net: MaskNet, schedule: Schedule,
                  job: Job, stage: str) -> tuple[torch.Tensor, dict[str, float]]:
        z = z.detach().clone().requires_grad_(True)
        peak = LEARNING_RATE if stage == "synthesis" else REFINE_LEARNING_RATE
        opt = torch.optim.Adam([z], lr=peak, betas=(0.5, 0.9), eps=1e-8)
        critic = CriticTrainer(ref.z, job.gen)
        # The mask network judges appearance at the scale it was trained on (level 0).
        mask_scale = 1 if stage == "synthesis" else 2
        report: dict[str, float] = {}
        options = job.options
        h, w = z.shape[-2:]
        for it in range(schedule.iterations):
            job.check_cancel()
            for group in opt.param_groups:
                group["lr"] = learning_rate(it, schedule, peak)
            critic_on = it >= schedule.discriminator_start
            if critic_on:
                steps = CRITIC_WARM_START_STEPS if it == schedule.discriminator_start else 1
                for _ in range(steps):
                    wasserstein = critic.step(z)
            terms = self._objective(z, ref, mask_net, critic if critic_on else None, mask_scale)
            loss = sum(getattr(job.weights, k) * v for k, v in terms.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                self.norm.clamp_(z)
            job.done += 1
            last = job.done == job.total
            fresh: dict[str, float] = {}
            if job.done % LOSS_REPORT_EVERY == 0 or it + 1 == schedule.iterations:
                fresh = {k: float(v.detach()) for k, v in terms.items()}
                fresh["total"] = float(loss.detach())
                if critic_on:
                    fresh["wasserstein"] = float(wasserstein)
                report = fresh
            if job.on_progress is not None:
                previews = None
                if options.preview_every and (job.done % options.preview_every == 0 or last):
                    previews = tensor_to_images(self.norm.pixels(z),
                                                size=preview_size(h, w, options.preview_size))
                job.on_progress(Progress(job.done, job.total, time.monotonic() - job.t0,
                                         fresh, previews, stage=stage))
        return z.detach(), report

    def _objective(self, z: torch.Tensor, ref: Reference, mask_net: MaskNet,
                   critic: CriticTrainer | None, mask_scale: int) -> dict[str, torch.Tensor]:
        with self._autocast():
            logits, feats = self.classifier.forward_with_features(self.norm.pixels(z))
            judged = F.avg_pool2d(z, mask_scale) if mask_scale > 1 else z
            guide = F.avg_pool2d(ref.guide, mask_scale) if mask_scale > 1 else ref.guide
            terms = {
                "classifier": losses.class_loss(logits, ref.target_class),
                "feature_stats": losses.feature_stats_loss(feats, ref.feature_targets),
                "mask": losses.mask_loss(mask_net(judged), guide),
                "tv_l1": losses.total_variation_l1(z),
                "tv_l2": losses.total_variation_l2(z),
                "l2": losses.l2_prior(z),
                "keep": losses.keep_loss(z, ref.z, ref.keep),
            }
            if critic is not None:
                terms["critic"] = critic.generator_loss(z)
        return terms
