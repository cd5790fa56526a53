"""Reading MovieLens-100K in RecBole's atomic layout and GroupLens' own layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.data import load_movielens
from toolkit.data.movielens import ATOMIC_FILES, GROUPLENS_FILES, GROUPLENS_GENRES, Item, User, detect_layout
from toolkit.errors import DataError


def _cut_mid_line(file: Path, line: int, keep_chars: int) -> None:
    """Truncate ``file`` inside 1-based ``line``, keeping its first ``keep_chars`` characters."""
    data = file.read_bytes()
    lines = data.split(b"\n")
    offset = sum(len(x) + 1 for x in lines[: line - 1])
    file.write_bytes(data[: offset + keep_chars])


def test_both_layouts_load_to_the_same_users_items_and_ratings(tiny_atomic_dir: Path, tiny_grouplens_dir: Path) -> None:
    atomic = load_movielens(tiny_atomic_dir)
    grouplens = load_movielens(tiny_grouplens_dir)

    assert (atomic.layout, grouplens.layout) == ("atomic", "grouplens")
    assert atomic.users == grouplens.users
    assert atomic.items == grouplens.items
    for column in ("user_ids", "item_ids", "ratings", "timestamps"):
        a, g = getattr(atomic, column), getattr(grouplens, column)
        assert a.dtype == g.dtype and np.array_equal(a, g), column


def test_loaded_tables_hold_the_file_contents(tiny_atomic_dir: Path) -> None:
    ml = load_movielens(tiny_atomic_dir)

    assert len(ml) == 8
    assert ml.user_ids.tolist() == ["1", "1", "2", "2", "3", "3", "4", "1"]
    assert ml.item_ids.tolist()[:3] == ["1", "2", "1"]
    assert ml.ratings.dtype == np.float32 and ml.ratings.tolist() == [5, 3, 4, 2, 1, 4, 5, 4]
    assert ml.timestamps.dtype == np.int64 and ml.timestamps[0] == 874965758
    assert ml.users["4"] == User(33, "F", "educator", "T8H1N")
    assert ml.items["1"] == Item(1995, ("Animation", "Children's", "Comedy"))
    assert ml.items["3"].genres == ("Action", "Adventure", "Romance", "Sci-Fi", "War")


def test_grouplens_item_file_is_read_as_latin1(tiny_grouplens_dir: Path) -> None:
    raw = (tiny_grouplens_dir / "u.item").read_bytes()
    assert "Misérables".encode("latin-1") in raw  # a byte that is not valid UTF-8

    assert load_movielens(tiny_grouplens_dir).items["2"] == Item(1995, ("Drama", "Musical"))


def test_grouplens_genre_names_follow_u_genre_when_present(tiny_grouplens_dir: Path) -> None:
    # u.genre lists "name|index"; reversing the names must reverse which flag means what.
    names = list(GROUPLENS_GENRES)
    lines = [f"{name}|{18 - i}" for i, name in enumerate(names)]
    (tiny_grouplens_dir / "u.genre").write_text("\n".join(lines) + "\n\n", encoding="latin-1")

    item = load_movielens(tiny_grouplens_dir).items["267"]  # flag 0 set -> now named by index 0 = "Western"
    assert item.genres == ("Western",)


def test_recbole_unparsed_years_fall_back_to_the_title_or_unknown(tiny_atomic_dir: Path) -> None:
    items = load_movielens(tiny_atomic_dir).items

    assert items["267"].release_year is None  # year "unkonwn" [sic], title "unkonwn"
    assert items["1412"].release_year == 1995  # year "V", title ends in "(1995)"


def test_grouplens_empty_release_date_is_an_unknown_year(tiny_grouplens_dir: Path) -> None:
    assert load_movielens(tiny_grouplens_dir).items["267"].release_year is None


def test_layout_is_detected_from_the_file_names(tiny_atomic_dir: Path, tiny_grouplens_dir: Path) -> None:
    assert detect_layout(tiny_atomic_dir) == "atomic"
    assert detect_layout(tiny_grouplens_dir) == "grouplens"


def test_missing_folder_is_a_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        load_movielens(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    assert info.value.hint is not None


@pytest.mark.parametrize("missing", ATOMIC_FILES)
def test_load_rejects_atomic_folder_naming_the_missing_file(tiny_atomic_dir: Path, missing: str) -> None:
    (tiny_atomic_dir / missing).unlink()
    with pytest.raises(DataError, match=rf"missing {missing}") as info:
        load_movielens(tiny_atomic_dir)
    others = [n for n in ATOMIC_FILES if n != missing]
    assert all(f"missing {n}" not in str(info.value) for n in others)


@pytest.mark.parametrize("missing", GROUPLENS_FILES)
def test_load_rejects_grouplens_folder_naming_the_missing_file(tiny_grouplens_dir: Path, missing: str) -> None:
    (tiny_grouplens_dir / missing).unlink()
    with pytest.raises(DataError, match=rf"missing {missing}"):
        load_movielens(tiny_grouplens_dir)


def test_empty_folder_lists_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_movielens(tmp_path)
    assert all(name in str(info.value) for name in (*ATOMIC_FILES, *GROUPLENS_FILES))


def test_load_rejects_truncated_u_data_naming_file_and_line(tiny_grouplens_dir: Path) -> None:
    _cut_mid_line(tiny_grouplens_dir / "u.data", line=3, keep_chars=4)  # "2\t1\t" of "2\t1\t4\t888550871"
    with pytest.raises(DataError, match=r"u\.data:3: expected 4 fields") as info:
        load_movielens(tiny_grouplens_dir)
    assert "truncated" in str(info.value)


def test_load_rejects_truncated_atomic_interactions_naming_file_and_line(tiny_atomic_dir: Path) -> None:
    _cut_mid_line(tiny_atomic_dir / "ml-100k.inter", line=5, keep_chars=2)  # line 1 is the header
    with pytest.raises(DataError, match=r"ml-100k\.inter:5: expected 4 fields"):
        load_movielens(tiny_atomic_dir)


def test_load_rejects_truncated_u_item_naming_file_and_line(tiny_grouplens_dir: Path) -> None:
    _cut_mid_line(tiny_grouplens_dir / "u.item", line=4, keep_chars=30)
    with pytest.raises(DataError, match=r"u\.item:4: expected 24 fields"):
        load_movielens(tiny_grouplens_dir)


def test_load_rejects_non_numeric_rating_naming_file_line_and_value(tiny_grouplens_dir: Path) -> None:
    path = tiny_grouplens_dir / "u.data"
    lines = path.read_text().splitlines()
    lines[1] = "1\t2\tfive\t876893171"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"u\.data:2: field 'rating' is 'five', expected a number"):
        load_movielens(tiny_grouplens_dir)


def test_load_rejects_rating_outside_one_to_five(tiny_atomic_dir: Path) -> None:
    path = tiny_atomic_dir / "ml-100k.inter"
    path.write_text(path.read_text().replace("1\t2\t3\t876893171", "1\t2\t7\t876893171"))
    with pytest.raises(DataError, match=r"ml-100k\.inter:3: rating '7' is outside 1\.\.5"):
        load_movielens(tiny_atomic_dir)


def test_load_rejects_ratings_of_users_missing_from_a_truncated_u_user(tiny_grouplens_dir: Path) -> None:
    path = tiny_grouplens_dir / "u.user"
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")  # drops user 4, cut at a line end
    with pytest.raises(DataError, match=r"1 rated user ids are missing from the user file \(e\.g\. 4\)") as info:
        load_movielens(tiny_grouplens_dir)
    assert "truncated" in str(info.value)


def test_load_rejects_ratings_of_items_missing_from_the_item_file(tiny_atomic_dir: Path) -> None:
    path = tiny_atomic_dir / "ml-100k.item"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("1412\t")) + "\n")
    with pytest.raises(DataError, match=r"rated item ids are missing from the item file \(e\.g\. 1412\)"):
        load_movielens(tiny_atomic_dir)


def test_load_rejects_an_atomic_file_with_a_wrong_header(tiny_atomic_dir: Path) -> None:
    path = tiny_atomic_dir / "ml-100k.user"
    path.write_text(path.read_text().replace("age:token", "age:float", 1))
    with pytest.raises(DataError, match=r"ml-100k\.user: header is .*age:float.* expected .*age:token"):
        load_movielens(tiny_atomic_dir)


def test_load_rejects_a_folder_without_ratings(tiny_atomic_dir: Path) -> None:
    (tiny_atomic_dir / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
    with pytest.raises(DataError, match="no ratings found"):
        load_movielens(tiny_atomic_dir)


def test_real_movielens_100k_has_the_published_sizes(movielens_dir: Path) -> None:
    ml = load_movielens(movielens_dir)

    assert len(ml) == 100_000
    assert len(set(ml.user_ids.tolist())) == len(ml.users) == 943
    assert len(set(ml.item_ids.tolist())) == len(ml.items) == 1682
    assert set(np.unique(ml.ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert (ml.ratings >= 4).mean() == pytest.approx(0.55, abs=0.01)
    assert ml.items["267"].release_year is None
    assert ml.items["1412"].release_year == 1995
