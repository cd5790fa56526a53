"""Numeric features stay inside what training saw: values outside the training range are clipped.

Age and release year are dense (standardized) and categorical (a vocabulary of the training
values). An out-of-range value is encoded exactly as the boundary value it is clipped to, in
both; a non-numeric value stays missing. Vocabularies saved before the range was recorded
get it from their own numeric tokens.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.data import FeatureEncoder, Splits
from toolkit.data.features import DENSE_FEATURES, OOV_ID, SPARSE_FEATURES, RawRows, range_from_vocabulary
from toolkit.errors import DataError

AGE, YEAR = DENSE_FEATURES.index("age"), DENSE_FEATURES.index("release_year")
AGE_ID, YEAR_ID = SPARSE_FEATURES.index("age"), SPARSE_FEATURES.index("release_year")


def _with(rows: RawRows, feature: str, text: str) -> RawRows:
    """``rows`` with every value of ``feature`` replaced by ``text`` (its string and its dense value)."""
    columns = {k: v.copy() for k, v in rows.columns.items()}
    columns[feature] = np.full(len(rows), text, dtype=object)
    dense = rows.dense.copy()
    try:
        dense[:, DENSE_FEATURES.index(feature)] = float(text)
    except ValueError:
        dense[:, DENSE_FEATURES.index(feature)] = np.nan  # how raw_rows reads a value that is not a number
    return RawRows(columns, dense, rows.labels)


def _same_encoding(a, b) -> None:
    np.testing.assert_array_equal(a.dense_features, b.dense_features)  # bit-identical floats
    np.testing.assert_array_equal(a.sparse_ids, b.sparse_ids)
    np.testing.assert_array_equal(a.multi_hot_ids, b.multi_hot_ids)


def test_fit_records_the_training_range_of_each_dense_feature(synthetic_splits: Splits) -> None:
    encoder, train = synthetic_splits.encoder, synthetic_splits.raw_train
    np.testing.assert_array_equal(encoder.dense_min, np.nanmin(train.dense, axis=0))
    np.testing.assert_array_equal(encoder.dense_max, np.nanmax(train.dense, axis=0))
    saved = encoder.to_dict()
    assert saved["dense_min"] == np.nanmin(train.dense, axis=0).tolist()
    assert saved["dense_max"] == np.nanmax(train.dense, axis=0).tolist()


@pytest.mark.parametrize(("feature", "outside", "bound"), [("age", "300", "max"), ("age", "1", "min"), ("release_year", "3000", "max")])
def test_a_value_outside_the_training_range_encodes_exactly_as_the_boundary_value(
    synthetic_splits: Splits, feature: str, outside: str, bound: str
) -> None:
    encoder, rows = synthetic_splits.encoder, synthetic_splits.raw_test.take(np.arange(40))
    j = DENSE_FEATURES.index(feature)
    limit = (encoder.dense_min if bound == "min" else encoder.dense_max)[j]
    assert not encoder.dense_min[j] <= float(outside) <= encoder.dense_max[j]
    below, above = encoder.out_of_range(_with(rows, feature, outside).dense)
    assert (below if bound == "min" else above)[:, j].all()

    clipped = encoder.transform(_with(rows, feature, outside))
    _same_encoding(clipped, encoder.transform(_with(rows, feature, str(int(limit)))))
    assert (clipped.sparse_ids[:, SPARSE_FEATURES.index(feature)] != OOV_ID).all()  # the boundary's id, not "unknown"


def test_in_range_values_are_encoded_as_before(synthetic_splits: Splits) -> None:
    # the training rows lie inside the range by definition: clipping changes none of them
    encoder, rows = synthetic_splits.encoder, synthetic_splits.raw_train
    below, above = encoder.out_of_range(rows.dense)
    assert not below.any() and not above.any()
    want = np.nan_to_num((rows.dense - encoder.dense_mean) / encoder.dense_std, nan=0.0).astype(np.float32)
    np.testing.assert_array_equal(encoder.transform(rows).dense_features, want)


def test_a_non_numeric_value_is_missing_not_clipped(synthetic_splits: Splits) -> None:
    encoder, rows = synthetic_splits.encoder, synthetic_splits.raw_test.take(np.arange(10))
    encoded = encoder.transform(_with(rows, "age", "three hundred"))
    assert (encoded.dense_features[:, AGE] == 0.0).all()  # the training mean
    assert (encoded.sparse_ids[:, AGE_ID] == OOV_ID).all()
    below, above = encoder.out_of_range(_with(rows, "age", "three hundred").dense)
    assert not below.any() and not above.any()


def test_vocabularies_saved_without_a_range_get_it_from_their_numeric_tokens(synthetic_splits: Splits) -> None:
    encoder, rows = synthetic_splits.encoder, synthetic_splits.raw_test
    old = {k: v for k, v in encoder.to_dict().items() if k not in ("dense_min", "dense_max")}
    restored = FeatureEncoder.from_dict(json.loads(json.dumps(old)))
    np.testing.assert_array_equal(restored.dense_min, encoder.dense_min)
    np.testing.assert_array_equal(restored.dense_max, encoder.dense_max)
    _same_encoding(restored.transform(_with(rows, "age", "300")), encoder.transform(_with(rows, "age", "300")))
    assert range_from_vocabulary(["", "V", "1977", "1995", "unkonwn"]) == (1977.0, 1995.0)


def test_a_feature_without_any_known_value_is_not_clipped(synthetic_splits: Splits) -> None:
    # e.g. old vocabularies whose year tokens are not numbers, or a training split without any year
    d = synthetic_splits.encoder.to_dict()
    del d["dense_min"], d["dense_max"]
    d["vocabularies"]["release_year"] = ["unknown", "V"]
    encoder = FeatureEncoder.from_dict(d)
    assert encoder.dense_min[YEAR] == -np.inf and encoder.dense_max[YEAR] == np.inf
    rows = synthetic_splits.raw_test.take(np.arange(5))
    far = encoder.transform(_with(rows, "release_year", "3000"))
    want = np.float32((3000 - encoder.dense_mean[YEAR]) / encoder.dense_std[YEAR])
    assert (far.dense_features[:, YEAR] == want).all()

    no_years = _with(synthetic_splits.raw_train, "release_year", "")
    fitted = FeatureEncoder.fit(no_years)
    assert fitted.dense_min[YEAR] == -np.inf and fitted.to_dict()["dense_max"][YEAR] is None
    assert FeatureEncoder.from_dict(json.loads(json.dumps(fitted.to_dict()))).dense_max[YEAR] == np.inf


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dense_min": [80.0, 1900.0], "dense_max": [10.0, 2000.0]}, "a minimum above its maximum"),
        ({"dense_min": [10.0]}, "expected 2 values per bound"),
        ({"dense_max": "old"}, "malformed field"),
    ],
)
def test_a_malformed_range_is_a_data_error(synthetic_splits: Splits, change: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        FeatureEncoder.from_dict({**synthetic_splits.encoder.to_dict(), **change})
