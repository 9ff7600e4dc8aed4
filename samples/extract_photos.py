"""Extract the sample photos from scikit-image's bundled data (run once, by a maintainer).

scikit-image is NOT a project dependency. To re-create the photos:

    python3 -m venv /tmp/skv && /tmp/skv/bin/pip install scikit-image
    /tmp/skv/bin/python samples/extract_photos.py

Only photos bundled inside the scikit-image wheel are used (nothing is downloaded).
Each photo is downscaled to at most 512 px on the long side and saved as RGB PNG.
The licence of each photo, as stated in scikit-image's docstrings, is in samples/LICENSES.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MAX_SIDE = 512
# scene name -> skimage.data function name
PHOTOS = {
    "coffee": "coffee",
    "chelsea": "chelsea",
    "astronaut": "astronaut",
    "rocket": "rocket",
    "coins": "coins",
    "hubble": "hubble_deep_field",
}


def main() -> None:
    import skimage
    import skimage.data

    out_dir = Path(__file__).resolve().parent
    for scene, func in PHOTOS.items():
        arr = getattr(skimage.data, func)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        img = Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8), "RGB")
        scale = MAX_SIDE / max(img.size)
        if scale < 1:
            size = (round(img.width * scale), round(img.height * scale))
            img = img.resize(size, Image.Resampling.LANCZOS)
        img.save(out_dir / f"{scene}.png", optimize=True)
        print(f"{scene}.png  {img.width}x{img.height}  from skimage.data.{func}"
              f" (scikit-image {skimage.__version__})")


if __name__ == "__main__":
    main()
