"""The extend operation: a bigger canvas, the new border filled from the image's own edges with OpenCV's
Telea inpainting. Smooth backgrounds (sky, gradients, studio walls) extend well; busy ones (foliage,
text, crowds) become smeared streaks of their edge colours, since nothing is invented beyond them."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from services.media.domain import Cancelled
from services.media.images import PreparedImage, check_extension, extended_size, finished, inspect, opened

SIDES = ("left", "right", "top", "bottom")
INPAINT_RADIUS = 5


def extend(data: bytes, params: dict[str, Any], _cancelled: Cancelled | None = None) -> PreparedImage:
    info = inspect(data)
    grow = {side: int(params.get(side, 0)) for side in SIDES}
    check_extension(info.width, info.height, grow)
    width, height = extended_size(info.width, info.height, grow)
    with opened(data) as source:
        image = ImageOps.exif_transpose(source).convert("RGB")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    mask = np.full((height, width), 255, dtype=np.uint8)
    top, left = grow["top"], grow["left"]
    canvas[top : top + image.height, left : left + image.width] = np.asarray(image)
    mask[top : top + image.height, left : left + image.width] = 0
    filled = cv2.inpaint(canvas, mask, INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return finished(Image.fromarray(filled, "RGB"), info.format, extended=grow, method="opencv-telea")
