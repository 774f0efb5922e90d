"""Uploads stream (services/media/uploads.py), measured from outside over real HTTP: a 150 MB upload of a
user who cannot pay is refused before its body is read; one of a paying user is stored with its hash;
neither grows media's peak memory by 40 MB; an upload cut off midway leaves no file and no job."""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg

from shared.testing.waiting import wait_until
from tests.conftest import System
from tests.e2e.auth_support import bearer
from tests.e2e.convergence import assert_converged, welcomed

MB = 1024 * 1024
SIZE = 150 * MB
BOUNDARY = "creditstream-upload-test"
# An ISO BMFF signature (media's door check); the rest does not decode, so the worker fails the job.
SIGNATURE = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
PEAK_GROWTH_LIMIT_MB = 40


def _framing() -> tuple[bytes, bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\nbig\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode()


def _content(chunk: int = MB) -> Iterator[bytes]:
    """150 MB made as it is sent (never whole in this process either): the signature, then a pattern."""
    yield SIGNATURE
    sent, block = len(SIGNATURE), bytes(range(256)) * (chunk // 256)
    while sent < SIZE:
        piece = block[: min(chunk, SIZE - sent)]
        sent += len(piece)
        yield piece


def _digest() -> str:
    hashed = hashlib.sha256()
    for piece in _content():
        hashed.update(piece)
    return hashed.hexdigest()


def _headers(token: str, length: int) -> dict[str, str]:
    return {
        **bearer(token), "Idempotency-Key": str(uuid.uuid4()), "Content-Length": str(length),
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }  # fmt: skip


def _length() -> int:
    head, tail = _framing()
    return len(head) + SIZE + len(tail)


class Peak:
    """Media's peak resident memory (VmHWM) over a span, from /proc: reset at the start (clear_refs 5),
    read at the end."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts again from what is resident now
        self.start_kb = self._status("VmHWM")

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise LookupError(key)

    def growth_mb(self) -> float:
        return (self._status("VmHWM") - self.start_kb) / 1024


def _incoming(system: System) -> set[str]:
    root = Path(system.env["DATA_DIR"]) / "media" / "incoming"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def _jobs(system: System, user_id: str) -> int:
    with psycopg.connect(system.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM media.jobs WHERE user_id = %s", (user_id,)).fetchone()
    return int(row[0]) if row else 0


def _spend_all(system: System, token: str, user_id: str) -> None:
    url = f"{system.url('ledger')}/api/accounts/{user_id}/debits"
    headers = {**bearer(token), "Idempotency-Key": str(uuid.uuid4())}
    assert httpx.post(url, json={"amount": 10}, headers=headers, timeout=30).status_code == 201


def _raw(system: System, request: bytes, body: bytes = b"") -> socket.socket:
    where = urlsplit(system.url("media"))
    conn = socket.create_connection((where.hostname, where.port), timeout=30)
    conn.sendall(request + body)
    return conn


def _request_head(token: str, **extra: str) -> bytes:
    lines = ["POST /api/videos HTTP/1.1", "Host: media"]
    lines += [f"{k}: {v}" for k, v in {**_headers(token, _length()), **extra}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(conn: socket.socket) -> tuple[int, dict[str, object]]:
    received = b""
    while b"\r\n\r\n" not in received:
        received += conn.recv(65536) or b"\0"
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return status, json.loads(body)


def _send_all(system: System, token: str) -> httpx.Response:
    head, tail = _framing()
    body = (piece for part in ([head], _content(), [tail]) for piece in part)
    url = f"{system.url('media')}/api/videos"
    return httpx.post(url, content=body, headers=_headers(token, _length()), timeout=120)


def test_a_150_mb_upload_that_cannot_be_paid_is_refused_before_its_body_is_read(system: System) -> None:
    token, user_id = welcomed(system)
    _spend_all(system, token, user_id)
    before = _incoming(system)
    peak = Peak(system.services["media"].pid or 0)

    # A client that waits for a go-ahead (Expect: 100-continue) sends none of its body: the answer comes first.
    conn = _raw(system, _request_head(token, Expect="100-continue"))
    try:
        status, problem = _answer(conn)
    finally:
        conn.close()
    assert status == 402, problem
    assert (problem["amount"], problem["available"]) == (2, 0)

    # One that sends all 150 MB anyway gets the same answer; media reads none of it into memory.
    sent = _send_all(system, token)
    assert sent.status_code == 402, sent.text
    growth = peak.growth_mb()
    print(f"\nuploads: media's peak memory grew {growth:.1f} MB across a refused 150 MB upload")
    assert growth < PEAK_GROWTH_LIMIT_MB
    assert _incoming(system) <= before, "nothing stored"
    assert _jobs(system, user_id) == 0


def test_a_150_mb_upload_by_a_paying_user_is_stored_with_its_hash_in_bounded_memory(system: System) -> None:
    token, user_id = welcomed(system)
    peak = Peak(system.services["media"].pid or 0)
    sent = _send_all(system, token)
    assert sent.status_code == 202, sent.text
    growth = peak.growth_mb()
    print(f"\nuploads: media's peak memory grew {growth:.1f} MB across a stored 150 MB upload")
    assert growth < PEAK_GROWTH_LIMIT_MB
    record = sent.json()
    assert (record["title"], record["metadata"]["bytes"]) == ("big", SIZE)
    assert record["metadata"]["upload_sha256"] == _digest(), "the hash of what was sent"

    url = f"{system.url('media')}/api/videos/{record['id']}"
    wait_until(lambda: httpx.get(url, headers=bearer(token), timeout=30).json()["status"] == "FAILED",
               timeout=120, what="the worker opening the stored file (which does not decode)")  # fmt: skip
    failed = httpx.get(url, headers=bearer(token), timeout=30).json()
    assert "No such file" not in failed["metadata"]["error"], "the worker found the file whole where it was put"
    view = assert_converged(system, token, user_id)
    assert view["balance"] == 10, "a video that does not decode costs nothing: its hold was released"


def test_an_upload_cut_off_midway_leaves_no_file_and_no_job(system: System) -> None:
    token, user_id = welcomed(system)
    before = _incoming(system)
    head, _ = _framing()
    conn = _raw(system, _request_head(token), head + SIGNATURE + b"\0" * (20 * MB))
    conn.close()  # the client goes, 130 MB short

    wait_until(lambda: _incoming(system) <= before, timeout=20, what="the partial file removed")
    assert _jobs(system, user_id) == 0
    listed = httpx.get(f"{system.url('media')}/api/videos", headers=bearer(token), timeout=30).json()
    assert listed["videos"] == []
    view = assert_converged(system, token, user_id)
    assert view["balance"] == 10
