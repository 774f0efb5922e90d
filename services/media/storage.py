"""Where media files live: a small interface, a local directory behind it now (an object store can
replace it), and the keys media makes for them (never a client): a request's own upload under
`incoming/<a new id>` until its job has an outcome, a made record's file and thumbnail under
`<user>/<media id>/`."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

KEY = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
INCOMING = "incoming/"


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str) -> BinaryIO: ...
    def writer(self, key: str) -> Writer: ...
    def delete(self, key: str) -> None: ...
    def remove_tree(self, prefix: str) -> None:
        """Every key under `prefix` (a folder), and the folder."""
        ...

    def untouched(self, prefix: str, seconds: float) -> Iterator[str]:
        """The keys under `prefix` (a folder) not written for `seconds`, half-written ones too."""
        ...


class Writer(Protocol):
    """A file written piece by piece (an upload as it arrives): nobody sees it under its key before `commit`,
    and `abort` leaves nothing."""

    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not KEY.fullmatch(key) or ".." in key.split("/"):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        """Write whole or not at all: a reader never sees half a file."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def writer(self, key: str) -> LocalWriter:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return LocalWriter(path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    def untouched(self, prefix: str, seconds: float) -> Iterator[str]:
        folder = self._path(prefix.rstrip("/"))
        before = time.time() - seconds
        if not folder.is_dir():
            return
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file() and entry.stat().st_mtime < before:
                    yield f"{prefix}{entry.name}"


class LocalWriter:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._partial = path.with_name(f".{path.name}.partial")
        self._file = self._partial.open("wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        self._file.close()
        os.replace(self._partial, self._path)

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


def incoming_key(name: str) -> str:
    """Where a request's own upload waits for its job's outcome."""
    return f"{INCOMING}{name}"


def made_keys(user_id: str, media_id: str, extension: str) -> tuple[str, str]:
    """Where a made record's file and its PNG thumbnail are kept."""
    base = f"{user_id}/{media_id}"
    return f"{base}/original.{extension}", f"{base}/thumbnail.png"


async def drop_upload(storage: Storage, input_key: str) -> None:
    """A job's own upload, once the job has an outcome. A job that works on a source image reads that
    image's file, which stays: it is a record's."""
    if input_key.startswith(INCOMING):
        await asyncio.to_thread(storage.delete, input_key)
