"""Local file storage: keys media makes, written whole, and nothing outside its root."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.media.storage import LocalStorage


def test_a_file_is_stored_read_back_and_deleted(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("u1/m1/original.png", b"\x89PNG...")
    assert storage.get("u1/m1/original.png") == b"\x89PNG..."
    assert [p.name for p in (tmp_path / "u1" / "m1").iterdir()] == ["original.png"]  # no partial file left
    storage.delete("u1/m1/original.png")
    storage.delete("u1/m1/original.png")  # again: nothing to do
    assert not (tmp_path / "u1" / "m1" / "original.png").exists()


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../b", "a//b", "", "a b", "a/\x00"])
def test_a_key_that_could_leave_the_root_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        LocalStorage(tmp_path).put(key, b"x")


def test_a_file_written_piece_by_piece_appears_whole_on_commit_and_not_at_all_on_abort(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    writer = storage.writer("incoming/a")
    writer.write(b"one ")
    assert not (tmp_path / "incoming" / "a").exists(), "nobody sees it before it is whole"
    writer.write(b"two")
    writer.commit()
    with storage.open("incoming/a") as stored:
        assert stored.read() == b"one two"
    aborted = storage.writer("incoming/b")
    aborted.write(b"half")
    aborted.abort()
    assert sorted(p.name for p in (tmp_path / "incoming").iterdir()) == ["a"], "nothing left of the aborted one"
