"""The image checks and the upload operation on images the tests make with Pillow: real formats in,
right sizes out, and every file that is not a safe image refused before anything is decoded."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from services.media.images import (
    MAX_PIXELS,
    ImageRejectedError,
    TooManyPixelsError,
    check_transform,
    inspect,
    prepare_upload,
    rotated_size,
    transform,
)


def made(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: object) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else 0).save(out, format=fmt, **save)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` over a few bytes of data: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_the_four_formats_are_taken_for_what_they_are(fmt: str) -> None:
    info = inspect(made(fmt))
    assert (info.format, info.width, info.height) == (fmt, 64, 48)


def test_an_upload_is_made_upright_from_its_exif_orientation_with_a_thumbnail() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    prepared = prepare_upload(made("JPEG", (400, 200), exif=exif.tobytes()))
    assert (prepared.info.width, prepared.info.height) == (200, 400)
    assert prepared.metadata["exif_rotated"] is True
    with Image.open(io.BytesIO(prepared.original)) as original:
        assert (original.format, original.size) == ("JPEG", (200, 400))
    with Image.open(io.BytesIO(prepared.thumbnail)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("PNG", (128, 256))
    assert prepared.metadata["thumbnail"] == {"width": 128, "height": 256}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, I am a text file", "not a readable"),
        (made("BMP"), "not a readable"),  # a real image, of a type not taken
        (made("PNG")[:60], "not a readable"),  # cut short
        (made("PNG")[:-20] + b"\x00" * 20, "not a readable"),  # its end overwritten
        (png_claiming(50_000, 50_000), "decompression bomb"),
    ],
    ids=["empty", "text", "bmp", "truncated", "corrupt", "bomb"],
)
def test_what_is_not_a_safe_image_is_refused_before_decoding(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejectedError, match=reason):
        inspect(data)


def test_the_pixel_limit_is_checked_from_the_header() -> None:
    side = int(MAX_PIXELS**0.5) + 1
    with pytest.raises(ImageRejectedError, match="pixels"):
        inspect(png_claiming(side, side))
    assert inspect(png_claiming(100, 100)).width == 100


@given(width=st.integers(1, 300), height=st.integers(1, 300), degrees=st.integers(-360, 360) | st.floats(-360, 360))
@settings(max_examples=60, deadline=None)
def test_the_rotated_size_is_what_pillow_makes(width: int, height: int, degrees: float) -> None:
    made_size = Image.new("L", (width, height)).rotate(degrees, expand=True).size
    assert rotated_size(width, height, degrees) == made_size


def test_every_step_of_a_transform_is_checked_against_max_pixels_before_it_runs() -> None:
    check_transform(8000, 5000, {"rotate": 90, "flip": "horizontal"})  # 40 MP turned: 40 MP
    with pytest.raises(TooManyPixelsError, match=r"the resize would make 8000 x 8000 = 64,000,000 pixels.*MAX_PIXELS"):
        check_transform(640, 480, {"resize": {"width": 8000, "height": 8000}, "rotate": 45})
    with pytest.raises(TooManyPixelsError, match=r"rotation by 45 degrees would make 8486 x 8486"):
        check_transform(640, 480, {"resize": {"width": 6000, "height": 6000}, "rotate": 45})
    # The crop comes first: a small crop of a large image may then be resized within the limit.
    check_transform(8000, 5000, {"crop": {"left": 0, "top": 0, "width": 100, "height": 100}, "rotate": 45})


def test_a_worker_refuses_a_step_too_large_before_it_makes_it() -> None:
    with pytest.raises(TooManyPixelsError, match="rotation by 45"):
        transform(made("PNG", (640, 480)), {"resize": {"width": 6000, "height": 6000}, "rotate": 45})
