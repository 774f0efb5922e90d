"""A multipart upload read as it arrives: the file part goes to storage piece by piece (hashed on the way,
both off the event loop), its size limit is enforced while it streams, and the text fields beside it
are kept. Nothing of a body is ever held whole in memory, and a body that ends badly (too large, cut
off, malformed) leaves nothing in storage."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from services.media.domain import ReceivedFile
from services.media.storage import Storage, Writer

FILE_FIELD = "file"
FIELD_LIMIT = 16 * 1024  # a text field (title, description) and its headers
MAX_FIELDS = 8
# Received bytes are handed to the writing thread this many at a time: few thread hops, little memory.
FLUSH_BYTES = 1024 * 1024
HEAD_BYTES = 4096  # kept in memory: what a signature check (video.sniff) reads


class MalformedUploadError(ValueError):
    """Not a multipart body this route takes: a 400 (or 422 for a missing file), nothing stored."""


class UploadTooLargeError(Exception):
    """The file passed its limit while it streamed: a 413, the partial file removed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than this endpoint's limit of {limit} bytes.")
        self.limit = limit


@dataclass
class _Part:
    name: str = ""
    disposition: bytes = b""
    is_file: bool = False
    data: bytearray = field(default_factory=bytearray)


class _FileSink:
    """The file part's bytes, batched, written and hashed in a worker thread."""

    def __init__(self, writer: Writer, limit: int) -> None:
        self._writer = writer
        self._limit = limit
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.size = 0
        self.head = b""

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self._limit:
            raise UploadTooLargeError(self._limit)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        self._pending.append(data)
        self._pending_size += len(data)

    async def flush(self, *, all_of_it: bool = False) -> None:
        if self._pending and (all_of_it or self._pending_size >= FLUSH_BYTES):
            batch = b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            await asyncio.to_thread(self._write, batch)

    def _write(self, batch: bytes) -> None:
        self._hash.update(batch)  # hashlib lets go of the GIL for large updates
        self._writer.write(batch)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class _Reader:
    """python-multipart's callbacks, gathering what the async loop then writes."""

    def __init__(self, sink: _FileSink) -> None:
        self.sink = sink
        self.fields: dict[str, str] = {}
        self.files = 0
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_val,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }

    def _begin(self) -> None:
        self._part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._bound(len(self._header_name))

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._bound(len(self._header_value))

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._part.disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._part.disposition)
        if b"name" not in options:
            raise MalformedUploadError('a part without a Content-Disposition "name"')
        self._part.name = options[b"name"].decode("utf-8", "replace")
        self._part.is_file = b"filename" in options
        if self._part.is_file:
            self.files += 1
            if self.files > 1 or self._part.name != FILE_FIELD:
                raise MalformedUploadError(f'one file is taken, as the part named "{FILE_FIELD}"')
        elif len(self.fields) >= MAX_FIELDS:
            raise MalformedUploadError(f"more than {MAX_FIELDS} fields")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part.is_file:
            self.sink.add(data[start:end])
        else:
            self._part.data += data[start:end]
            self._bound(len(self._part.data))

    def _end(self) -> None:
        if not self._part.is_file:
            try:
                self.fields[self._part.name] = self._part.data.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedUploadError(f"the field {self._part.name!r} is not UTF-8") from None

    @staticmethod
    def _bound(size: int) -> None:
        if size > FIELD_LIMIT:
            raise MalformedUploadError(f"a field or part header longer than {FIELD_LIMIT} bytes")


async def receive(
    body: AsyncIterator[bytes], content_type: str, storage: Storage, key: str, limit: int
) -> tuple[ReceivedFile, dict[str, str]]:
    """Read a multipart/form-data body into storage under `key` (its file part, at most `limit` bytes) and
    answer what was received with the text fields. Whatever goes wrong, nothing is left under `key`."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise MalformedUploadError("the body must be multipart/form-data (with a boundary)")
    writer = await asyncio.to_thread(storage.writer, key)
    sink = _FileSink(writer, limit)
    reader = _Reader(sink)
    try:
        parser = MultipartParser(options[b"boundary"], reader.callbacks())  # type: ignore[arg-type]
        async for chunk in body:
            parser.write(chunk)
            await sink.flush()
        parser.finalize()
        if reader.files != 1:
            raise MalformedUploadError(f'no file: send it as the part named "{FILE_FIELD}"')
        await sink.flush(all_of_it=True)
        await asyncio.to_thread(writer.commit)
    except MultipartParseError as exc:
        await asyncio.to_thread(writer.abort)
        raise MalformedUploadError(f"not a well-formed multipart body ({exc})") from None
    except BaseException:
        with anyio.CancelScope(shield=True):  # a client gone cancels us: clean up all the same
            await asyncio.to_thread(writer.abort)
        raise
    return ReceivedFile(key=key, size=sink.size, sha256=sink.sha256, head=sink.head), reader.fields
