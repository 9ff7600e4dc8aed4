# ruff: noqa: UP010, UP031  (Python 2.7 compatible: GIMP 2.10)
"""Mask logic for the plug-in, without numpy: bytes in, bytes out.

Runs under GIMP 2.10's Python 2.7 and GIMP 3's Python 3, so it keeps to their common subset
(no annotations, no f-strings). A mask is a bytearray of width*height bytes, 0 or 255, row-major,
in the frame of the base layer (the active layer the job works on). Layers elsewhere in the image
are placed into that frame by their offsets, cropped where they stick out, zero where they do not reach.
"""

from __future__ import division

import binascii

ON = 255
THRESHOLD = 128

_THRESH_TABLE = bytes(bytearray(0 if i < THRESHOLD else ON for i in range(256)))
_NONZERO_TABLE = bytes(bytearray(0 if i == 0 else ON for i in range(256)))


class MaskError(ValueError):
    """A mask problem the artist can fix; the message says how."""


def threshold(plane):
    """One byte per pixel (gray or alpha) -> mask (0/255), object where value >= 128."""
    return bytearray(plane).translate(_THRESH_TABLE)


def object_mask(luma, alpha):
    """A mask layer's pixels -> mask. "White or opaque = object": a layer that has transparent
    pixels marks the object by its alpha; a fully opaque layer marks it by white (luminance)."""
    a = threshold(alpha)
    if a.find(b"\x00") >= 0:
        return a
    return threshold(luma)


def rgba_to_rgb(data):
    data = bytearray(data)
    n = len(data) // 4
    out = bytearray(n * 3)
    out[0::3] = data[0::4]
    out[1::3] = data[1::4]
    out[2::3] = data[2::4]
    return out


def rgb_to_rgba(rgb, alpha):
    rgb = bytearray(rgb)
    n = len(rgb) // 3
    out = bytearray(n * 4)
    out[0::4] = rgb[0::3]
    out[1::4] = rgb[1::3]
    out[2::4] = rgb[2::3]
    out[3::4] = bytearray(alpha)
    return out


def split_planes(data, bpp, has_alpha):
    """Raw pixels of a GIMP 2.10 pixel region (GRAY, GRAYA, RGB or RGBA, 8 bit) -> (luma, alpha)."""
    data = bytearray(data)
    n = len(data) // bpp
    colours = bpp - 1 if has_alpha else bpp
    alpha = data[bpp - 1::bpp] if has_alpha else bytearray(b"\xff") * n
    if colours == 1:
        return data[0::bpp], alpha
    r, g, b = data[0::bpp], data[1::bpp], data[2::bpp]
    luma = bytearray((299 * r[i] + 587 * g[i] + 114 * b[i] + 500) // 1000 for i in range(n))
    return luma, alpha


def place(mask, mw, mh, dx, dy, width, height, channels=1):
    """Put an mw x mh mask (or interleaved image of `channels` bytes per pixel) whose top-left
    corner is at (dx, dy) in the base frame into a width x height canvas: parts outside are
    cropped, uncovered parts are 0 (for RGBA: transparent)."""
    mask = bytearray(mask)
    if len(mask) != mw * mh * channels:
        raise ValueError("mask has %d bytes, expected %dx%dx%d" % (len(mask), mw, mh, channels))
    out = bytearray(width * height * channels)
    x0, x1 = max(0, dx), min(width, dx + mw)
    y0, y1 = max(0, dy), min(height, dy + mh)
    if x0 >= x1 or y0 >= y1:
        return out
    row = (x1 - x0) * channels
    for y in range(y0, y1):
        src = ((y - dy) * mw + (x0 - dx)) * channels
        dst = (y * width + x0) * channels
        out[dst:dst + row] = mask[src:src + row]
    return out


def _to_int(mask):
    return int(binascii.hexlify(bytes(mask)) or b"0", 16)


def _from_int(value, length):
    if length == 0:
        return bytearray()
    return bytearray(binascii.unhexlify(("%0" + str(2 * length) + "x") % value))


def union(a, b):
    if len(a) != len(b):
        raise ValueError("masks differ in size")
    return _from_int(_to_int(a) | _to_int(b), len(a))


def subtract(a, b):
    """Pixels of a that are not in b."""
    if len(a) != len(b):
        raise ValueError("masks differ in size")
    full = (1 << (8 * len(a))) - 1
    return _from_int(_to_int(a) & (full ^ _to_int(b)), len(a))


def differ(a, b, channels=3):
    """Mask of the pixels where two interleaved images of `channels` bytes per pixel differ in
    any channel (whole-buffer integer XOR: no per-pixel Python loop)."""
    if len(a) != len(b):
        raise ValueError("images differ in size")
    changed = _from_int(_to_int(a) ^ _to_int(b), len(a)).translate(_NONZERO_TABLE)
    out = changed[0::channels]
    for c in range(1, channels):
        out = union(out, changed[c::channels])
    return out


def first_off(mask, width):
    """(x, y) of the first pixel that is not set, or None when every pixel is."""
    i = bytearray(mask).find(b"\x00")
    return None if i < 0 else (i % width, i // width)


def count(mask):
    return len(mask) - bytearray(mask).count(b"\x00")


def is_empty(mask):
    return bytearray(mask).find(b"\xff") < 0


def is_full(mask):
    return bytearray(mask).find(b"\x00") < 0


def bbox(mask, width, height):
    """(x0, y0, x1, y1) of the non-zero pixels (x1, y1 exclusive), or None for an empty mask."""
    mask = bytearray(mask)
    x0, y0, x1, y1 = width, None, 0, 0
    for y in range(height):
        row = mask[y * width:(y + 1) * width]
        first = row.find(b"\xff")
        if first < 0:
            continue
        if y0 is None:
            y0 = y
        y1 = y + 1
        x0 = min(x0, first)
        x1 = max(x1, row.rfind(b"\xff") + 1)
    if y0 is None:
        return None
    return x0, y0, x1, y1


def dilate(mask, width, height, radius):
    """Square dilation by `radius` pixels (a border around the edited area for blending)."""
    mask = bytearray(mask)
    if radius <= 0:
        return mask
    rows = []
    for y in range(height):
        row = mask[y * width:(y + 1) * width]
        out = bytearray(width)
        x = row.find(b"\xff")
        while x >= 0:
            end = row.find(b"\x00", x)
            end = width if end < 0 else end
            a, b = max(0, x - radius), min(width, end + radius)
            out[a:b] = b"\xff" * (b - a)
            x = row.find(b"\xff", end) if end < width else -1
        rows.append(_to_int(out))
    result = bytearray()
    for y in range(height):
        acc = 0
        for v in rows[max(0, y - radius):min(height, y + radius + 1)]:
            acc |= v
        result += _from_int(acc, width)
    return result


def crop(data, width, height, box, channels=1):
    """Rows/columns of box=(x0, y0, x1, y1) from an interleaved width x height image."""
    data = bytearray(data)
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError("crop box %r outside %dx%d" % (box, width, height))
    out = bytearray()
    for y in range(y0, y1):
        start = (y * width + x0) * channels
        out += data[start:start + (x1 - x0) * channels]
    return out
