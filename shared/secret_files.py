"""Secrets kept in files: written owner-only in one step, and read only from files nobody else can read."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class ExposedSecretError(RuntimeError):
    """A secret file others can read: not used, as ssh refuses such a key."""


def read_private(path: Path) -> str | None:
    """The text of `path`, None if there is none; refused if group or others may read it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if stat.S_IMODE(mode) & 0o077:
        raise ExposedSecretError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 it")
    return path.read_text()


def create_private(path: Path, text: str) -> str:
    """Write `text` to `path` (mode 0600) unless a file is there already; either way, what `path` holds.
    A reader never sees half of it, and of two processes creating it at once one wins and both read that."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover partial file keeps its old mode through O_CREAT
    with os.fdopen(fd, "w") as file:
        file.write(text)
    try:
        os.link(partial, path)  # fails if it exists: the first one stays
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    held = read_private(path)
    assert held is not None
    return held
