"""Features of MovieLens-100K for CTR ranking, their vocabularies and encoding.

A row is one rating, joined with its user and item:

* categorical, single-valued (``SPARSE_FEATURES``): user id, item id, age, gender,
  occupation, zip prefix (first ``zip_prefix_len`` characters), release year;
* categorical, multi-valued (``MULTI_HOT_FEATURES``): genres, padded to
  ``max_genres`` ids with the padding id 0;
* dense (``DENSE_FEATURES``): age and release year, standardized with the training
  split's mean and standard deviation (a missing year becomes 0, the mean). A value outside
  the training split's range (an age of 300, a release year of 3000) is clipped to it, in
  its dense value and, since age and release year are also categorical, in its id: it is
  encoded exactly as the nearest value training saw (see :meth:`FeatureEncoder.transform`);
* label: 1.0 when the rating is >= 4 stars, else 0.0 (about 55% positive).

Every :class:`Vocabulary` reserves id 0 for padding and id 1 for out-of-vocabulary
values; known values start at 2. Vocabularies are fitted on the training split only
and saved with the model (:meth:`FeatureEncoder.to_dict`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from toolkit.data.movielens import MovieLens
from toolkit.errors import DataError

__all__ = [
    "SPARSE_FEATURES",
    "MULTI_HOT_FEATURES",
    "DENSE_FEATURES",
    "PAD_ID",
    "OOV_ID",
    "Vocabulary",
    "RawRows",
    "EncodedRows",
    "FeatureEncoder",
    "raw_rows",
    "range_from_vocabulary",
]

SPARSE_FEATURES: tuple[str, ...] = ("user_id", "item_id", "age", "gender", "occupation", "zip_prefix", "release_year")
MULTI_HOT_FEATURES: tuple[str, ...] = ("genres",)
DENSE_FEATURES: tuple[str, ...] = ("age", "release_year")
PAD_ID = 0
OOV_ID = 1
POSITIVE_RATING = 4.0
ENCODER_FORMAT_VERSION = 1


class Vocabulary:
    """Maps the string values of one categorical feature to int64 ids.

    Id 0 is padding (only used by multi-valued features), id 1 is out-of-vocabulary,
    known values get ids ``2..len(self)-1`` in order of first appearance in
    :meth:`fit`'s input sorted by descending count.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self._index = {t: i + 2 for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise DataError("vocabulary tokens must be unique")

    @classmethod
    def fit(cls, values: Iterable[str], *, min_count: int = 1) -> Vocabulary:
        """Build a vocabulary of the values seen at least ``min_count`` times."""
        counts = Counter(values)
        return cls([t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count])

    def __len__(self) -> int:
        """Table size: known values plus the padding and OOV ids."""
        return len(self.tokens) + 2

    def lookup(self, value: str) -> int:
        """Id of ``value``; :data:`OOV_ID` when unknown."""
        return self._index.get(value, OOV_ID)

    def encode(self, values: Iterable[str]) -> np.ndarray:
        """(N,) int64 ids of ``values``."""
        return np.fromiter((self._index.get(v, OOV_ID) for v in values), dtype=np.int64)


@dataclass
class RawRows:
    """Rows as a product would send them: strings per feature, genres as tuples.

    Attributes:
        columns: feature name → (N,) object array of strings (``genres``: tuples of strings).
        dense: (N, len(DENSE_FEATURES)) float64 raw values, NaN where unknown.
        labels: (N,) float32 in {0, 1}.
    """

    columns: dict[str, np.ndarray]
    dense: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> RawRows:
        """The rows at ``index`` (a new :class:`RawRows`)."""
        return RawRows({k: v[index] for k, v in self.columns.items()}, self.dense[index], self.labels[index])


@dataclass
class EncodedRows:
    """Model-ready tensors of N rows (the DLRM's inputs plus the label).

    Attributes:
        dense_features: (N, D) float32, D = len(DENSE_FEATURES) = 2.
        sparse_ids: (N, S) int64, S = len(SPARSE_FEATURES) = 7, ids into each feature's table.
        multi_hot_ids: (N, G) int64, the multi-valued feature's padded ids (MovieLens: genres,
            G = max_genres, padded with :data:`PAD_ID`); G = 0 for data sets without one.
        labels: (N,) float32 in {0, 1}.
    """

    dense_features: np.ndarray
    sparse_ids: np.ndarray
    multi_hot_ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self) -> dict[str, np.ndarray]:
        """The DLRM inputs by name: ``dense_features``, ``sparse_ids`` and, when G > 0, ``multi_hot_ids``."""
        inputs = {"dense_features": self.dense_features, "sparse_ids": self.sparse_ids}
        if self.multi_hot_ids.shape[1] > 0:
            inputs["multi_hot_ids"] = self.multi_hot_ids
        return inputs

    def take(self, index: np.ndarray | slice) -> EncodedRows:
        """The rows at ``index``."""
        return EncodedRows(self.dense_features[index], self.sparse_ids[index], self.multi_hot_ids[index], self.labels[index])


def raw_rows(ml: MovieLens, *, zip_prefix_len: int = 3) -> RawRows:
    """Join every rating of ``ml`` with its user and item into :class:`RawRows`."""
    users = [ml.users[u] for u in ml.user_ids]
    items = [ml.items[i] for i in ml.item_ids]
    obj = lambda xs: np.array(list(xs), dtype=object)  # noqa: E731
    columns = {
        "user_id": ml.user_ids.astype(object),
        "item_id": ml.item_ids.astype(object),
        "age": obj(str(u.age) for u in users),
        "gender": obj(u.gender for u in users),
        "occupation": obj(u.occupation for u in users),
        "zip_prefix": obj(u.zip_code[:zip_prefix_len] for u in users),
        "release_year": obj("" if it.release_year is None else str(it.release_year) for it in items),
    }
    genres = np.empty(len(items), dtype=object)
    genres[:] = [it.genres for it in items]
    columns["genres"] = genres
    dense = np.array(
        [[u.age, np.nan if it.release_year is None else it.release_year] for u, it in zip(users, items, strict=True)],
        dtype=np.float64,
    ).reshape(len(users), len(DENSE_FEATURES))
    labels = (ml.ratings >= POSITIVE_RATING).astype(np.float32)
    return RawRows(columns, dense, labels)


def _numeric_tokens(tokens: Iterable[str]) -> list[tuple[float, str]]:
    """(value, token) of the tokens that are finite numbers, in vocabulary order."""
    out = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            continue
        if np.isfinite(value):
            out.append((value, token))
    return out


def range_from_vocabulary(tokens: Sequence[str]) -> tuple[float, float]:
    """(min, max) of the numeric tokens of a vocabulary; (-inf, inf) when it has none.

    A vocabulary fitted by :meth:`FeatureEncoder.fit` (``min_count=1``) holds every training
    value of the feature as a token, so for age and release year this is exactly the
    training range :meth:`FeatureEncoder.fit` records; it is how vocabularies saved before
    the range was recorded get one (:meth:`FeatureEncoder.from_dict`).
    """
    values = [v for v, _ in _numeric_tokens(tokens)]
    return (min(values), max(values)) if values else (-np.inf, np.inf)


class FeatureEncoder:
    """Vocabularies and dense-feature statistics fitted on a training split.

    Use :meth:`fit` on the training rows, then :meth:`transform` on any split.
    Round-trips through :meth:`to_dict`/:meth:`from_dict` (JSON-safe).

    Attributes:
        vocabularies: feature name -> :class:`Vocabulary` (``SPARSE_FEATURES`` and ``genres``).
        dense_mean, dense_std: (D,) float64, the training mean and standard deviation of
            each of ``DENSE_FEATURES`` (raw units: years of age, calendar year).
        dense_min, dense_max: (D,) float64, the training range of each dense feature (raw
            units); ``-inf``/``inf`` where none is known (no value at all, or an old file
            without a range and without numeric tokens): that side is not clipped.
        max_genres: G, the padded width of ``multi_hot_ids``.
    """

    def __init__(
        self,
        vocabularies: dict[str, Vocabulary],
        dense_mean: np.ndarray,
        dense_std: np.ndarray,
        max_genres: int,
        dense_min: np.ndarray | None = None,
        dense_max: np.ndarray | None = None,
    ):
        self.vocabularies = vocabularies
        self.dense_mean = np.asarray(dense_mean, dtype=np.float64)
        self.dense_std = np.asarray(dense_std, dtype=np.float64)
        self.max_genres = int(max_genres)
        d = len(self.dense_mean)
        self.dense_min = np.full(d, -np.inf) if dense_min is None else np.asarray(dense_min, dtype=np.float64)
        self.dense_max = np.full(d, np.inf) if dense_max is None else np.asarray(dense_max, dtype=np.float64)
        if self.dense_min.shape != (d,) or self.dense_max.shape != (d,):
            raise DataError(f"dense range: expected {d} values per bound, got {self.dense_min.shape} and {self.dense_max.shape}")
        if (self.dense_min > self.dense_max).any():
            raise DataError(f"dense range: a minimum above its maximum ({self.dense_min.tolist()} > {self.dense_max.tolist()})")
        # (sparse column, id of the lowest, id of the highest training value) of the dense features
        # that are also categorical: a clipped value takes the id of the value it is clipped to.
        self._bound_ids: dict[int, tuple[int, int]] = {}
        for j, name in enumerate(DENSE_FEATURES[:d]):
            if name in SPARSE_FEATURES and name in vocabularies:
                vocabulary = vocabularies[name]
                numeric = _numeric_tokens(vocabulary.tokens)  # most frequent first: "73" before "73.0"
                bounds = (self.dense_min[j], self.dense_max[j])
                low, high = (next((vocabulary.lookup(t) for v, t in numeric if v == b), OOV_ID) for b in bounds)
                self._bound_ids[j] = (SPARSE_FEATURES.index(name), low, high)

    @classmethod
    def fit(cls, rows: RawRows) -> FeatureEncoder:
        """Fit vocabularies (all of ``SPARSE_FEATURES`` and ``genres``) and dense mean/std on ``rows``."""
        if len(rows) == 0:
            raise DataError("cannot fit feature vocabularies on an empty training split")
        vocabularies = {name: Vocabulary.fit(rows.columns[name]) for name in SPARSE_FEATURES}
        vocabularies["genres"] = Vocabulary.fit(g for gs in rows.columns["genres"] for g in gs)
        seen = ~np.isnan(rows.dense).all(axis=0)  # a column without any value: mean 0, std 1, no range (not clipped)
        mean = np.zeros(rows.dense.shape[1])
        std = np.ones(rows.dense.shape[1])
        mean[seen] = np.nanmean(rows.dense[:, seen], axis=0)
        std[seen] = np.nanstd(rows.dense[:, seen], axis=0)
        std[std == 0] = 1.0
        lo = np.where(seen, np.min(np.where(np.isnan(rows.dense), np.inf, rows.dense), axis=0), -np.inf)
        hi = np.where(seen, np.max(np.where(np.isnan(rows.dense), -np.inf, rows.dense), axis=0), np.inf)
        max_genres = max((len(g) for g in rows.columns["genres"]), default=1)
        return cls(vocabularies, mean, std, max(max_genres, 1), lo, hi)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding-table sizes in model order: the sparse features, then genres."""
        return [len(self.vocabularies[n]) for n in (*SPARSE_FEATURES, *MULTI_HOT_FEATURES)]

    def out_of_range(self, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which raw dense values lie below / above the training range.

        Args:
            dense: (N, D) float64 raw values (NaN: missing, never out of range).

        Returns:
            Two (N, D) bool arrays: below ``dense_min``, above ``dense_max``.
        """
        dense = np.asarray(dense, dtype=np.float64)
        return dense < self.dense_min, dense > self.dense_max

    def transform(self, rows: RawRows) -> EncodedRows:
        """Encode ``rows``; unknown values become :data:`OOV_ID`, extra genres beyond ``max_genres`` are dropped.

        A dense value outside the training range (``dense_min``..``dense_max``) is clipped to
        it before it is standardized, and where the feature is also categorical (age, release
        year) its id becomes that of the boundary value: an age of 300 is encoded exactly like
        the oldest training age. Missing values (NaN) stay missing: dense 0, the raw string's
        id (the OOV id for an empty or non-numeric string).
        """
        sparse = np.stack([self.vocabularies[n].encode(rows.columns[n]) for n in SPARSE_FEATURES], axis=1)
        genre_vocab = self.vocabularies["genres"]
        genre_ids = np.full((len(rows), self.max_genres), PAD_ID, dtype=np.int64)
        for r, gs in enumerate(rows.columns["genres"]):
            ids = [genre_vocab.lookup(g) for g in gs[: self.max_genres]]
            genre_ids[r, : len(ids)] = ids
        below, above = self.out_of_range(rows.dense)
        for j, (column, low_id, high_id) in self._bound_ids.items():
            sparse[below[:, j], column] = low_id
            sparse[above[:, j], column] = high_id
        dense = (np.clip(rows.dense, self.dense_min, self.dense_max) - self.dense_mean) / self.dense_std
        dense = np.nan_to_num(dense, nan=0.0).astype(np.float32)
        return EncodedRows(dense, sparse.astype(np.int64), genre_ids, rows.labels.astype(np.float32))

    def to_dict(self) -> dict:
        """JSON-safe form (saved as ``vocabularies.json`` next to a checkpoint)."""
        return {
            "format_version": ENCODER_FORMAT_VERSION,
            "sparse_features": list(SPARSE_FEATURES),
            "multi_hot_features": list(MULTI_HOT_FEATURES),
            "dense_features": list(DENSE_FEATURES),
            "pad_id": PAD_ID,
            "oov_id": OOV_ID,
            "vocabularies": {k: v.tokens for k, v in self.vocabularies.items()},
            "dense_mean": self.dense_mean.tolist(),
            "dense_std": self.dense_std.tolist(),
            # the training range; null where none is known (JSON has no infinity)
            "dense_min": [float(v) if np.isfinite(v) else None for v in self.dense_min],
            "dense_max": [float(v) if np.isfinite(v) else None for v in self.dense_max],
            "max_genres": self.max_genres,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureEncoder:
        """Inverse of :meth:`to_dict`.

        ``dense_min``/``dense_max`` are optional: vocabularies saved before tritonrec recorded
        the training range load with the range of the numeric tokens of the same feature's
        vocabulary (:func:`range_from_vocabulary`, the same range for vocabularies this
        toolkit fitted), and a dense feature without such a vocabulary is not clipped. A
        ``null`` bound is not clipped either.

        Raises:
            DataError: a field is missing or of the wrong kind, the format version is unknown,
                or a range has the wrong length or a minimum above its maximum.
        """
        try:
            if d["format_version"] != ENCODER_FORMAT_VERSION:
                raise DataError(f"vocabularies: format_version {d['format_version']!r}, expected {ENCODER_FORMAT_VERSION}")
            vocabularies = {k: Vocabulary(v) for k, v in d["vocabularies"].items()}
            missing = [n for n in (*SPARSE_FEATURES, *MULTI_HOT_FEATURES) if n not in vocabularies]
            if missing:
                raise DataError(f"vocabularies: no vocabulary for {', '.join(missing)}")
            mean = np.array(d["dense_mean"], dtype=np.float64)
            names = list(d.get("dense_features", DENSE_FEATURES))[: len(mean)]
            derived = [range_from_vocabulary(vocabularies[n].tokens) if n in vocabularies else (-np.inf, np.inf) for n in names]
            bounds = []
            for key, side, default in (("dense_min", 0, -np.inf), ("dense_max", 1, np.inf)):
                if key in d:
                    bounds.append(np.array([default if v is None else float(v) for v in d[key]], dtype=np.float64))
                else:
                    bounds.append(np.array([r[side] for r in derived], dtype=np.float64))
            return cls(vocabularies, mean, np.array(d["dense_std"]), int(d["max_genres"]), *bounds)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"vocabularies: malformed field ({exc!r})") from exc
