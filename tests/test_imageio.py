"""Reading photos and masks in the many shapes image files come in, and writing PNGs."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from magic_server import imageio
from magic_server.imageio import ImageError, load_image, load_mask, save_png


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height; Pillow reads the size without decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_rgb_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = save_png(tmp_path / "sub" / "x.png", a)
    assert path.exists()
    b = load_image(path)
    assert b.dtype == np.uint8 and b.shape == (20, 30, 3)
    assert np.array_equal(a, b)
    assert not list(path.parent.glob("*.part"))  # written atomically, no leftovers


def test_rgba_is_composited_over_white(tmp_path):
    a = np.zeros((16, 16, 4), dtype=np.uint8)
    a[..., 0] = 200  # red-ish everywhere
    a[:, :8, 3] = 0  # left half fully transparent
    a[:, 8:, 3] = 255  # right half opaque
    a[0, 8, 3] = 128  # one half-transparent pixel
    Image.fromarray(a, "RGBA").save(tmp_path / "t.png")
    rgb = load_image(tmp_path / "t.png")
    assert rgb.shape == (16, 16, 3)
    assert (rgb[:, :8] == 255).all()
    assert (rgb[1:, 8:] == [200, 0, 0]).all()
    assert np.allclose(rgb[0, 8], [227, 127, 127], atol=2)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = np.zeros((16, 16), dtype=np.uint16)
    a[:, :4] = 65535
    a[:, 4:8] = 32768
    a[:, 8:12] = 257 * 10
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = load_image(tmp_path / "g16.png")
    assert rgb.shape == (16, 16, 3)
    assert (rgb[:, :4] == 255).all()
    assert (rgb[:, 4:8] == 128).all()
    assert (rgb[:, 8:12] == 10).all()
    assert (rgb[:, 12:] == 0).all()


def test_palette_image_with_transparency(tmp_path):
    im = Image.new("P", (16, 16), 0)
    im.putpalette([0, 0, 255] + [10, 200, 30] + [0, 0, 0] * 254)
    im.paste(1, (0, 0, 16, 8))
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    rgb = load_image(tmp_path / "p.png")
    assert (rgb[:8] == [10, 200, 30]).all()
    assert (rgb[8:] == 255).all()  # the transparent palette entry becomes white


def test_exif_rotation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20] = 255  # left half white in the stored pixels
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    rgb = load_image(tmp_path / "r.jpg")
    assert rgb.shape == (40, 20, 3)
    assert rgb[:18].mean() > 240 and rgb[22:].mean() < 15  # the white half is now on top


def test_too_small_and_too_large_images_are_refused(tmp_path):
    Image.new("RGB", (15, 100)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="15x100: both sides must be at least 16 pixels"):
        load_image(tmp_path / "small.png")
    _png_header_only(tmp_path / "big.png", 11_000, 10_000)  # 110 MP, below Pillow's own limit
    with pytest.raises(ImageError, match="110 megapixels.*limit is 100 megapixels"):
        load_image(tmp_path / "big.png")
    _png_header_only(tmp_path / "huge.png", 60_000, 60_000)  # Pillow's bomb guard fires first
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "huge.png")


def test_size_limit_is_the_module_constant(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "a.png")
    monkeypatch.setattr(imageio, "MAX_PIXELS", 5_000)
    with pytest.raises(ImageError, match="100x100"):
        load_image(tmp_path / "a.png")


def test_missing_unreadable_and_damaged_files(tmp_path):
    with pytest.raises(ImageError, match="image .*nope.png not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match="not an image file"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageError, match="is not a file"):
        load_mask(tmp_path, (16, 16))
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(tmp_path / "cut.png")


def test_grayscale_mask_threshold_is_half(tmp_path):
    a = np.array([[0, 127, 128, 255] * 4] * 16, dtype=np.uint8)
    Image.fromarray(a, "L").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m.dtype == np.bool_
    assert m[0, :4].tolist() == [False, False, True, True]


def test_rgba_mask_alpha_decides_when_not_constant(tmp_path):
    a = np.zeros((16, 16, 4), dtype=np.uint8)  # black everywhere: luminance would say "empty"
    a[4:8, 4:8, 3] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "alpha.png")
    m = load_mask(tmp_path / "alpha.png")
    assert m.sum() == 16 and m[4:8, 4:8].all()


def test_opaque_rgba_mask_uses_luminance(tmp_path):
    a = np.zeros((16, 16, 4), dtype=np.uint8)
    a[..., 3] = 255
    a[:8, :, :3] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "opaque.png")
    m = load_mask(tmp_path / "opaque.png")
    assert m[:8].all() and not m[8:].any()


def test_mask_modes_16bit_bilevel_and_palette(tmp_path):
    a16 = np.zeros((16, 16), dtype=np.uint16)
    a16[:, 8:] = 40000
    Image.fromarray(a16).save(tmp_path / "m16.png")
    assert load_mask(tmp_path / "m16.png")[:, 8:].all()
    assert not load_mask(tmp_path / "m16.png")[:, :8].any()
    bi = Image.new("1", (16, 16), 0)
    bi.paste(1, (0, 0, 16, 4))
    bi.save(tmp_path / "m1.png")
    assert load_mask(tmp_path / "m1.png").sum() == 64
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0, 0, 0] * 254)
    pal.paste(1, (0, 0, 2, 16))
    pal.save(tmp_path / "mp.png")
    assert load_mask(tmp_path / "mp.png").sum() == 32


def test_mask_is_resized_nearest_to_the_image(tmp_path):
    small = np.zeros((16, 16), dtype=np.uint8)
    small[0:8, 8:16] = 255  # top-right quadrant
    Image.fromarray(small, "L").save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", size=(64, 48))  # (width, height)
    assert m.shape == (48, 64)
    assert m[:24, 32:].all() and not m[24:].any() and not m[:, :32].any()


def test_save_png_accepts_bool_masks_and_refuses_other_dtypes(tmp_path):
    mask = np.zeros((16, 20), dtype=bool)
    mask[3:9, 4:12] = True
    save_png(tmp_path / "mask.png", mask)
    assert np.array_equal(load_mask(tmp_path / "mask.png"), mask)
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "f.png", np.zeros((16, 16, 3), dtype=np.float32))


def test_save_png_reports_unwritable_place(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageError, match="cannot write"):
        save_png(tmp_path / "file" / "out.png", np.zeros((16, 16, 3), dtype=np.uint8))
