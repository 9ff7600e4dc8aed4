"""Reading photos and masks from image files, writing PNGs. Errors are one user-facing line."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 16  # pixels; smaller images cannot be synthesised meaningfully
MAX_PIXELS = 100_000_000  # 100 megapixels
MASK_THRESHOLD = 0.5  # fraction of full scale above which a mask pixel marks the object


class ImageError(ValueError):
    """An image or mask file that cannot be used. The message is meant for the user."""


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{what} {path} not found")
    if not path.is_file():
        raise ImageError(f"{what} {path} is not a file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(f"{what} {path} is too large (over {MAX_PIXELS // 1_000_000} megapixels)"
                         ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{what} {path} is not an image file Pillow can read") from None
    except OSError as e:
        raise ImageError(f"cannot read {what} {path}: {e.strerror or e}") from None
    check_size(im.size, f"{what} {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            im = ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"cannot read {what} {path}: it is damaged or truncated ({e})") from None
    return im


def check_size(size: tuple[int, int], what: str) -> None:
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{what} is {w}x{h}: both sides must be at least {MIN_SIDE} pixels")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{what} is {w}x{h} ({w * h / 1e6:.0f} megapixels): the limit is "
                         f"{MAX_PIXELS // 1_000_000} megapixels; scale it down first")


def _high_depth_to_8bit(im: Image.Image) -> np.ndarray:
    """16-bit ('I;16*', 'I') and float ('F') single-channel images, scaled to 0..255."""
    a = np.asarray(im)
    if im.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
        return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    a = a.astype(np.int64)
    if im.mode == "I" and a.max(initial=0) <= 255:  # 8-bit data stored in a 32-bit mode
        return np.clip(a, 0, 255).astype(np.uint8)
    return np.clip((a + 128) // 257, 0, 255).astype(np.uint8)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )


def _to_rgba_or_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(_high_depth_to_8bit(im), "L").convert("RGB")
    if _has_alpha(im):
        return im.convert("RGBA")
    return im.convert("RGB")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 HxWx3. Transparent pixels are composited over white; EXIF rotation applied."""
    im = _to_rgba_or_rgb(_open(path, "image"))
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im).convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def load_rgba(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """RGBA uint8 HxWx4 (opaque where the file has no alpha); EXIF rotation applied."""
    im = _to_rgba_or_rgb(_open(path, what)).convert("RGBA")
    return np.asarray(im, dtype=np.uint8).copy()


def composite_over(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Lay `top` (uint8 HxWx4, or HxWx3 = opaque) over `bottom` (uint8 HxWx3): alpha 0 keeps
    the bottom pixel, 255 takes the top one, values between blend. Returns uint8 HxWx3."""
    top, bottom = np.asarray(top, np.uint8), np.asarray(bottom, np.uint8)
    if top.shape[:2] != bottom.shape[:2] or top.ndim != 3 or top.shape[2] not in (3, 4):
        raise ValueError(f"cannot lay a {top.shape} image over a {bottom.shape} one")
    if top.shape[2] == 3:
        return top.copy()
    a = top[..., 3:].astype(np.uint32)
    mixed = top[..., :3].astype(np.uint32) * a + bottom.astype(np.uint32) * (255 - a)
    return ((mixed + 127) // 255).astype(np.uint8)


def load_mask(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Bool HxW: True where the mask marks the object, resized (nearest) to size=(width, height).

    White or opaque marks the object: when the file has an alpha channel that is not constant,
    alpha decides; otherwise luminance above 50% does.
    """
    im = _open(path, "mask")
    alpha = None
    if _has_alpha(im):
        a = np.asarray(im.convert("RGBA"))[..., 3]
        if a.min() != a.max():
            alpha = a
    if alpha is not None:
        level = alpha
    elif im.mode.startswith("I") or im.mode == "F":
        level = _high_depth_to_8bit(im)
    else:
        level = np.asarray(im.convert("L"))
    mask = level.astype(np.float32) > 255 * MASK_THRESHOLD
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        resized = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize(
            tuple(size), Image.Resampling.NEAREST
        )
        mask = np.asarray(resized) > 127
    return mask.copy()


def load_label_map(path: str | os.PathLike, what: str = "label map") -> np.ndarray:
    """A label map as painted: uint8 HxWx3 flat colours, or HxW grey label indices (a
    single-channel file). Not resized: a label map must have the photo's size. Transparent
    pixels are refused: every pixel must carry a label."""
    im = _open(path, what)
    if im.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        grey = np.asarray(im) if im.mode == "L" else _high_depth_to_8bit(im)
        return grey.astype(np.uint8).copy()
    if _has_alpha(im):
        rgba = np.asarray(im.convert("RGBA"))
        clear = rgba[..., 3] < 255
        if clear.any():
            ys, xs = np.nonzero(clear)
            raise ImageError(f"{what} {path} has {int(clear.sum())} transparent pixels (e.g. at "
                             f"x={xs[0]}, y={ys[0]}): paint every pixel with a label colour")
        return rgba[..., :3].copy()
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def save_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write uint8 HxWx3 (or HxW, or bool HxW) as PNG, atomically; parent folders are created."""
    path = Path(path)
    a = np.asarray(array)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"save_png needs uint8 HxW or HxWx3/4, got {a.dtype} {a.shape}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            Image.fromarray(a).save(tmp, format="PNG")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as e:
        raise ImageError(f"cannot write {path}: {e.strerror or e}") from None
    return path
