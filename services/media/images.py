"""Image checks and the upload operation's work, with Pillow: what a file really is (never its name or
its declared type), whether it is safe to decode, and the stored original and thumbnail it becomes.

No framework and no I/O beyond the bytes given: the API checks an upload with `inspect` before any
credit is reserved; a worker runs `prepare_upload` (decoding happens there, never on the API's loop)."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from services.media.domain import Cancelled, UnusableInputError

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
# 40 megapixels (8000 x 5000): decoded as RGBA that is 160 MB, the most one job may ask of a worker.
MAX_PIXELS = 40_000_000
MAX_SIDE = 8000
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif"}
THUMBNAIL_SIZE = (256, 256)


class ImageRejectedError(UnusableInputError):
    """Not an image this service takes: answered with a 4xx, nothing reserved or stored."""


class TooManyPixelsError(ImageRejectedError):
    """A step of an operation would make an image of more than MAX_PIXELS: refused before it is done
    (at the door, before any credit is held; in a worker, before the step)."""


def check_pixels(step: str, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise TooManyPixelsError(
            f"the {step} would make {width} x {height} = {width * height:,} pixels: more than the"
            f" {MAX_PIXELS:,} an image may have (MAX_PIXELS)"
        )


def check_transform(width: int, height: int, spec: dict[str, Any]) -> None:
    """Every step of a transform of a `width` x `height` image within MAX_PIXELS, in the order they run."""
    if crop := spec.get("crop"):
        width, height = crop["width"], crop["height"]
        check_pixels("crop", width, height)
    if resize := spec.get("resize"):
        width, height = resize["width"], resize["height"]
        check_pixels("resize", width, height)
    if rotate := spec.get("rotate"):
        width, height = rotated_size(width, height, -rotate)
        check_pixels(f"rotation by {rotate} degrees", width, height)


def extended_size(width: int, height: int, sides: dict[str, int]) -> tuple[int, int]:
    """A `width` x `height` image grown by `sides` (left, right, top, bottom)."""
    return width + sides.get("left", 0) + sides.get("right", 0), height + sides.get("top", 0) + sides.get("bottom", 0)


def check_extension(width: int, height: int, sides: dict[str, int]) -> None:
    width, height = extended_size(width, height, sides)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise TooManyPixelsError(f"extended to {width} x {height}, the image would be more than {MAX_SIDE} px a side")
    check_pixels("extension", width, height)


def rotated_size(width: int, height: int, degrees: float) -> tuple[int, int]:
    """The size of `Image.rotate(degrees, expand=True)`, computed as Pillow does (about the centre, its
    corners' bounding box), without the pixels."""
    angle = -math.radians(degrees % 360.0)
    a, b = round(math.cos(angle), 15), round(math.sin(angle), 15)
    d, e = round(-math.sin(angle), 15), round(math.cos(angle), 15)
    cx, cy = width / 2.0, height / 2.0
    c, f = a * -cx + b * -cy + cx, d * -cx + e * -cy + cy
    xs = [a * x + b * y + c for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
    ys = [d * x + e * y + f for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
    return math.ceil(max(xs)) - math.floor(min(xs)), math.ceil(max(ys)) - math.floor(min(ys))


@dataclass(frozen=True)
class ImageInfo:
    format: str  # PNG, JPEG, WEBP or GIF: what the bytes are
    width: int
    height: int

    @property
    def media_type(self) -> str:
        return FORMATS[self.format]


@dataclass(frozen=True)
class PreparedImage:
    original: bytes  # upright (EXIF orientation applied), in its own format
    thumbnail: bytes  # PNG, at most 256 x 256
    info: ImageInfo
    metadata: dict[str, Any]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.info.format]


def inspect(data: bytes) -> ImageInfo:
    """What the bytes are, from their header and a structural check, without decoding the pixels."""
    return inspect_file(io.BytesIO(data), len(data))


def inspect_file(file: BinaryIO, size: int) -> ImageInfo:
    """`inspect` of a file of `size` bytes, read from `file` (an upload in storage) as Pillow needs it."""
    if not size:
        raise ImageRejectedError("the file is empty")
    if size > MAX_UPLOAD_BYTES:
        raise ImageRejectedError(f"the file is larger than {MAX_UPLOAD_BYTES} bytes")
    try:
        with _open(file) as image:
            info = ImageInfo(str(image.format), image.width, image.height)
            _check(info)
            image.verify()  # the structure and checksums, still without decoding the pixels
    except ImageRejectedError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejectedError(f"more than {MAX_PIXELS:,} pixels (a decompression bomb?): {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejectedError(f"not a readable PNG, JPEG, WebP or GIF image ({type(exc).__name__})") from None
    return info


def prepare_upload(
    data: bytes, _params: dict[str, Any] | None = None, _cancelled: Cancelled | None = None
) -> PreparedImage:
    """The upload operation: the image turned upright, re-encoded in its format, and its thumbnail."""
    info = inspect(data)
    try:
        with opened(data) as image:
            upright = ImageOps.exif_transpose(image)
            return finished(upright, info.format, exif_rotated=upright.size != (info.width, info.height))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejectedError(f"the image could not be decoded ({type(exc).__name__})") from None


def transform(data: bytes, spec: dict[str, Any], _cancelled: Cancelled | None = None) -> PreparedImage:
    """The transform operation, in a fixed order: crop, resize, rotate, flip; then format and quality.
    `spec` was checked at the door (services/media/api.py); a crop outside the image fails the job."""
    info = inspect(data)
    try:
        with opened(data) as source:
            image = ImageOps.exif_transpose(source)
            check_transform(image.width, image.height, spec)  # the door checked the record's size; this, the file's
            if crop := spec.get("crop"):
                box = (crop["left"], crop["top"], crop["left"] + crop["width"], crop["top"] + crop["height"])
                if box[2] > image.width or box[3] > image.height:
                    raise ImageRejectedError(f"the crop {box} reaches outside the {image.width} x {image.height} image")
                image = image.crop(box)
            if resize := spec.get("resize"):
                image = image.resize((resize["width"], resize["height"]), Image.Resampling.LANCZOS)
            if rotate := spec.get("rotate"):
                image = image.rotate(-rotate, expand=True)  # degrees clockwise, as people say it
            if flip := spec.get("flip"):
                image = ImageOps.mirror(image) if flip == "horizontal" else ImageOps.flip(image)
            fmt = str(spec.get("format") or info.format).upper()
            return finished(image, fmt, quality=spec.get("quality"), transformed=sorted(spec))
    except ImageRejectedError:
        raise  # already says why (it is a ValueError too)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejectedError(f"the image could not be transformed ({type(exc).__name__})") from None


def finished(image: Image.Image, fmt: str, quality: int | None = None, **extra: Any) -> PreparedImage:
    """An operation's output: the image encoded in `fmt`, its PNG thumbnail, and what to record of it."""
    original = _encode(image, fmt, quality)
    thumbnail = image.copy()
    thumbnail.thumbnail(THUMBNAIL_SIZE)
    info = ImageInfo(fmt, image.width, image.height)
    metadata = {
        "format": fmt,
        "media_type": info.media_type,
        "width": image.width,
        "height": image.height,
        "bytes": len(original),
        "thumbnail": {"width": thumbnail.width, "height": thumbnail.height},
        **extra,
    }
    return PreparedImage(original, _encode(thumbnail, "PNG"), info, metadata)


def opened(data: bytes) -> Image.Image:
    return _open(io.BytesIO(data))


def _open(file: BinaryIO) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow only warns between its limit and twice it; ours is stricter and checked from the header.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(file, formats=list(FORMATS))


def _check(info: ImageInfo) -> None:
    if info.format not in FORMATS:
        raise ImageRejectedError(f"{info.format} images are not taken (PNG, JPEG, WebP or GIF)")
    if info.width <= 0 or info.height <= 0:
        raise ImageRejectedError("the image has no pixels")
    if info.width * info.height > MAX_PIXELS:
        raise ImageRejectedError(
            f"the image is {info.width} x {info.height}: more than {MAX_PIXELS:,} pixels (a decompression bomb?)"
        )


def _encode(image: Image.Image, fmt: str, quality: int | None = None) -> bytes:
    out = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    if fmt == "GIF" and image.mode not in ("P", "L"):
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(out, format=fmt, **({"quality": quality or 90} if fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()
