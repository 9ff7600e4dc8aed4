"""One benchmark scene: a photo, its object's mask, the guides of its edits (bundled scenes:
benchmarks/run.py; full-size ones: benchmarks/fullsize.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Scene:
    name: str
    image: np.ndarray
    source_mask: np.ndarray
    guides: dict[str, np.ndarray]
    licence: str
    edits: dict[str, str]
    # the known transform of each edit (q = s * p + t: sy, sx, ty, tx), where recorded
    transforms: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    origin: str = ""  # where the photo comes from, for the report
