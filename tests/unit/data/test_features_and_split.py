"""Vocabularies, the feature encoder, the joined rows and the random split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.data import (
    DENSE_FEATURES,
    OOV_ID,
    PAD_ID,
    SPARSE_FEATURES,
    FeatureEncoder,
    RawRows,
    Vocabulary,
    load_movielens,
    load_splits,
    random_split,
    raw_rows,
)
from toolkit.errors import DataError

# ------------------------------------------------------------------ Vocabulary


def test_vocabulary_reserves_zero_for_padding_and_one_for_unknown_values() -> None:
    vocab = Vocabulary.fit(["b", "a", "b", "c", "b", "a"])

    assert (PAD_ID, OOV_ID) == (0, 1)
    assert vocab.tokens == ["b", "a", "c"]  # by descending count
    assert [vocab.lookup(v) for v in ("b", "a", "c")] == [2, 3, 4]
    assert len(vocab) == 5  # three known values + padding + OOV
    assert vocab.lookup("never seen") == OOV_ID


def test_vocabulary_encode_maps_unknown_values_to_oov() -> None:
    ids = Vocabulary(["x", "y"]).encode(["y", "z", "x", ""])
    assert ids.dtype == np.int64
    assert ids.tolist() == [3, OOV_ID, 2, OOV_ID]


def test_vocabulary_breaks_count_ties_by_value_and_honours_min_count() -> None:
    assert Vocabulary.fit(["q", "p", "q", "p", "r"]).tokens == ["p", "q", "r"]
    assert Vocabulary.fit(["q", "p", "q", "p", "r"], min_count=2).tokens == ["p", "q"]


def test_vocabulary_rejects_duplicate_tokens() -> None:
    with pytest.raises(DataError, match="unique"):
        Vocabulary(["a", "a"])


# ------------------------------------------------------------------ raw rows


def test_raw_rows_join_each_rating_with_its_user_and_item(tiny_atomic_dir: Path) -> None:
    rows = raw_rows(load_movielens(tiny_atomic_dir), zip_prefix_len=2)

    assert len(rows) == 8
    first = {name: rows.columns[name][0] for name in SPARSE_FEATURES}
    assert first == {
        "user_id": "1",
        "item_id": "1",
        "age": "24",
        "gender": "M",
        "occupation": "technician",
        "zip_prefix": "85",
        "release_year": "1995",
    }
    assert rows.columns["genres"][0] == ("Animation", "Children's", "Comedy")
    assert rows.dense.shape == (8, len(DENSE_FEATURES))
    assert rows.dense[0].tolist() == [24.0, 1995.0]
    unknown_year = rows.columns["item_id"].tolist().index("267")
    assert rows.columns["release_year"][unknown_year] == ""
    assert np.isnan(rows.dense[unknown_year, 1])


def test_label_is_one_exactly_when_the_rating_is_four_stars_or_more(tiny_atomic_dir: Path) -> None:
    ml = load_movielens(tiny_atomic_dir)
    rows = raw_rows(ml)

    assert rows.labels.dtype == np.float32
    assert rows.labels.tolist() == [1.0 if r >= 4 else 0.0 for r in ml.ratings.tolist()]
    assert rows.labels.tolist() == [1, 0, 1, 0, 0, 1, 1, 1]


# ------------------------------------------------------------------ FeatureEncoder


@pytest.fixture
def tiny_rows(tiny_atomic_dir: Path) -> RawRows:
    return raw_rows(load_movielens(tiny_atomic_dir))


def _train_test(rows: RawRows) -> tuple[RawRows, RawRows]:
    """Train: every rating except user 4's and item 3's; test: the rest (user 4 and item 3 unseen in training)."""
    users, items = rows.columns["user_id"], rows.columns["item_id"]
    in_test = (users == "4") | (items == "3")
    return rows.take(np.flatnonzero(~in_test)), rows.take(np.flatnonzero(in_test))


def test_encoder_is_fitted_on_the_training_split_only(tiny_rows: RawRows) -> None:
    train, test = _train_test(tiny_rows)
    encoder = FeatureEncoder.fit(train)
    encoded = encoder.transform(test)

    user_col, item_col = SPARSE_FEATURES.index("user_id"), SPARSE_FEATURES.index("item_id")
    user4 = test.columns["user_id"].tolist().index("4")
    assert encoded.sparse_ids[user4, user_col] == OOV_ID  # user 4 rated only in the test split
    assert set(encoded.sparse_ids[:, item_col].tolist()) == {OOV_ID}  # item 3 only in the test split
    assert "4" not in encoder.vocabularies["user_id"].tokens
    assert encoder.cardinalities == [len(encoder.vocabularies[n]) for n in (*SPARSE_FEATURES, "genres")]
    assert encoder.cardinalities[user_col] == 3 + 2  # users 1, 2, 3 + PAD + OOV


def test_encoder_standardizes_dense_features_with_training_statistics(tiny_rows: RawRows) -> None:
    train, test = _train_test(tiny_rows)
    encoder = FeatureEncoder.fit(train)
    dense = encoder.transform(test).dense_features

    assert dense.dtype == np.float32 and dense.shape == (len(test), 2)
    mean, std = np.nanmean(train.dense, axis=0), np.nanstd(train.dense, axis=0)
    assert std[1] == 0.0  # every training movie is from 1995: a constant column is centred, not divided by 0
    # test values outside the training range (item 3's 1977) are clipped to it first
    clipped = np.clip(test.dense, np.nanmin(train.dense, axis=0), np.nanmax(train.dense, axis=0))
    expected = (clipped - mean) / np.where(std == 0, 1.0, std)
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    assert np.isfinite(dense).all()
    # a missing release year becomes 0 (the training mean)
    unknown = tiny_rows.columns["item_id"].tolist().index("267")
    assert encoder.transform(tiny_rows).dense_features[unknown, 1] == 0.0


def test_encoded_rows_have_the_model_dtypes_and_shapes(tiny_rows: RawRows) -> None:
    encoded = FeatureEncoder.fit(tiny_rows).transform(tiny_rows)

    assert encoded.sparse_ids.dtype == np.int64 and encoded.sparse_ids.shape == (8, len(SPARSE_FEATURES))
    assert encoded.multi_hot_ids.dtype == np.int64
    assert encoded.labels.dtype == np.float32
    assert list(encoded.inputs()) == ["dense_features", "sparse_ids", "multi_hot_ids"]
    assert len(encoded.take(slice(0, 3))) == 3


def test_genres_are_padded_with_zero_and_truncated_to_max_genres(tiny_rows: RawRows) -> None:
    train, test = _train_test(tiny_rows)  # train's longest genre list: Toy Story's 3
    encoder = FeatureEncoder.fit(train)
    assert encoder.max_genres == 3
    genres = encoder.vocabularies["genres"]

    encoded = encoder.transform(tiny_rows)
    assert encoded.multi_hot_ids.shape == (8, 3)
    items = tiny_rows.columns["item_id"].tolist()
    # Misérables: two genres, padded with PAD_ID
    assert encoded.multi_hot_ids[items.index("2")].tolist() == [genres.lookup("Drama"), genres.lookup("Musical"), PAD_ID]
    # Star Wars: five genres, the first three kept ("Action" and "Adventure" never seen in training -> OOV)
    assert encoded.multi_hot_ids[items.index("3")].tolist() == [OOV_ID, OOV_ID, OOV_ID]
    assert genres.lookup("Romance") == OOV_ID


def test_encoder_round_trips_through_json(tiny_rows: RawRows) -> None:
    encoder = FeatureEncoder.fit(tiny_rows)
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))

    assert restored.cardinalities == encoder.cardinalities
    assert restored.max_genres == encoder.max_genres
    before, after = encoder.transform(tiny_rows), restored.transform(tiny_rows)
    for name in ("dense_features", "sparse_ids", "multi_hot_ids", "labels"):
        assert np.array_equal(getattr(before, name), getattr(after, name)), name


def _malformed(d: dict, case: str) -> dict:
    d = json.loads(json.dumps(d))
    if case == "no vocabularies":
        del d["vocabularies"]
    elif case == "unknown format version":
        d["format_version"] = 99
    elif case == "a feature without vocabulary":
        del d["vocabularies"]["occupation"]
    elif case == "max_genres not a number":
        d["max_genres"] = "many"
    elif case == "vocabularies not a mapping":
        d["vocabularies"] = ["user_id"]
    return d


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no vocabularies", "malformed field"),
        ("unknown format version", "format_version 99"),
        ("a feature without vocabulary", "no vocabulary for occupation"),
        ("max_genres not a number", "malformed field"),
        ("vocabularies not a mapping", "malformed field"),
    ],
)
def test_encoder_from_malformed_dict_is_a_data_error(tiny_rows: RawRows, case: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        FeatureEncoder.from_dict(_malformed(FeatureEncoder.fit(tiny_rows).to_dict(), case))


def test_encoder_refuses_to_fit_an_empty_split(tiny_rows: RawRows) -> None:
    with pytest.raises(DataError, match="empty"):
        FeatureEncoder.fit(tiny_rows.take(np.array([], dtype=np.int64)))


# ------------------------------------------------------------------ random_split


def test_random_split_cuts_80_10_10_into_disjoint_sets_covering_every_row() -> None:
    train, val, test = random_split(1000, seed=3)

    assert (len(train), len(val), len(test)) == (800, 100, 100)
    assert all(a.dtype == np.int64 for a in (train, val, test))
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(1000))


def test_random_split_is_deterministic_per_seed() -> None:
    first, again, other = random_split(500, seed=1), random_split(500, seed=1), random_split(500, seed=2)

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_random_split_gives_the_rounding_rest_to_the_test_split() -> None:
    train, val, test = random_split(7, (0.5, 0.25, 0.25))
    assert (len(train), len(val), len(test)) == (4, 2, 1)


@pytest.mark.parametrize("fractions", [(0.8, 0.2, 0.0), (0.9, 0.2, -0.1), (0.5, 0.3, 0.1), (1.0, 1.0, 1.0)])
def test_random_split_rejects_fractions_that_are_not_positive_or_do_not_sum_to_one(fractions) -> None:
    with pytest.raises(DataError, match="must be positive and sum to 1"):
        random_split(100, fractions)


def test_random_split_needs_three_rows() -> None:
    with pytest.raises(DataError, match="at least 3 rows"):
        random_split(2)


# ------------------------------------------------------------------ load_splits


def test_load_splits_encodes_three_disjoint_splits_with_the_training_vocabularies(synthetic_splits) -> None:
    s = synthetic_splits
    assert (len(s.train), len(s.val), len(s.test)) == (4800, 600, 600)
    assert len(s.raw_train) == len(s.train) and s.seed == 42
    refit = FeatureEncoder.fit(s.raw_train)
    assert refit.cardinalities == s.encoder.cardinalities
    assert np.array_equal(refit.transform(s.raw_test).sparse_ids, s.test.sparse_ids)


def test_load_splits_on_real_movielens_matches_the_data_set(movielens_dir: Path) -> None:
    s = load_splits(movielens_dir, seed=42)

    assert (len(s.train), len(s.val), len(s.test)) == (80_000, 10_000, 10_000)
    labels = np.concatenate([s.train.labels, s.val.labels, s.test.labels])
    assert labels.mean() == pytest.approx(0.55, abs=0.01)
    user_col = SPARSE_FEATURES.index("user_id")
    assert s.encoder.cardinalities[user_col] <= 943 + 2
    assert s.encoder.max_genres == 6
