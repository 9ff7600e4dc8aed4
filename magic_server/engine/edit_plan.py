"""What an edit works on, decided once per edit: where it is synthesized and pasted back
(EditPlan), the photo at each resolution (Reference), the optimisation loop's runs (Level) and
the edit's own state while it runs (EditRun)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch

from magic_server.engine.api import (
    Cancelled,
    EditKind,
    EngineInputError,
    ProgressCallback,
    SynthesisOptions,
)
from magic_server.engine.components import parts_touching
from magic_server.engine.loss_weights import LossWeights
from magic_server.engine.mask_net import binary_fractions
from magic_server.engine.patch_nn import PatchBank
from magic_server.engine.presets import Preset, Schedule
from magic_server.engine.regions import (
    Box,
    bounding_box,
    dilate,
    dilate_round,
    feathered_alpha,
    region_of_interest,
    round_radius_within,
)

REMOVAL_REACH = 0.02  # a removal changes nothing farther than this x the hole's size
HELD_BAND = 0.03  # a pasted object's rim (of the region's size) that is re-synthesized


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


def compose(z: torch.Tensor, level: Level) -> torch.Tensor:
    """x' from the free pixels: the photo wherever the level does not synthesize."""
    if level.free is None:
        return z
    return level.base * (1 - level.free) + z * level.free


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
    # the judged part (classifier, mask network) as this edit runs it: eager, compiled or
    # smoothed (Engine._judge_runner)
    judge: Callable | None = None

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()


def edit_region(source: np.ndarray, guide: np.ndarray,
                changed: np.ndarray | None = None, mode: str = EditKind.MOVE) -> np.ndarray:
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
    if mode == EditKind.REMOVE:
        hole = bounding_box(differ)
        return dilate_round(differ, round_radius_within(REMOVAL_REACH * max(hole.height,
                                                                           hole.width)))
    return grow_edit(differ, object_extent(source, guide))


def object_extent(source: np.ndarray, guide: np.ndarray) -> int | None:
    """The longer side of the larger of the two masks' bounding boxes (None: both empty)."""
    sides = [max(b.height, b.width) for b in map(bounding_box, (source, guide)) if b is not None]
    return max(sides) if sides else None


def growth_radius(extent: int, long_side: int) -> int:
    """How far an edit reaches past what it changes, for the object's rim and shadow: 5% of
    the object's `extent`, at most 2% of the image's `long_side`, at least 3 px."""
    return max(3, min(round(0.05 * extent), round(0.02 * long_side)))


def grow_edit(differ: np.ndarray, extent: int | None = None) -> np.ndarray:
    """The pixels that change, dilated by growth_radius (of `extent`, default: their own
    extent) (round: no corner of a square reaches further)."""
    box = bounding_box(differ)
    extent = extent or max(box.height, box.width)
    return dilate_round(differ, growth_radius(extent, max(differ.shape)))


def background_that_stays(edit: np.ndarray, source: np.ndarray, guide: np.ndarray,
                          reach: int, rim: int = 0) -> np.ndarray:
    """The pixels of the edit region round the object's new place that nothing moved from:
    farther than `rim` from the guide and than `reach` (growth_radius) from the source, and
    reached from outside the edit without crossing those (a pocket enclosed by the guide's
    rims is not the background round the object: a dandelion seed's lasso held one, whose old
    dark-red bokeh showed as a blotch in the new orange). Their fill is the photo's own, the
    new background (hair a copy is put on runs on up to it), not a band synthesized from what
    lay round the object at its old place (the shuttle's grey sky)."""
    near_guide = dilate_round(guide, rim) if rim else guide
    return parts_touching(edit & ~near_guide & ~dilate_round(source, reach), dilate(~edit, 1))


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
              init: np.ndarray | None = None, mode: str = EditKind.MOVE) -> EditPlan:
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
    if mode == EditKind.REMOVE:
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


@dataclass
class EditSetup:
    """An edit as planned before it runs, built once (Engine._setup): its budget, where it is
    synthesized, and what it starts from."""

    preset: Preset
    schedule: Schedule
    box: Box  # the region synthesized (the whole image for the paper's whole new image)
    plan: EditPlan | None  # how the region is pasted back (None: the whole image is new)
    crops: list[np.ndarray]  # the photo, source mask, guide mask and edit region, in the box
    init: np.ndarray | None  # the start composite, in the box (None: from noise or a fill)
    layout: tuple[np.ndarray, np.ndarray] | None  # a layout edit's label maps, in the box
    pyramid: bool  # the product presets' coarse-to-fine levels (else the paper's one level)
    donated: list[tuple[np.ndarray, np.ndarray]]  # a layout's donor (photo, labels) windows
    notes: list[str]  # what the artist should know about the run
