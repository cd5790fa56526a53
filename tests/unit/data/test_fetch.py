"""fetch_movielens with a local recbole wheel built in tmp_path (no network)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from toolkit.data import fetch_movielens, load_movielens
from toolkit.data.movielens import ATOMIC_FILES
from toolkit.errors import DataError

MEMBER_DIR = "recbole/dataset_example/ml-100k/"


def _wheel(path: Path, files: dict[str, str]) -> Path:
    """A zip shaped like recbole-1.2.1-py3-none-any.whl holding ``files`` under the data set folder."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        for name, text in files.items():
            zf.writestr(MEMBER_DIR + name, text)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def good_wheel(tmp_path: Path, movielens_files: SimpleNamespace) -> Path:
    return _wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", movielens_files.atomic_texts())


def test_fetch_extracts_the_three_atomic_files_from_the_wheel(tmp_path: Path, good_wheel: Path, movielens_files) -> None:
    dest = tmp_path / "cache" / "ml-100k"

    assert fetch_movielens(dest, wheel=good_wheel) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(ATOMIC_FILES)
    for name, text in movielens_files.atomic_texts().items():
        assert (dest / name).read_text(encoding="utf-8") == text
    assert len(load_movielens(dest)) == len(movielens_files.ratings)
    assert [p.name for p in dest.parent.iterdir()] == ["ml-100k"]  # no temporary folders left


def test_fetch_is_a_no_op_when_the_folder_already_loads(tmp_path: Path, good_wheel: Path) -> None:
    dest = fetch_movielens(tmp_path / "ml-100k", wheel=good_wheel)
    before = _snapshot(dest)
    mtimes = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}

    # a wheel that could not be read at all proves that nothing is extracted
    assert fetch_movielens(dest, wheel=tmp_path / "no-such.whl") == dest
    assert _snapshot(dest) == before
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == mtimes


def test_fetch_replaces_an_incomplete_folder(tmp_path: Path, good_wheel: Path) -> None:
    dest = tmp_path / "ml-100k"
    dest.mkdir()
    (dest / "ml-100k.inter").write_text("half a file")

    fetch_movielens(dest, wheel=good_wheel)
    assert len(load_movielens(dest)) == 8


def test_wheel_lacking_the_files_is_a_data_error_and_the_previous_folder_is_untouched(
    tmp_path: Path, good_wheel: Path, movielens_files
) -> None:
    dest = fetch_movielens(tmp_path / "ml-100k", wheel=good_wheel)
    before = _snapshot(dest)
    texts = movielens_files.atomic_texts()
    del texts["ml-100k.item"]
    bad = _wheel(tmp_path / "recbole-broken.whl", texts)

    with pytest.raises(DataError, match="not a recbole wheel holding recbole/dataset_example/ml-100k/") as info:
        fetch_movielens(dest, wheel=bad, force=True)
    assert "ml-100k.item" in str(info.value)
    assert _snapshot(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "recbole-1.2.1-py3-none-any.whl", "recbole-broken.whl"]


def test_wheel_with_a_truncated_file_is_refused_and_nothing_is_installed(tmp_path: Path, movielens_files) -> None:
    texts = movielens_files.atomic_texts()
    texts["ml-100k.inter"] = texts["ml-100k.inter"][:-12]  # cut inside the last line
    bad = _wheel(tmp_path / "recbole-truncated.whl", texts)
    dest = tmp_path / "ml-100k"

    with pytest.raises(DataError, match=r"ml-100k\.inter:9: expected 4 fields"):
        fetch_movielens(dest, wheel=bad)
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["recbole-truncated.whl"]


def test_a_file_that_is_not_a_zip_is_a_data_error(tmp_path: Path) -> None:
    bogus = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    bogus.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match="not a recbole wheel"):
        fetch_movielens(tmp_path / "ml-100k", wheel=bogus)
    assert not (tmp_path / "ml-100k").exists()


def test_a_missing_local_wheel_is_a_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"recbole wheel .*typo\.whl does not exist"):
        fetch_movielens(tmp_path / "ml-100k", wheel=tmp_path / "typo.whl")
    assert list(tmp_path.iterdir()) == []
