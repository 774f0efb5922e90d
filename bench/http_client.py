"""A lean HTTP/1.1 client: one keep-alive connection per virtual client, a request written as bytes,
the response read by its Content-Length.

On 2 cores the load generator competes with the servers it measures, so it does as little as it can:
no header parsing beyond the status and the length, no pooling, no redirects. httpx costs several
times more CPU per request. Every HTTP target gets this same client, so the ratios stay fair.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

CONTENT_LENGTH = b"\r\ncontent-length:"

# The bytes of one request, given a running request number (so each can carry its own key).
RequestFactory = Callable[[int], bytes]


class ProtocolError(Exception):
    """The server answered in a way this client does not read (no Content-Length, say)."""


def post(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """A POST with a JSON body, as bytes (build it once per request: a few microseconds)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(host: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Connection:
    """One keep-alive connection; `send` is one request and its whole response."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(request)
            head = await self._reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            start = head.lower().find(CONTENT_LENGTH)
            if start < 0:
                raise ProtocolError(f"no Content-Length in {head[:200]!r}")
            end = head.index(b"\r\n", start + 2)
            body = await self._reader.readexactly(int(head[start + len(CONTENT_LENGTH) : end]))
        except BaseException:
            # Whatever happened, the connection's state is unknown now: the next request opens a new one.
            await self.close()
            raise
        if b"\r\nconnection: close" in head.lower():
            await self.close()
        return status, body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
