"""The video checks and the video operation on clips the tests make with PyAV: each accepted container
and codec in, an H.264 MP4 of the right size, rate, frame count and duration out; every file that is not
a video this service takes refused, at the door when its signature says so, else when it fails to decode."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable

import av
import pytest
from PIL import Image

from services.media import video
from services.media.domain import JobCancelledError
from services.media.video import VideoRejectedError, output_size, probe, process, sniff
from tests.media_clips import clip, tone, truncated, undecodable


@pytest.fixture(scope="module")
def second() -> bytes:
    """1 s of 320 x 240 MPEG-4 Part 2 at 25 fps in MP4: the default clip."""
    return clip()


def counter(turns_true_after: int | None = None) -> tuple[Callable[[], bool], list[int]]:
    calls = [0]

    def cancelled() -> bool:
        calls[0] += 1
        return turns_true_after is not None and calls[0] > turns_true_after

    return cancelled, calls


def streams_of(data: bytes) -> dict[str, tuple[str, float]]:
    """Each stream's type: its codec and its duration in seconds, as the muxer wrote them."""
    with av.open(io.BytesIO(data), mode="r") as container:
        return {
            s.type: (s.codec_context.name, float((s.duration or 0) * (s.time_base or 0))) for s in container.streams
        }


# --- sniff: the door's check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: clip(0.2), "mp4"),
        (lambda: clip(0.2, codec="png", container="mov"), "mp4"),  # a QuickTime MOV is ISO BMFF too
        (lambda: clip(0.2, codec="libvpx", container="webm"), "webm"),
        (lambda: clip(0.2, codec="ffv1", container="matroska"), "webm"),  # any Matroska
        (lambda: clip(0.2, container="avi"), "avi"),
        (lambda: clip(0.2, container="mpegts"), "mpegts"),
        (lambda: tone(0.2, container="ogg"), "ogg"),  # the signature only: no theora encoder to make video
    ],
    ids=["mp4", "mov", "webm", "mkv", "avi", "mpegts", "ogg"],
)
def test_each_accepted_signature_is_named(make: Callable[[], bytes], name: str) -> None:
    assert sniff(make()) == name


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, I am a text file, not a video at all" * 10, "not an MP4"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 300, "not an MP4"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 300, "not an MP4"),  # RIFF, but a WAV
        (b"\x47" + b"\x00" * 100, "not an MP4"),  # one sync byte is no transport stream
    ],
    ids=["empty", "text", "png", "wav", "short-ts"],
)
def test_what_has_no_video_signature_is_refused_at_the_door(data: bytes, reason: str) -> None:
    with pytest.raises(VideoRejectedError, match=reason):
        sniff(data)


def test_a_file_over_the_size_limit_is_refused_at_the_door(monkeypatch: pytest.MonkeyPatch, second: bytes) -> None:
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", len(second) - 1)
    with pytest.raises(VideoRejectedError, match="larger than"):
        sniff(second)
    with pytest.raises(VideoRejectedError, match="larger than"):
        process(second)
    monkeypatch.setattr(video, "MAX_VIDEO_BYTES", len(second))
    assert sniff(second) == "mp4"


# --- probe ---------------------------------------------------------------------------------------------


def test_probe_reads_the_stream_from_the_container(second: bytes) -> None:
    info = probe(second)
    assert (info.container, info.codec, info.width, info.height) == ("mov,mp4,m4a,3gp,3g2,mj2", "mpeg4", 320, 240)
    assert (info.fps, info.frames, info.audio_codec) == (25.0, 25, None)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert json.loads(json.dumps(info.as_dict())) == info.as_dict()


def test_probe_counts_the_frames_a_container_does_not_index() -> None:
    info = probe(clip(codec="libvpx-vp9", container="webm", audio=True))
    assert (info.container, info.codec, info.audio_codec) == ("matroska,webm", "vp9", "opus")
    assert (info.width, info.height, info.fps, info.frames) == (320, 240, 25.0, 25)
    assert info.duration == pytest.approx(1.0, abs=0.1)


def test_probe_applies_the_pixel_and_duration_limits(monkeypatch: pytest.MonkeyPatch, second: bytes) -> None:
    monkeypatch.setattr(video, "MAX_VIDEO_PIXELS", 320 * 240 - 1)
    with pytest.raises(VideoRejectedError, match="320 x 240: more than 76,799 pixels"):
        probe(second)
    monkeypatch.setattr(video, "MAX_VIDEO_PIXELS", 320 * 240)
    monkeypatch.setattr(video, "MAX_DURATION_SECONDS", 0.5)
    with pytest.raises(VideoRejectedError, match=r"more than 0\.5 s"):
        probe(second)


# --- process -------------------------------------------------------------------------------------------


def test_a_clip_becomes_an_h264_mp4_with_its_rate_frames_and_duration(second: bytes) -> None:
    prepared = process(second)
    out = probe(prepared.video)
    assert (out.container, out.codec, out.width, out.height) == ("mov,mp4,m4a,3gp,3g2,mj2", "h264", 320, 240)
    assert (out.fps, out.frames, out.audio_codec) == (25.0, 25, None)
    assert out.duration == pytest.approx(1.0, abs=0.1)
    with av.open(io.BytesIO(prepared.video), mode="r") as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(video=0)) == 25
    # faststart: the index comes before the media data, so a player can start from the first bytes.
    assert 0 < prepared.video.find(b"moov") < prepared.video.find(b"mdat")
    with Image.open(io.BytesIO(prepared.thumbnail)) as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("PNG", (256, 192))
    assert prepared.metadata == {
        "source": probe(second).as_dict(),
        "format": "MP4",
        "media_type": "video/mp4",
        "codec": "h264",
        "width": 320,
        "height": 240,
        "fps": 25.0,
        "duration": 1.0,
        "frames": 25,
        "bytes": len(prepared.video),
        "thumbnail": {"width": 256, "height": 192},
    }
    assert json.loads(json.dumps(prepared.metadata)) == prepared.metadata


def test_the_audio_track_is_reencoded_as_aac() -> None:
    prepared = process(clip(audio=True))
    out = probe(prepared.video)
    assert (out.codec, out.audio_codec, out.frames) == ("h264", "aac", 25)
    streams = streams_of(prepared.video)
    assert streams["audio"][0] == "aac"
    assert streams["audio"][1] == pytest.approx(1.0, abs=0.1)
    assert streams["video"] == ("h264", pytest.approx(1.0, abs=0.01))
    assert prepared.metadata["source"]["audio_codec"] == "aac"


@pytest.mark.parametrize(
    ("codec", "container", "source_audio"),
    [("libvpx", "webm", "opus"), ("libvpx-vp9", "webm", None), ("mpeg4", "avi", None), ("mpeg4", "mpegts", "aac")],
    ids=["vp8-webm-opus", "vp9-webm", "avi", "mpegts-aac"],
)
def test_other_containers_and_codecs_transcode_too(codec: str, container: str, source_audio: str | None) -> None:
    prepared = process(clip(codec=codec, container=container, audio=source_audio is not None))
    out = probe(prepared.video)
    assert (out.codec, out.width, out.height, out.fps, out.frames) == ("h264", 320, 240, 25.0, 25)
    assert out.duration == pytest.approx(1.0, abs=0.1)
    assert out.audio_codec == ("aac" if source_audio else None)
    assert prepared.metadata["source"]["codec"] == {"libvpx": "vp8", "libvpx-vp9": "vp9"}.get(codec, codec)
    assert prepared.metadata["source"]["audio_codec"] == source_audio


def test_an_odd_sized_video_loses_a_line_to_become_even() -> None:
    prepared = process(clip(0.2, size=(321, 241), codec="png", container="mov"))
    out = probe(prepared.video)
    assert (out.width, out.height, out.frames) == (320, 240, 5)
    assert (prepared.metadata["width"], prepared.metadata["height"]) == (320, 240)
    assert prepared.metadata["source"]["width"] == 321


def test_a_large_video_is_scaled_down_to_fit_1920() -> None:
    prepared = process(clip(0.2, size=(2560, 1440)))
    out = probe(prepared.video)
    assert (out.width, out.height, out.frames, out.fps) == (1920, 1080, 5, 25.0)
    assert out.duration == pytest.approx(0.2, abs=0.05)
    assert prepared.metadata["thumbnail"] == {"width": 256, "height": 144}


@pytest.mark.parametrize(
    ("size", "fitted"),
    [
        ((320, 240), (320, 240)),
        ((321, 241), (320, 240)),
        ((1920, 1080), (1920, 1080)),
        ((2560, 1440), (1920, 1080)),
        ((3840, 2160), (1920, 1080)),
        ((1080, 1920), (1080, 1920)),
        ((2160, 3840), (1080, 1920)),
        ((1000, 3000), (640, 1920)),
        ((1921, 1081), (1920, 1080)),
        ((1, 1), (2, 2)),
    ],
)
def test_output_sizes_keep_the_aspect_fit_1920_and_are_even(size: tuple[int, int], fitted: tuple[int, int]) -> None:
    assert output_size(*size) == fitted


def test_a_portrait_phone_video_keeps_its_rotation_and_gets_an_upright_thumbnail() -> None:
    prepared = process(clip(0.2, rotation=90))  # stored 320 x 240, shown turned 90° counter-clockwise
    assert (prepared.metadata["width"], prepared.metadata["height"]) == (320, 240)
    with av.open(io.BytesIO(prepared.video), mode="r") as container:
        assert next(container.decode(video=0)).rotation == 90
    with Image.open(io.BytesIO(prepared.thumbnail)) as thumbnail:
        assert thumbnail.size == (192, 256)
        # Red grows left to right in the stored frame; turned counter-clockwise, it grows bottom to top.
        top, bottom = thumbnail.convert("RGB").getpixel((10, 10)), thumbnail.convert("RGB").getpixel((10, 245))
        assert isinstance(top, tuple) and isinstance(bottom, tuple)
        assert top[0] > bottom[0] + 150
    assert prepared.metadata["thumbnail"] == {"width": 192, "height": 256}


# --- files that pass the door and fail the worker --------------------------------------------------------


def test_undecodable_bytes_pass_the_door_and_fail_processing() -> None:
    data = undecodable()
    assert sniff(data) == "mp4"
    with pytest.raises(VideoRejectedError, match="not a readable video"):
        process(data)


@pytest.mark.parametrize("keep", [0.4, 0.8])
def test_a_truncated_file_is_refused(second: bytes, keep: float) -> None:
    with pytest.raises(VideoRejectedError):  # its index (moov), written last, is gone
        process(truncated(second, keep))


@pytest.mark.parametrize("keep", [0.4, 0.7])
def test_a_file_cut_after_its_index_is_refused_once_its_frames_run_out(keep: float) -> None:
    # A faststart MP4 (index first) and a WebM both still open and decode up to the cut.
    for whole in (process(clip(2, audio=True)).video, clip(2, codec="libvpx", container="webm", audio=True)):
        with pytest.raises(VideoRejectedError, match="truncated"):
            process(truncated(whole, keep))


def test_a_file_corrupt_in_the_middle_is_refused() -> None:
    data = bytearray(clip(2))
    start, end = len(data) // 3, len(data) // 2
    data[start:end] = random.Random(7).randbytes(end - start)  # the media data (mdat) comes first
    with pytest.raises(VideoRejectedError, match="could not be decoded"):
        process(bytes(data))


@pytest.mark.parametrize("container", ["mp4", "ogg"], ids=["m4a", "ogg"])
def test_an_audio_only_file_is_refused(container: str) -> None:
    data = tone(0.5, container=container)
    assert sniff(data) in ("mp4", "ogg")
    with pytest.raises(VideoRejectedError, match="no video stream"):
        process(data)


def test_more_frames_than_the_duration_limit_can_hold_stop_the_job(
    monkeypatch: pytest.MonkeyPatch, second: bytes
) -> None:
    # A header that lies: 1 s declared, within the limit; the frames counted while decoding are not.
    monkeypatch.setattr(video, "MAX_FRAMES_PER_SECOND", 0.01)  # 600 s x 0.01 = 6 frames
    cancelled, calls = counter()
    with pytest.raises(VideoRejectedError, match="more frames than 600 s"):
        process(second, cancelled)
    assert calls[0] == 7


# --- cancelling ------------------------------------------------------------------------------------------


def test_a_cancelled_job_stops_at_once(second: bytes) -> None:
    with pytest.raises(JobCancelledError):
        process(second, cancelled=lambda: True)


def test_a_job_cancelled_midway_stops_at_the_next_frame(second: bytes) -> None:
    cancelled, calls = counter(turns_true_after=5)
    with pytest.raises(JobCancelledError):
        process(second, cancelled)
    assert calls[0] == 6


def test_cancelled_is_asked_for_every_frame(second: bytes) -> None:
    cancelled, calls = counter()
    process(second, cancelled)
    assert calls[0] >= 25
