"""A 12 MP photo end to end on CPU with the draft preset: full-size output, untouched pixels
outside the edit region, no visible seam; time and memory are printed."""

from __future__ import annotations

import resource
import time

import numpy as np
import torch
import torch.nn.functional as F
from scenes import disk

from magic_server.engine.api import SynthesisOptions
from magic_server.engine.edit_plan import plan_edit
from magic_server.engine.regions import dilate
from magic_server.engines import build_engine

H, W = 3000, 4000


def photo() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A smooth colour field with fine grain, a textured red object, its move, a rough paste."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 6, 8, generator=gen) * 0.5 + 0.25
    field = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0]
    grain = torch.randn(3, H, W, generator=gen) * 0.03
    img = ((field + grain).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy().copy()
    source = disk(H, W, 1500, 1200, 420)
    guide = disk(H, W, 1450, 2500, 420)
    rng = np.random.default_rng(0)
    img[source] = np.stack([rng.integers(190, 230, source.sum()), rng.integers(30, 60, source.sum()),
                            rng.integers(30, 60, source.sum())], axis=-1)
    rough = img.copy()
    rough[guide] = img[source][: guide.sum()] if guide.sum() <= source.sum() else (210, 45, 45)
    return img, source, guide, rough


def gradient_magnitude(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    gy = np.abs(np.diff(f, axis=0))[:, :-1].sum(-1)
    gx = np.abs(np.diff(f, axis=1))[:-1, :].sum(-1)
    return gx + gy


def test_a_12_megapixel_edit_keeps_the_photo_outside_the_edit_and_shows_no_seam():
    img, source, guide, rough = photo()
    engine = build_engine("untrained", "cpu")
    t0 = time.monotonic()
    result = engine.synthesize(img, source, guide,
                               SynthesisOptions(samples=1, preset="draft", mode="move", seed=0),
                               init_image=rough)
    elapsed = time.monotonic() - t0
    out = result.images[0]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n12 MP draft edit from a composite: {elapsed:.1f} s, {result.iterations} iterations, "
          f"peak RSS {peak_mb:.0f} MB, region {result.region}")

    assert out.shape == img.shape and out.dtype == np.uint8
    plan = plan_edit(source, guide)
    edit, touched = plan.edit, plan.touched()
    assert touched.mean() < 0.35  # the footprint is the edit and its rim, not the photo
    assert np.abs(out[~touched].astype(int) - img[~touched]).max() == 0
    assert np.abs(out[guide].astype(int) - img[guide]).mean() > 20  # the edit did happen

    # Seam: across the feather band the result must not be rougher than the photo there.
    band = (touched & ~dilate(edit, 1))[:-1, :-1]
    g_out, g_img = gradient_magnitude(out)[band], gradient_magnitude(img)[band]
    print(f"feather band gradient: result {g_out.mean():.1f} vs photo {g_img.mean():.1f}; "
          f"99th percentile {np.percentile(g_out, 99):.1f} vs {np.percentile(g_img, 99):.1f}")
    assert g_out.mean() <= 1.5 * g_img.mean() + 2
    assert np.percentile(g_out, 99) <= 1.5 * np.percentile(g_img, 99) + 5
    assert peak_mb < 6 * 1024
