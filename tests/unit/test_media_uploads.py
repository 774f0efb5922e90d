"""A multipart upload read as it streams (services/media/uploads.py): the file lands in storage whole with
its hash, or not at all, whatever way the body goes wrong."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from services.media import application
from services.media.application import Credit, MediaLibrary
from services.media.domain import InsufficientCreditsError, UploadsBusyError
from services.media.storage import LocalStorage
from services.media.uploads import MalformedUploadError, UploadTooLargeError, receive

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(file: bytes | None, **fields: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    if file is not None:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.bin"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + file + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


async def chunks(body: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def stored(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_the_file_goes_to_storage_with_its_size_and_hash_and_the_fields_beside_it(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: more than one flush
    body = multipart(data, title="Sea", description="blue")
    received, fields = await receive(chunks(body, 7_000), CONTENT_TYPE, LocalStorage(tmp_path), "incoming/a", 10**7)
    assert (received.size, received.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert received.head == data[:4096]
    assert fields == {"title": "Sea", "description": "blue"}
    assert (tmp_path / "incoming" / "a").read_bytes() == data
    assert stored(tmp_path) == ["incoming/a"]


async def test_a_file_past_the_limit_stops_there_and_leaves_nothing(tmp_path: Path) -> None:
    body = multipart(b"x" * 300_000)
    with pytest.raises(UploadTooLargeError, match="limit of 200000 bytes"):
        await receive(chunks(body), CONTENT_TYPE, LocalStorage(tmp_path), "incoming/a", 200_000)
    assert stored(tmp_path) == []


async def test_a_body_cut_off_midway_leaves_nothing(tmp_path: Path) -> None:
    class ClientGone(Exception):
        pass

    async def cut() -> AsyncIterator[bytes]:
        body = multipart(b"y" * 3_000_000)
        yield body[:2_000_000]
        raise ClientGone

    with pytest.raises(ClientGone):
        await receive(cut(), CONTENT_TYPE, LocalStorage(tmp_path), "incoming/a", 10**7)
    assert stored(tmp_path) == []


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (multipart(None, title="no file"), CONTENT_TYPE, "no file"),
        (multipart(b"x") + b"", "application/json", "multipart/form-data"),
        (b"--b0undary\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b0undary--\r\n", CONTENT_TYPE, "name"),
        (multipart(b"x", title="t" * 20_000), CONTENT_TYPE, "longer than"),
        (b"--b0undary\r\nnot a header line\r\n\r\n", CONTENT_TYPE, "well-formed"),
    ],
)
async def test_what_is_not_one_upload_is_refused_and_leaves_nothing(
    tmp_path: Path, body: bytes, content_type: str, reason: str
) -> None:
    with pytest.raises(MalformedUploadError, match=reason):
        await receive(chunks(body), content_type, LocalStorage(tmp_path), "incoming/a", 10**7)
    assert stored(tmp_path) == []


async def test_two_files_are_refused(tmp_path: Path) -> None:
    one = multipart(b"first")
    body = one[: -len(f"--{BOUNDARY}--\r\n")] + multipart(b"second")
    with pytest.raises(MalformedUploadError, match="one file"):
        await receive(chunks(body), CONTENT_TYPE, LocalStorage(tmp_path), "incoming/a", 10**7)
    assert stored(tmp_path) == []


async def test_a_process_receives_at_most_its_uploads_at_once_and_a_short_user_is_refused_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(application, "UPLOAD_WAIT_SECONDS", 0.2)

    async def balances(user_id: str) -> Credit | None:
        return {"poor": Credit(balance=3, available=0)}.get(user_id)

    # The pool and relay are not touched before a body is received: nothing is recorded yet.
    library = MediaLibrary(cast(Any, None), cast(Any, None), LocalStorage(tmp_path), balances=balances, max_uploads=1)
    async with library.receiving("rich", "image_upload"):
        with pytest.raises(UploadsBusyError):
            async with library.receiving("rich", "image_upload"):
                pass
    async with library.receiving("rich", "image_upload"):
        pass  # room again once the first is received
    with pytest.raises(InsufficientCreditsError) as refused:
        async with library.receiving("poor", "video_processing"):
            pass
    assert (refused.value.job.cost, refused.value.job.available, refused.value.job.balance) == (2, 0, 3)
    async with library.receiving("rich", "image_upload"):
        pass  # a refusal gave its room back
