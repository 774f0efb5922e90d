"""Image generation without a model (none ships inside a wheel): a procedural picture that depends only
on the prompt, the seed and the size, so the same request always gives the same pixels. Layered value
noise (numpy) is coloured by a palette derived from the prompt's words. `Generator` is the seam a
model-backed generator would fill."""

from __future__ import annotations

import colorsys
import hashlib
from typing import Any, Protocol

import numpy as np
from PIL import Image

from services.media.domain import Cancelled
from services.media.images import PreparedImage, finished

OCTAVES = (4, 8, 16, 32, 64)


class Generator(Protocol):
    def __call__(self, prompt: str, seed: int, width: int, height: int) -> Image.Image: ...


def procedural(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    digest = hashlib.sha256(f"{prompt}\x1f{seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    field = np.zeros((height, width), dtype=np.float64)
    for weight, cells in enumerate(OCTAVES, start=1):
        grid = rng.random((cells, cells))
        layer = Image.fromarray((grid * 255).astype(np.uint8), "L").resize((width, height), Image.Resampling.BICUBIC)
        field += np.asarray(layer, dtype=np.float64) / 255 / weight
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-9)
    palette = _palette(prompt)
    stops = np.linspace(0, 1, len(palette))
    rgb = np.stack([np.interp(field, stops, palette[:, c]) for c in range(3)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _palette(prompt: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Four colours from the prompt's words: each word's hash picks a hue; the first word sets the mood."""
    words = [w for w in prompt.lower().split() if w] or ["blank"]
    hues = [int.from_bytes(hashlib.sha256(w.encode()).digest()[:2], "big") / 65535 for w in words]
    base = hues[0]
    colours = [colorsys.hsv_to_rgb((base + hues[i % len(hues)] * 0.35) % 1, 0.55 + 0.1 * i, 0.35 + 0.18 * i)
               for i in range(4)]  # fmt: skip
    return np.array(colours) * 255


def generate(_data: bytes, params: dict[str, Any], _cancelled: Cancelled | None = None) -> PreparedImage:
    """The generate operation (it takes no input file)."""
    image = procedural(params["prompt"], params["seed"], params["width"], params["height"])
    return finished(image, "PNG", prompt=params["prompt"], seed=params["seed"], generator="procedural-noise-v1")
