"""Small real media files made with PyAV for the video tests: a square sliding across a gradient (so an
encoder has motion to code and a decoder has something to get wrong), optionally with a 440 Hz tone.

Made in memory, in well under a second for the sizes the tests use; unit and end-to-end tests share them."""

from __future__ import annotations

import io
import math
import random
from fractions import Fraction

import av
import numpy as np

# What each container's audio track is encoded with: the native `aac` in ISO BMFF, Opus elsewhere (the
# bundled FFmpeg has libopus but no libvorbis, and its native vorbis encoder is experimental).
_AUDIO_CODECS = {"mp4": "aac", "mov": "aac", "ipod": "aac", "webm": "libopus", "matroska": "libopus", "ogg": "libopus"}
# Pixel formats the encoders take; ffv1 and png are there for odd sizes, which 4:2:0 encoders may refuse.
_PIXEL_FORMATS = {"ffv1": "yuv444p", "png": "rgb24"}
_SAMPLE_RATE = 48_000  # Opus takes nothing else that is common


def clip(
    seconds: float = 1.0,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    codec: str = "mpeg4",
    container: str = "mp4",
    audio: bool = False,
    rotation: int = 0,
) -> bytes:
    """`seconds` of video (round(seconds * fps) frames) of `size` (width, height), encoded with `codec` in
    `container` (an FFmpeg muxer name: mp4, mov, webm, matroska, avi, mpegts...), with a mono tone if `audio`,
    to be shown turned `rotation` degrees counter-clockwise (a display matrix, as phones record portrait)."""
    width, height = size
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as output:
        video = output.add_stream(codec, rate=fps)
        assert isinstance(video, av.VideoStream), f"{codec} is not a video codec"
        video.width, video.height = width, height
        video.pix_fmt = _PIXEL_FORMATS.get(codec, "yuv420p")
        if rotation:
            video.set_display_rotation(rotation)
        sound = _audio_stream(output, container) if audio else None
        frames = round(seconds * fps)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(_pattern(width, height, index, frames), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            output.mux(video.encode(frame))
        output.mux(video.encode(None))
        if sound is not None:
            _tone_into(output, sound, seconds)
    return out.getvalue()


def tone(seconds: float = 1.0, container: str = "mp4") -> bytes:
    """An audio-only file (a 440 Hz tone, no video stream), e.g. what an .m4a or an .ogg holds."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as output:
        _tone_into(output, _audio_stream(output, container), seconds)
    return out.getvalue()


def undecodable() -> bytes:
    """Bytes that pass the door's signature check (an ISO BMFF `ftyp` box) but that no decoder makes a
    video of: what the end-to-end tests upload to see a job fail after it was taken."""
    noise = random.Random(20240601).randbytes(4096)
    return b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + noise


def truncated(data: bytes, keep: float = 0.4) -> bytes:
    """The first `keep` of a file's bytes: a header that promises more than the file holds."""
    return data[: int(len(data) * keep)]


def _pattern(width: int, height: int, index: int, frames: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = x[np.newaxis, :].astype(np.uint8)
    image[..., 1] = y[:, np.newaxis].astype(np.uint8)
    image[..., 2] = (index * 255 // max(frames - 1, 1)) & 0xFF
    side = max(2, min(width, height) // 4)
    left = (width - side) * index // max(frames - 1, 1)
    top = (height - side) // 2
    image[top : top + side, left : left + side] = (255, 255, 255)
    return image


def _audio_stream(output: av.container.OutputContainer, container: str) -> av.AudioStream:
    stream = output.add_stream(_AUDIO_CODECS.get(container, "aac"), rate=_SAMPLE_RATE)
    assert isinstance(stream, av.AudioStream)
    stream.layout = "mono"
    return stream


def _tone_into(output: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    chunk = 1024
    total = round(seconds * _SAMPLE_RATE)
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        t = np.arange(start, start + count, dtype=np.float32) / _SAMPLE_RATE
        samples = (0.3 * np.sin(2 * math.pi * 440 * t) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = _SAMPLE_RATE
        frame.pts, frame.time_base = start, Fraction(1, _SAMPLE_RATE)
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))
