"""The levels an edit runs, and where x' starts: the photo at each resolution (Reference), the
paper's single level or the product presets' pyramid over the edit's region (with its patch
bank, the labels x' should carry and, for a layout edit, donor windows), and x''s first pixels
(the artist's composite, or each label's nearest photo pixels, with the sample's noise)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from magic_server.engine import donors, losses
from magic_server.engine.api import SynthesisOptions
from magic_server.engine.edit_plan import EditRun, Level, Reference, edit_labels
from magic_server.engine.mask_net import binary_fractions
from magic_server.engine.patch_nn import PATCH, PatchBank
from magic_server.engine.presets import Preset, Schedule
from magic_server.engine.pyramid import level_sizes, split_iterations
from magic_server.engine.regions import nearest_side_fill
from magic_server.engine.tensors import Normaliser, image_to_tensor, mask_to_tensor

LEARNING_RATE = 0.2
PRODUCT_LEARNING_RATE = 0.15
INIT_NOISE = 0.5  # std (normalised units) of the noise added to an artist's composite (paper)
COMPOSITE_NOISE = 0.15  # product: the composite only needs repairing, not re-noising
FILL_NOISE = 0.3  # product without a composite: noise on the smooth fill, for diversity


class LevelBuilder:
    """Builds an edit's levels and x''s start on the engine's device; `classifier` and
    `autocast` judge the photo at the working resolution (its class and feature targets)."""

    def __init__(self, device: torch.device, norm: Normaliser, classifier: torch.nn.Module,
                 autocast: Callable[[], contextlib.AbstractContextManager]) -> None:
        self.device, self.norm, self.classifier = device, norm, classifier
        self._autocast = autocast

    def reference(self, image, source_mask, guide_mask, edit, size, judged: bool = True,
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

    def paper_levels(self, judge: Reference, schedule: Schedule) -> list[Level]:
        return [Level(judge, judge, schedule, LEARNING_RATE, "synthesis")]

    def product_levels(self, crops, judge: Reference, preset: Preset, schedule: Schedule,
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
            ref = self.reference(*crops, size, judged=False, layout=layout)
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

    def _noise(self, shape: torch.Size, run: EditRun) -> torch.Tensor:
        # Sample k starts from noise seeded with seed + k (the seed in its layer name); the
        # networks it is optimised against are shared by the batch and seeded with `seed`.
        base = run.options.seed
        return torch.stack([
            torch.randn(shape, generator=torch.Generator().manual_seed(base + k))
            for k in range(run.options.samples)
        ]).to(self.device)

    def start(self, level: Level, init: np.ndarray | None, run: EditRun, pyramid: bool
                 ) -> torch.Tensor:
        ref = level.ref
        noise = self._noise(ref.z.shape[1:], run)
        if init is None and pyramid:
            return self.label_fill(level) + FILL_NOISE * noise
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
            start = start * (1 - stale) + self.label_fill(level) * stale
        z = start + (COMPOSITE_NOISE if pyramid else INIT_NOISE) * noise
        self.norm.clamp_(z)
        return z

    def label_fill(self, level: Level) -> torch.Tensor:
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
