"""MovieLens-100K readers for RecBole's atomic layout and GroupLens' own layout.

Two layouts of the same data set (Harper & Konstan, "The MovieLens Datasets", 2015):

* RecBole atomic files (shipped in the ``recbole==1.2.1`` wheel): ``ml-100k.inter``,
  ``ml-100k.user``, ``ml-100k.item``; tab-separated with a typed header such as
  ``user_id:token``. Genres are one space-separated ``class:token_seq`` field.
* GroupLens' release: ``u.data`` (tab-separated ``user item rating timestamp``),
  ``u.user`` and ``u.item`` (``|``-separated, latin-1; 19 genre flags at the end of
  each ``u.item`` row, named by ``u.genre`` or the standard list below).

Both are read into one :class:`MovieLens` value. Every problem (missing file, short
row, non-numeric field, a rating that names an unknown user or item) raises
:class:`~toolkit.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.errors import DataError

__all__ = ["User", "Item", "MovieLens", "load_movielens", "detect_layout", "ATOMIC_FILES", "GROUPLENS_FILES"]

ATOMIC_FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
GROUPLENS_FILES = ("u.data", "u.user", "u.item")

#: Genre flag order of GroupLens' ``u.item`` (from the data set's README / ``u.genre``).
GROUPLENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

_FIX_HINT = "re-run `make data` (or `tritonrec data fetch`) to obtain a fresh copy"


@dataclass(frozen=True)
class User:
    """Demographics of one user: age in years, gender ``M``/``F``, occupation, zip code."""

    age: int
    gender: str
    occupation: str
    zip_code: str


@dataclass(frozen=True)
class Item:
    """One movie: release year (``None`` when unknown) and its genres."""

    release_year: int | None
    genres: tuple[str, ...]


@dataclass
class MovieLens:
    """Ratings joined to nothing yet: the three tables of MovieLens-100K.

    Attributes:
        user_ids: (N,) object array of user id strings, one per rating.
        item_ids: (N,) object array of item id strings.
        ratings: (N,) float32, 1..5 stars.
        timestamps: (N,) int64, seconds since the Unix epoch.
        users: user id → :class:`User`.
        items: item id → :class:`Item`.
        layout: ``"atomic"`` or ``"grouplens"``, the layout it was read from.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    users: dict[str, User] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    layout: str = "atomic"

    def __len__(self) -> int:
        return len(self.ratings)


def detect_layout(path: Path) -> str:
    """Return ``"atomic"`` or ``"grouplens"`` for a folder holding MovieLens-100K.

    Raises:
        DataError: the folder is missing, or holds neither complete layout (the
            message lists which expected files are absent).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"MovieLens-100K folder {path} does not exist", hint=_FIX_HINT)
    for layout, names in (("atomic", ATOMIC_FILES), ("grouplens", GROUPLENS_FILES)):
        if all((path / n).is_file() for n in names):
            return layout
    found_atomic = [n for n in ATOMIC_FILES if (path / n).is_file()]
    found_grouplens = [n for n in GROUPLENS_FILES if (path / n).is_file()]
    names, found = (ATOMIC_FILES, found_atomic) if len(found_atomic) >= len(found_grouplens) else (GROUPLENS_FILES, found_grouplens)
    missing = [n for n in names if n not in found]
    raise DataError(
        f"{path} is not a complete MovieLens-100K folder: missing {', '.join(missing)} "
        f"(expected either {', '.join(ATOMIC_FILES)} or {', '.join(GROUPLENS_FILES)})",
        hint=_FIX_HINT,
    )


def load_movielens(path: Path) -> MovieLens:
    """Read MovieLens-100K from ``path`` in either layout (detected from the file names).

    Raises:
        DataError: missing or truncated files, malformed rows, ratings that reference
            users or items absent from the user/item files.
    """
    path = Path(path)
    layout = detect_layout(path)
    if layout == "atomic":
        ml = _load_atomic(path)
    else:
        ml = _load_grouplens(path)
    if len(ml) == 0:
        raise DataError(f"{path}: no ratings found", hint=_FIX_HINT)
    _check_references(path, ml)
    return ml


# --------------------------------------------------------------------------- readers


def _rows(file: Path, sep: str, n_fields: int, *, encoding: str = "utf-8", header: tuple[str, ...] | None = None):
    """Yield ``(line_number, fields)`` for each non-empty row, checking the field count."""
    try:
        text = file.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not {encoding} text ({exc.reason} at byte {exc.start})", hint=_FIX_HINT) from exc
    lines = text.split("\n")
    start = 0
    if header is not None:
        got = tuple(lines[0].rstrip("\r").split(sep)) if lines else ()
        if got != header:
            raise DataError(f"{file}: header is {sep.join(got)!r}, expected {sep.join(header)!r}", hint=_FIX_HINT)
        start = 1
    for i in range(start, len(lines)):
        line = lines[i].rstrip("\r")
        if not line:
            continue
        fields = line.split(sep)
        if len(fields) != n_fields:
            raise DataError(
                f"{file}:{i + 1}: expected {n_fields} fields separated by {sep!r}, got {len(fields)} (is the file truncated?)",
                hint=_FIX_HINT,
            )
        yield i + 1, fields


def _number(file: Path, line: int, name: str, value: str, kind: type):
    try:
        return kind(value)
    except ValueError:
        raise DataError(f"{file}:{line}: field {name!r} is {value!r}, expected a number", hint=_FIX_HINT) from None


def _interactions(file: Path, sep: str, header: tuple[str, ...] | None):
    users, items, ratings, stamps = [], [], [], []
    for line, (u, i, r, t) in _rows(file, sep, 4, header=header):
        users.append(u)
        items.append(i)
        rating = _number(file, line, "rating", r, float)
        if not 1 <= rating <= 5:
            raise DataError(f"{file}:{line}: rating {r!r} is outside 1..5", hint=_FIX_HINT)
        ratings.append(rating)
        stamps.append(int(_number(file, line, "timestamp", t, float)))
    return (
        np.array(users, dtype=object),
        np.array(items, dtype=object),
        np.array(ratings, dtype=np.float32),
        np.array(stamps, dtype=np.int64),
    )


def _load_atomic(path: Path) -> MovieLens:
    u, i, r, t = _interactions(path / "ml-100k.inter", "\t", ("user_id:token", "item_id:token", "rating:float", "timestamp:float"))
    users = {}
    file = path / "ml-100k.user"
    header = ("user_id:token", "age:token", "gender:token", "occupation:token", "zip_code:token")
    for line, (uid, age, gender, occupation, zip_code) in _rows(file, "\t", 5, header=header):
        users[uid] = User(int(_number(file, line, "age", age, float)), gender, occupation, zip_code)
    items = {}
    file = path / "ml-100k.item"
    header = ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq")
    for _line, (iid, title, year, genres) in _rows(file, "\t", 4, header=header):
        items[iid] = Item(_atomic_year(year, title), tuple(genres.split()))
    return MovieLens(u, i, r, t, users, items, layout="atomic")


def _atomic_year(year: str, title: str) -> int | None:
    """Release year of a RecBole item row. RecBole's conversion left a few years unparsed
    ("unkonwn" [sic] for item 267, "V" for item 1412, whose title ends in "(1995)"): fall
    back to a four-digit year in parentheses in the title, else unknown."""
    if re.fullmatch(r"\d{4}", year):
        return int(year)
    found = re.search(r"\((\d{4})\)\s*$", title)
    return int(found.group(1)) if found else None


def _load_grouplens(path: Path) -> MovieLens:
    u, i, r, t = _interactions(path / "u.data", "\t", None)
    users = {}
    file = path / "u.user"
    for line, (uid, age, gender, occupation, zip_code) in _rows(file, "|", 5):
        users[uid] = User(int(_number(file, line, "age", age, float)), gender, occupation, zip_code)
    genre_names = GROUPLENS_GENRES
    if (path / "u.genre").is_file():
        pairs = [ln.split("|") for ln in (path / "u.genre").read_text(encoding="latin-1").splitlines() if ln.strip()]
        genre_names = tuple(name for name, _ in sorted(pairs, key=lambda p: int(p[1])))
    items = {}
    file = path / "u.item"
    for line, fields in _rows(file, "|", 5 + len(genre_names), encoding="latin-1"):
        iid, date, flags = fields[0], fields[2], fields[5:]
        year = int(_number(file, line, "release date", date[-4:], int)) if date else None
        genres = tuple(name for name, flag in zip(genre_names, flags, strict=True) if flag == "1")
        items[iid] = Item(year, genres)
    return MovieLens(u, i, r, t, users, items, layout="grouplens")


def _check_references(path: Path, ml: MovieLens) -> None:
    for ids, table, what in ((ml.user_ids, ml.users, "user"), (ml.item_ids, ml.items, "item")):
        unknown = sorted(set(ids.tolist()) - table.keys())
        if unknown:
            sample = ", ".join(unknown[:5])
            raise DataError(
                f"{path}: {len(unknown)} rated {what} ids are missing from the {what} file (e.g. {sample}); is the {what} file truncated?",
                hint=_FIX_HINT,
            )
