"""open_image: high-bit-depth files decode to the same picture as their 8-bit version; 8-bit paths are unchanged."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from competition.data import open_image

H, W = 8, 256
GREY8 = np.tile(np.arange(W, dtype=np.uint8), (H, 1))  # a left-to-right gradient, every 8-bit value once
RGB8 = np.stack([GREY8, GREY8[:, ::-1], np.full_like(GREY8, 77)], axis=-1)


def widen(a8: np.ndarray) -> np.ndarray:
    """The exact 16-bit version of an 8-bit picture (v * 257 maps 0..255 onto 0..65535)."""
    return a8.astype(np.uint16) * 257


def png16(path: Path, a16: np.ndarray) -> Path:
    """Write a 16-bit PNG by hand (Pillow cannot write 48-bit RGB): grey for 2-D, RGB for 3-channel arrays."""
    h, w = a16.shape[:2]
    color_type = 2 if a16.ndim == 3 else 0  # PNG colour types: 0 grey, 2 RGB
    raw = b"".join(b"\0" + a16[y].astype(">u2").tobytes() for y in range(h))  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def assert_same_picture(got: Image.Image, want8: np.ndarray) -> None:
    assert got.mode == "RGB"
    want = np.stack([want8] * 3, axis=-1) if want8.ndim == 2 else want8
    diff = np.abs(np.asarray(got).astype(int) - want.astype(int))
    assert diff.max() <= 1, f"max channel difference {diff.max()} (mean got {np.asarray(got).mean():.1f})"


def test_16bit_grey_png(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    Image.fromarray(widen(GREY8)).save(path)
    assert Image.open(path).mode == "I;16"
    assert_same_picture(open_image(path), GREY8)


def test_16bit_mid_grey_png_is_mid_grey(tmp_path: Path) -> None:
    path = tmp_path / "mid.png"
    Image.fromarray(np.full((4, 4), 0x8000, np.uint16)).save(path)
    assert np.asarray(open_image(path)).tolist() == np.full((4, 4, 3), 128).tolist()


def test_hand_written_16bit_grey_png(tmp_path: Path) -> None:
    assert_same_picture(open_image(png16(tmp_path / "g16.png", widen(GREY8))), GREY8)


def test_48bit_rgb_png(tmp_path: Path) -> None:
    # Pillow already reduces 48-bit RGB to 8-bit RGB on open; this guards that the path stays right.
    path = png16(tmp_path / "rgb48.png", widen(RGB8))
    assert Image.open(path).mode == "RGB"
    assert_same_picture(open_image(path), RGB8)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_tiff(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "g16.tif"
    dtype = "<u2" if mode == "I;16" else ">u2"
    Image.frombytes(mode, (W, H), widen(GREY8).astype(dtype).tobytes()).save(path)
    assert Image.open(path).mode == mode
    assert_same_picture(open_image(path), GREY8)


def test_16bit_pgm_opens_as_I(tmp_path: Path) -> None:
    path = tmp_path / "g16.pgm"
    path.write_bytes(f"P5 {W} {H} 65535\n".encode() + widen(GREY8).astype(">u2").tobytes())
    assert Image.open(path).mode == "I"
    assert_same_picture(open_image(path), GREY8)


def test_float_tiff(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(widen(GREY8).astype(np.float32)).save(path)
    assert Image.open(path).mode == "F"
    assert_same_picture(open_image(path), GREY8)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("RGB", ".png"), ("L", ".png"), ("P", ".png"), ("RGBA", ".png"), ("LA", ".png"), ("CMYK", ".jpg")],
)
def test_8bit_modes_decode_as_before(tmp_path: Path, mode: str, suffix: str) -> None:
    path = tmp_path / f"img{suffix}"
    Image.fromarray(RGB8).convert(mode).save(path)
    assert Image.open(path).mode == mode
    with Image.open(path) as im:
        want = np.asarray(im.convert("RGB"))
    got = open_image(path)
    assert got.mode == "RGB"
    assert np.array_equal(np.asarray(got), want)
    if mode == "RGB":
        assert np.array_equal(want, RGB8)
