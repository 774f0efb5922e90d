"""Video checks and the video operation's work, with PyAV (FFmpeg): what a file really is (its signature,
never its name or declared type), whether it is a video this service takes, and the H.264 MP4 and PNG
thumbnail it becomes.

No framework and no I/O beyond the bytes given: the API checks an upload with `sniff` (no decoding, cheap
enough for the door); a worker runs `process`, where all decoding happens, and cancels it through
`cancelled`. Every limit below bounds what one job may cost a worker: bytes held, pixels per frame decoded,
frames encoded."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from services.media.domain import Cancelled, JobCancelledError, UnusableInputError

MAX_VIDEO_BYTES = 200 * 1024 * 1024
MAX_DURATION_SECONDS = 600  # 10 minutes
MAX_VIDEO_PIXELS = 3840 * 2160  # per frame: 4K UHD; a frame decoded as yuv420p is then 12 MB
MAX_OUTPUT_SIDE = 1920  # the transcoded video is scaled down (aspect kept, even sizes) to fit 1920 x 1920
THUMBNAIL_SIDE = 256
# More frames than 10 minutes at 120 fps can only come from a header that lies about the duration.
MAX_FRAMES_PER_SECOND = 120
# A declared rate above this (or none) is a broken header: high-speed cameras store slow motion at a
# playback rate. Such a video is encoded at 25 fps, its frames still placed by their timestamps.
_MAX_FRAME_RATE = 1000
# The demuxer each signature names: FFmpeg is never left to guess (its probing also knows playlists and
# other formats that open further files), and a file is read as what its first bytes say it is. Full names:
# PyAV reports a forced format by the name it was given, and VideoInfo.container keeps FFmpeg's own.
DEMUXERS = {
    "mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "webm": "matroska,webm",
    "avi": "avi",
    "mpegts": "mpegts",
    "ogg": "ogg",
}
# What PyAV raises for data FFmpeg cannot read: its FFmpegError subclasses (InvalidDataError is also a
# ValueError, a truncated file may end in EOFError) and the ValueErrors of its own checks.
_UNREADABLE = (av.error.FFmpegError, ValueError, OSError, EOFError)
_AVIO_FLAG_READ = 1  # libavformat's AVIO_FLAG_READ, which PyAV does not export
_AAC_RATES = frozenset(av.Codec("aac", "w").audio_rates or ())
_AAC_BIT_RATE = 128_000
_X264_OPTIONS = {"preset": "veryfast", "crf": "23"}


class VideoRejectedError(UnusableInputError):
    """Not a video this service takes (the job fails; at the door a 4xx)."""


@dataclass(frozen=True)
class VideoInfo:
    container: str  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"
    codec: str  # the video codec, e.g. "h264", "vp9", "mpeg4"
    width: int
    height: int
    fps: float  # average frame rate, rounded to 3 decimals
    duration: float  # seconds, rounded to 3 decimals
    frames: int  # from the container's index, or counted by demuxing the video packets when it has none
    audio_codec: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PreparedVideo:
    video: bytes  # H.264 (yuv420p) in MP4, moov atom first; audio, if any, as AAC
    thumbnail: bytes  # PNG, at most 256 x 256, of the first frame, upright
    metadata: dict[str, Any]
    extension = "mp4"

    @property
    def original(self) -> bytes:
        return self.video


def sniff(data: bytes, size: int | None = None) -> str:
    """The door's cheap check, from the first bytes only (`data` may be just them, of a file of `size`):
    "mp4" (any ISO BMFF: MP4, MOV, M4V, 3GP), "webm" (any Matroska), "avi", "mpegts" or "ogg";
    VideoRejectedError for anything else."""
    size = len(data) if size is None else size
    if not size:
        raise VideoRejectedError("the file is empty")
    if size > MAX_VIDEO_BYTES:
        raise VideoRejectedError(f"the file is larger than {MAX_VIDEO_BYTES} bytes")
    if data[4:8] == b"ftyp":
        return "mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if data.startswith(b"RIFF") and data[8:12] == b"AVI ":
        return "avi"
    if len(data) > 188 and data[0] == data[188] == 0x47:  # two sync bytes, a packet apart
        return "mpegts"
    if data.startswith(b"OggS"):
        return "ogg"
    raise VideoRejectedError("not an MP4/MOV, WebM/Matroska, AVI, MPEG-TS or Ogg video")


def probe(data: bytes) -> VideoInfo:
    """What the video is, from its container's headers and index (demuxed, not decoded); VideoRejectedError
    if it is not a readable video or is over the pixel or duration limits."""
    kind = sniff(data)
    try:
        with _opened(data, kind) as container:
            return _info(container)
    except VideoRejectedError:
        raise
    except _UNREADABLE as exc:
        raise VideoRejectedError(f"not a readable video ({type(exc).__name__})") from None


def process(data: bytes, cancelled: Callable[[], bool] = lambda: False) -> PreparedVideo:
    """The video operation: the file transcoded to H.264 MP4 (frame rate kept, scaled down to fit
    MAX_OUTPUT_SIDE, audio as AAC) and a thumbnail of its first frame.

    `cancelled` is asked before each decoded frame is worked on; JobCancelledError when it says so.
    VideoRejectedError for a file that probes but does not decode: truncated, corrupt, no frames."""
    kind = sniff(data)
    source = probe(data)
    transcoder = _Transcoder(source, cancelled)
    out = io.BytesIO()
    with _opened(data, kind) as container, _mp4_output(out) as output:
        transcoder.run(container, output)
    video = out.getvalue()
    width, height = transcoder.size
    metadata = {
        "source": source.as_dict(),
        "format": "MP4",
        "media_type": "video/mp4",
        "codec": "h264",
        "width": width,
        "height": height,
        "fps": round(float(transcoder.rate), 3),
        "duration": round(float(transcoder.next_pts / transcoder.rate), 3),
        "frames": transcoder.frames,
        "bytes": len(video),
        "thumbnail": transcoder.thumbnail_size,
    }
    return PreparedVideo(video, transcoder.thumbnail, metadata)


def process_video(data: bytes, _params: dict[str, Any], cancelled: Cancelled) -> PreparedVideo:
    """The video operation as a worker runs it (it takes no parameters)."""
    return process(data, cancelled)


def output_size(width: int, height: int) -> tuple[int, int]:
    """`width` x `height` scaled down to fit MAX_OUTPUT_SIDE, aspect kept, each side even (libx264's
    4:2:0 needs it, so an odd side loses its last line even when nothing is scaled)."""
    scale = min(1.0, MAX_OUTPUT_SIDE / max(width, height))
    return max(2, round(width * scale) // 2 * 2), max(2, round(height * scale) // 2 * 2)


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, THUMBNAIL_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class _Transcoder:
    """One `process` run's state: the output streams, the next timestamps, the thumbnail."""

    def __init__(self, source: VideoInfo, cancelled: Callable[[], bool]) -> None:
        self.cancelled = cancelled
        self.size = output_size(source.width, source.height)
        self.rate = Fraction(25)
        self.frames = 0
        self.next_pts = 0  # of the next video frame, in 1 / rate
        self.origin: float | None = None  # the source time of the first video frame
        self.audio_seconds = 0.0  # of audio passed on: where the next audio frame starts
        self.thumbnail = b""
        self.thumbnail_size: dict[str, int] = {}

    def run(self, container: InputContainer, output: OutputContainer) -> None:
        source_video = _video_stream(container)
        source_audio = container.streams.audio[0] if container.streams.audio else None
        source_video.thread_type = "AUTO"  # frame threads too: decoding is most of the wall time after x264
        self.rate = _frame_rate(source_video)
        width, height = self.size
        video = output.add_stream("libx264", rate=self.rate, options=_X264_OPTIONS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = _audio_stream(output, source_audio) if source_audio is not None else None
        for frame in _decoded(container, source_video, source_audio):
            if self.cancelled():
                raise JobCancelledError("the job was cancelled")
            if isinstance(frame, VideoFrame):
                self._video(frame, video, output)
            elif audio is not None:
                self._audio(frame, audio, output)
        if not self.frames:
            raise VideoRejectedError("no video frame could be decoded")
        output.mux(video.encode(None))
        if audio is not None:
            output.mux(audio.encode(None))
        self._check_complete(container, source_video)

    def _video(self, frame: VideoFrame, video: VideoStream, output: OutputContainer) -> None:
        self.frames += 1
        if self.frames > MAX_DURATION_SECONDS * MAX_FRAMES_PER_SECOND:
            raise VideoRejectedError(f"the video has more frames than {MAX_DURATION_SECONDS} s can hold")
        if frame.width * frame.height > MAX_VIDEO_PIXELS:  # a stream may change its size after the header
            raise VideoRejectedError(
                f"a frame is {frame.width} x {frame.height}: more than {MAX_VIDEO_PIXELS:,} pixels"
            )
        if self.frames == 1:
            self._thumbnail(frame)
            if frame.rotation:
                video.set_display_rotation(frame.rotation)  # shown as the source was; thumbnail already upright
        pts = self._pts(frame)
        if pts / self.rate > MAX_DURATION_SECONDS:
            raise VideoRejectedError(f"the video runs longer than {MAX_DURATION_SECONDS} s")
        width, height = self.size
        try:
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
        except _UNREADABLE as exc:
            raise VideoRejectedError(f"a frame could not be converted ({type(exc).__name__})") from None
        # The encoder rescales from the frame's own time base: a decoded frame keeps the source stream's,
        # so both are set, or the pts would be read in the wrong unit.
        scaled.pts, scaled.time_base, scaled.duration = pts, 1 / self.rate, 1
        output.mux(video.encode(scaled))

    def _pts(self, frame: VideoFrame) -> int:
        """The frame's slot in the constant-rate output: its source time, so a variable-rate source keeps
        its sync with the audio, pushed to the next free slot so timestamps only ever grow."""
        pts = self.next_pts
        if (time := frame.time) is not None:
            if self.origin is None:
                self.origin = time
            pts = max(pts, round((time - self.origin) * self.rate))
        self.next_pts = pts + 1
        return pts

    def _audio(self, frame: AudioFrame, audio: AudioStream, output: OutputContainer) -> None:
        # Timestamps count the audio passed on, from zero like the video's: AAC wants a gapless track, and
        # the encoder's resampler (to its rate, layout and fltp) then keeps them in step.
        frame.pts, frame.time_base = round(self.audio_seconds * frame.sample_rate), Fraction(1, frame.sample_rate)
        self.audio_seconds += frame.samples / frame.sample_rate
        output.mux(audio.encode(frame))

    def _thumbnail(self, frame: VideoFrame) -> None:
        width, height = frame.width, frame.height
        if frame.rotation % 180:
            width, height = height, width
        width, height = thumbnail_size(width, height)
        stored = (height, width) if frame.rotation % 180 else (width, height)
        try:
            image = frame.reformat(width=stored[0], height=stored[1], format="rgb24").to_image()
        except _UNREADABLE as exc:
            raise VideoRejectedError(f"a frame could not be converted ({type(exc).__name__})") from None
        if frame.rotation:
            image = image.rotate(frame.rotation, expand=True)  # counter-clockwise, as PyAV reports it
        out = io.BytesIO()
        image.save(out, format="PNG")
        self.thumbnail = out.getvalue()
        self.thumbnail_size = {"width": image.width, "height": image.height}

    def _check_complete(self, container: InputContainer, stream: VideoStream) -> None:
        """A file cut short still demuxes and decodes up to its cut: its frames then end well before the
        duration its headers declare. (An MPEG-TS declares none: one cut short is only a shorter stream.)"""
        decoded = float(self.next_pts / self.rate)
        if stream.duration and stream.time_base:
            declared = float(stream.duration * stream.time_base)
        elif container.duration:
            # The container's duration covers all its streams: the audio may run past the video.
            declared, decoded = container.duration / av.time_base, max(decoded, self.audio_seconds)
        else:
            return
        if declared - decoded > max(0.25, declared * 0.05):
            raise VideoRejectedError(
                f"the video stops after {decoded:.2f} s of the {declared:.2f} s it declares (a truncated file?)"
            )


def _opened(data: bytes, kind: str) -> InputContainer:
    return av.open(io.BytesIO(data), mode="r", format=DEMUXERS[kind])


def _mp4_output(out: io.BytesIO) -> OutputContainer:
    """An MP4 muxer writing into `out`, with faststart: the moov atom moved before the media data when it
    closes, so a player starts before the download ends.

    To move it, FFmpeg re-opens its output by URL for reading (libavformat's ff_format_shift_data), which
    fails on a file object ("No such file or directory: '<none>'"). `io_open` answers that one re-open with a
    copy of what was written so far, which FFmpeg flushes just before: all the shift reads. This keeps the
    job in memory (no temporary file on the worker's disk) at the cost of one copy of the output."""

    def reopened(url: str, flags: int, _options: dict[str, str]) -> io.BytesIO:
        if flags != _AVIO_FLAG_READ:
            raise PermissionError(f"the MP4 muxer may only re-read its own output, not open {url!r} ({flags})")
        return io.BytesIO(out.getvalue())

    return av.open(out, mode="w", format="mp4", options={"movflags": "faststart"}, io_open=reopened)


def _info(container: InputContainer) -> VideoInfo:
    stream = _video_stream(container)
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise VideoRejectedError("the video stream has no picture size")
    if width * height > MAX_VIDEO_PIXELS:
        raise VideoRejectedError(f"the video is {width} x {height}: more than {MAX_VIDEO_PIXELS:,} pixels a frame")
    duration = _declared_duration(container, stream)
    if duration is not None and duration > MAX_DURATION_SECONDS:
        raise VideoRejectedError(f"the video is {duration:.0f} s long: more than {MAX_DURATION_SECONDS} s")
    frames = stream.frames
    if not frames or duration is None:
        frames, counted = _counted(container, stream)
        duration = counted if duration is None else duration
        if duration > MAX_DURATION_SECONDS:
            raise VideoRejectedError(f"the video is {duration:.0f} s long: more than {MAX_DURATION_SECONDS} s")
    if not frames:
        raise VideoRejectedError("the video stream has no frames")
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else frames / duration if duration else 0.0
    return VideoInfo(
        container=container.format.name,
        codec=stream.codec_context.name,
        width=width,
        height=height,
        fps=round(fps, 3),
        duration=round(duration, 3),
        frames=frames,
        audio_codec=container.streams.audio[0].codec_context.name if container.streams.audio else None,
    )


def _video_stream(container: InputContainer) -> VideoStream:
    # An MP4's cover art is a one-picture "video" stream too: never the video.
    streams = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if not streams:
        raise VideoRejectedError("the file has no video stream")
    return streams[0]


def _declared_duration(container: InputContainer, stream: VideoStream) -> float | None:
    """Seconds, from the video stream's header, else the container's (which covers all its streams)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _counted(container: InputContainer, stream: VideoStream) -> tuple[int, float]:
    """Frames and seconds from the video packets, for containers without an index (WebM, MPEG-TS): one
    packet a shown frame, also for VP8/VP9, whose hidden frames travel inside the next shown one."""
    frames, first, end = 0, None, 0.0
    for packet in container.demux(stream):
        if not packet.size:
            continue
        frames += 1
        if packet.pts is not None and packet.time_base:
            start = float(packet.pts * packet.time_base)
            first = start if first is None else min(first, start)
            end = max(end, start + float((packet.duration or 0) * packet.time_base))
    return frames, (end - first if first is not None else 0.0)


def _frame_rate(stream: VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate
    if not rate or not 0 < rate <= _MAX_FRAME_RATE:
        return Fraction(25)
    # An average over a variable-rate file can be any fraction: a small denominator keeps the time base sane.
    return Fraction(rate).limit_denominator(1001)


def _audio_stream(output: OutputContainer, source: AudioStream) -> AudioStream:
    rate = source.rate if source.rate in _AAC_RATES else 48_000
    audio = output.add_stream("aac", rate=rate, bit_rate=_AAC_BIT_RATE)
    audio.layout = "mono" if source.channels == 1 else "stereo"  # more channels are mixed down
    return audio


def _decoded(
    container: InputContainer, video: VideoStream, audio: AudioStream | None
) -> Iterator[VideoFrame | AudioFrame]:
    """The streams' frames in file order. A decoding error becomes VideoRejectedError; errors raised by the
    caller while a frame is out (encoding, cancelling) pass through untouched: they are not the file's."""
    streams = (video,) if audio is None else (video, audio)
    try:
        for packet in container.demux(streams):
            for frame in packet.decode():  # the empty packet that ends each stream flushes its decoder
                if isinstance(frame, VideoFrame | AudioFrame):
                    yield frame
    except _UNREADABLE as exc:
        raise VideoRejectedError(f"the video could not be decoded ({type(exc).__name__})") from None
