"""Atomic writes: a folder or file is replaced whole, or not at all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from toolkit._io import atomic_directory, atomic_write_json, atomic_write_text


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def target(tmp_path: Path) -> Path:
    folder = tmp_path / "parent" / "target"
    (folder / "sub").mkdir(parents=True)
    (folder / "old.txt").write_text("old")
    (folder / "sub" / "kept.txt").write_text("old too")
    return folder


def test_atomic_directory_replaces_the_target_when_the_block_succeeds(target: Path) -> None:
    with atomic_directory(target) as tmp:
        assert tmp != target and tmp.parent == target.parent and list(tmp.iterdir()) == []
        (tmp / "new.txt").write_text("new")
        assert _tree(target) == {"old.txt": "old", "sub/kept.txt": "old too"}  # untouched until the end

    assert _tree(target) == {"new.txt": "new"}
    assert [p.name for p in target.parent.iterdir()] == ["target"]  # no temporary or old folders left


def test_atomic_directory_creates_a_missing_target_and_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out"
    with atomic_directory(target) as tmp:
        (tmp / "x.json").write_text("{}")
    assert _tree(target) == {"x.json": "{}"}


def test_atomic_directory_leaves_the_target_untouched_when_the_block_raises(target: Path) -> None:
    before = _tree(target)
    with pytest.raises(RuntimeError, match="half-way"), atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("partial")
        raise RuntimeError("failed half-way")

    assert _tree(target) == before
    assert [p.name for p in target.parent.iterdir()] == ["target"]


def test_atomic_directory_creates_nothing_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "out") as tmp:
        (tmp / "x").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_text_writes_utf8_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "note.txt"
    atomic_write_text(path, "Misérables\n")
    assert path.read_bytes() == "Misérables\n".encode()


def test_atomic_write_text_replaces_an_existing_file_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("a much longer old content than the new one")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["note.txt"]


def test_a_failed_atomic_write_text_keeps_the_old_file_and_removes_its_temporary(tmp_path: Path) -> None:
    path = tmp_path / "note.txt"
    path.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "half \ud800 written")  # a lone surrogate cannot be encoded as UTF-8
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["note.txt"]


def test_atomic_write_json_writes_indented_json_with_a_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"b": 1, "a": [1.5, "x"]})
    text = path.read_text()
    assert text.endswith("}\n") and '\n  "b": 1,' in text
    assert list(json.loads(text)) == ["b", "a"]  # key order kept


def test_a_failed_atomic_write_json_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError, match="not JSON serializable"):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_artifacts_get_the_mode_of_a_plain_write_not_tempfiles_owner_only(tmp_path):
    """A Triton server running as another user must be able to read what the toolkit writes."""
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.pbtxt", "name: 'm'\n")
        with atomic_directory(tmp_path / "model") as d:
            (d / "1").mkdir()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "config.pbtxt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
