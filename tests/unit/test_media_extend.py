"""Extend: a bigger canvas whose new border is filled from the image's own edges."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.media.extend import extend
from services.media.images import ImageRejectedError


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_a_plain_background_extends_as_itself() -> None:
    prepared = extend(
        png(Image.new("RGB", (120, 80), (40, 90, 200))), {"left": 30, "right": 10, "top": 20, "bottom": 0}
    )
    with Image.open(io.BytesIO(prepared.original)) as result:
        assert (result.format, result.size) == ("PNG", (160, 100))
        pixels = np.asarray(result.convert("RGB"), dtype=int)
    assert np.abs(pixels - np.array([40, 90, 200])).max() <= 8  # the border is the background's colour, near enough
    assert prepared.metadata["extended"] == {"left": 30, "right": 10, "top": 20, "bottom": 0}


def test_a_gradient_continues_into_the_border() -> None:
    gradient = Image.linear_gradient("L").resize((100, 100)).convert("RGB")  # dark at the top, light below
    prepared = extend(png(gradient), {"left": 0, "right": 0, "top": 0, "bottom": 40})
    with Image.open(io.BytesIO(prepared.original)) as result:
        rows = np.asarray(result.convert("L"), dtype=int)
    assert rows.shape == (140, 100)
    assert abs(rows[130].mean() - rows[99].mean()) <= 8  # the light bottom edge carried on down


def test_an_extension_past_the_size_limit_fails() -> None:
    with pytest.raises(ImageRejectedError, match="more than 8000 px a side"):
        extend(png(Image.new("RGB", (7500, 10))), {"left": 600})
