"""`magic-edit --server ADDR`: run one edit through a magic-server instead of in-process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from magic_protocol.client import (
    Event,
    JobCancelled,
    JobRequest,
    MagicClient,
    MagicError,
    RawImage,
)
from magic_server.engine.api import Progress, SynthesisOptions

# Optional CurveZMQ keys for a remote server: a folder made by `magic-server --keygen`.
KEYS_ENV = "MAGIC_SERVER_KEYS"


def run_remote(address: str, image: np.ndarray, source_mask: np.ndarray | None,
               guide_mask: np.ndarray | None, options: SynthesisOptions,
               on_progress: Callable[[Progress], None] | None = None, *,
               init_image: np.ndarray | None = None,
               label_maps: tuple[np.ndarray, np.ndarray] | None = None,
               keys_dir: str | os.PathLike[str] | None = None,
               timeout_s: float = 10.0, connect_timeout_s: float = 5.0) -> list[np.ndarray]:
    """Send the edit to the server at `address`; return the uint8 HxWx3 results.

    init_image: the artist's rough composite, uint8 HxWx4 (alpha 0 = take the photo's pixel)
    or HxWx3 (opaque), sent as the "init" frame; options.composite and options.refine go along.

    label_maps: a layout edit's (source, target) maps as painted (uint8 HxWx3 colours or HxW
    grey indices), sent as they are (the server reads them); the masks are then None.

    image: uint8 HxWx3 (or HxWx4); masks: bool (or uint8, nonzero = inside) HxW. Progress events
    become engine Progress objects (with previews when options.preview_every > 0). CurveZMQ keys:
    keys_dir, or the folder named by $MAGIC_SERVER_KEYS (made by `magic-server --keygen`). Raises
    magic_protocol.client errors (MagicError subclasses, one-line messages); Ctrl-C cancels the
    job on the server and raises JobCancelled.
    """
    h, w = image.shape[:2]
    keys = keys_dir or os.environ.get(KEYS_ENV)
    curve = {}
    if keys:
        from magic_protocol.client import load_curve_keys
        curve = load_curve_keys(Path(keys))
    masks = {}
    if label_maps is not None:
        masks = {"source_labels": _label_map(label_maps[0]),
                 "target_labels": _label_map(label_maps[1])}
    else:
        masks = {"source_mask": RawImage(w, h, 1, _mask(source_mask).tobytes()),
                 "guide_mask": RawImage(w, h, 1, _mask(guide_mask).tobytes())}
    request = JobRequest(
        image=RawImage(w, h, 4, _rgba(image).tobytes()), **masks,
        mode=options.mode, samples=options.samples, preset=options.preset,
        iterations=options.iterations, seed=options.seed, resolution=options.resolution,
        preview=options.preview_every > 0, composite=options.composite,
        refine=options.refine)
    if init_image is not None:
        if init_image.shape[:2] != (h, w):
            raise ValueError("the starting composite must have the image's size")
        request.init_image = RawImage(w, h, 4, _rgba(init_image).tobytes())

    job_ids: list[str] = []

    def on_event(event: Event) -> None:
        if event.kind == "accepted" and event.job_id:
            job_ids.append(event.job_id)
        if on_progress is None or event.kind != "progress":
            return
        previews = [np.frombuffer(p.data, np.uint8).reshape(p.height, p.width, p.channels)
                    for p in event.previews] or None
        on_progress(Progress(iteration=event.iteration or 0, total=event.total or 0,
                             elapsed_s=event.elapsed_s or 0.0,
                             losses=dict(event.header.get("losses") or {}),
                             previews=previews, stage=event.stage or "synthesis"))

    # Fail fast when nothing answers; once the server is known to be there, be patient.
    client = MagicClient(address, timeout_s=connect_timeout_s, retries=0, **curve)
    try:
        client.handshake()
        client.timeout_s, client.retries = timeout_s, 2
        result = client.submit(request, on_event)
    except KeyboardInterrupt:
        if job_ids:
            with contextlib.suppress(MagicError):
                client.cancel(job_ids[-1])
        raise JobCancelled(job_ids[-1] if job_ids else None, "cancelled (Ctrl-C)") from None
    finally:
        client.close()
    return [np.frombuffer(img.data, np.uint8).reshape(img.height, img.width, img.channels)[
        :, :, :3].copy() for img in result.images]


def _rgba(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError("image must be HxWx3 or HxWx4 uint8")
    if image.shape[2] == 4:
        return np.ascontiguousarray(image)
    alpha = np.full(image.shape[:2] + (1,), 255, np.uint8)
    return np.concatenate([image, alpha], axis=2)


def _mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return np.where(mask.astype(bool), 255, 0).astype(np.uint8)


def _label_map(labels: np.ndarray) -> RawImage:
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    channels = 1 if labels.ndim == 2 else labels.shape[2]
    return RawImage(labels.shape[1], labels.shape[0], channels, labels.tobytes())
