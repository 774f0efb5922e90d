"""Background removal on scenes the tests draw, whose true foreground is known: both segmenters keep the
subject and clear the background (measured as intersection over union), and where GrabCut is weak."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from services.media.background import remove_background
from services.media.images import ImageRejectedError

SIZE = (480, 360)
SUBJECT = (SIZE[0] * 0.3, SIZE[1] * 0.25, SIZE[0] * 0.7, SIZE[1] * 0.8)


def scene(background: str) -> tuple[bytes, np.ndarray]:
    """A red disc on a plain, noisy or graded background, as PNG bytes, and the disc's true mask."""
    width, height = SIZE
    if background == "plain":
        image = Image.new("RGB", SIZE, (235, 235, 240))
    elif background == "noise":
        image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8))
    else:
        y, x = np.mgrid[0:height, 0:width]
        image = Image.fromarray(
            np.stack([180 + 40 * x / width, 200 + 30 * y / height, 230 + 0 * x], -1).astype(np.uint8)
        )
    ImageDraw.Draw(image).ellipse(SUBJECT, fill=(160, 40, 30))
    truth = Image.new("L", SIZE)
    ImageDraw.Draw(truth).ellipse(SUBJECT, fill=255)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue(), np.asarray(truth) >= 128


def cut(data: bytes, method: str) -> tuple[Image.Image, np.ndarray]:
    prepared = remove_background(data, {"method": method})
    image = Image.open(io.BytesIO(prepared.original))
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", SIZE)
    assert prepared.metadata["method"] == method
    return image, np.asarray(image)[..., 3] >= 128


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize(("method", "background"), [("u2netp", "plain"), ("u2netp", "noise"), ("u2netp", "graded"),
                                                    ("grabcut", "plain"), ("grabcut", "noise")])  # fmt: skip
def test_the_subject_is_kept_and_the_background_made_transparent(method: str, background: str) -> None:
    data, truth = scene(background)
    image, kept = cut(data, method)
    assert iou(kept, truth) > 0.95
    pixels = np.asarray(image)
    assert pixels[5, 5, 3] == 0  # a corner: background, transparent
    centre = pixels[SIZE[1] // 2, SIZE[0] // 2]
    assert tuple(centre[:3]) == (160, 40, 30) and centre[3] >= 250  # the subject's own colour, opaque (the model's
    # mask is soft: 254 at best)


def test_grabcut_is_poor_on_a_graded_background_as_the_readme_says() -> None:
    data, truth = scene("graded")
    _, kept = cut(data, "grabcut")
    assert iou(kept, truth) < 0.9  # the gradient inside the frame is taken for foreground


def test_a_single_colour_image_has_nothing_to_separate() -> None:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 0, 0)).save(out, "PNG")
    with pytest.raises(ImageRejectedError, match="single colour"):
        remove_background(out.getvalue(), {"method": "u2netp"})
