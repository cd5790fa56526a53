"""The preprocess model clips numeric features to the training range exactly as FeatureEncoder does, and counts it.

The numpy part of ``python_models/preprocess.py`` (imported without Triton) against
``FeatureEncoder.transform`` on requests with values outside the training range; the served
model and its metric are tested in ``tests/integration/test_preprocess_clipping_serving.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import toolkit.repository
from toolkit.data import FeatureEncoder, Splits
from toolkit.data.features import DENSE_FEATURES, RawRows
from toolkit.repository.raw_inputs import raw_request

_spec = importlib.util.spec_from_file_location(
    "tritonrec_test_preprocess_clipping", Path(toolkit.repository.__file__).parent / "python_models" / "preprocess.py"
)
preprocess = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(preprocess)


def _rows_with(rows: RawRows, ages: list[str], years: list[str]) -> RawRows:
    """The first len(ages) rows of ``rows`` with these raw ages and release years (strings and dense values)."""
    n = len(ages)
    rows = rows.take(np.arange(n))
    columns = {k: v.copy() for k, v in rows.columns.items()}
    columns["age"] = np.array(ages, dtype=object)
    columns["release_year"] = np.array(years, dtype=object)
    dense = rows.dense.copy()
    for j, texts in ((DENSE_FEATURES.index("age"), ages), (DENSE_FEATURES.index("release_year"), years)):
        dense[:, j] = [preprocess._number(t) for t in texts]  # float(), NaN when not a number
    return RawRows(columns, dense, rows.labels)


AGES = ["300", "1", "three hundred", "inf", "nan", "", "30", "1e400"]
YEARS = ["3000", "1990", "1990", "1800", "", "V", "-inf", "1990"]


def test_out_of_range_values_encode_bit_for_bit_like_feature_encoder(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    rows = _rows_with(synthetic_splits.raw_test, AGES, YEARS)
    got = preprocess.RawFeatureEncoder(encoder.to_dict()).encode(raw_request(rows))
    want = encoder.transform(rows)
    np.testing.assert_array_equal(got["dense_features"], want.dense_features)
    np.testing.assert_array_equal(got["sparse_ids"], want.sparse_ids)
    np.testing.assert_array_equal(got["multi_hot_ids"], want.multi_hot_ids)


def test_clipped_values_are_counted_per_feature_and_bound(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    assert encoder.dense_min[0] > 1 and encoder.dense_max[0] < 300 and encoder.dense_min[1] > 1800 and encoder.dense_max[1] < 3000
    rows = _rows_with(synthetic_splits.raw_test, AGES, YEARS)
    _, clipped = preprocess.RawFeatureEncoder(encoder.to_dict()).encode_counting(raw_request(rows))
    # ages 300, inf, 1e400 (inf) above; 1 below; "three hundred", "nan", "" missing; years 3000 above, 1800 and -inf below
    assert clipped == {("age", "min"): 1, ("age", "max"): 3, ("release_year", "min"): 2, ("release_year", "max"): 1}


def test_in_range_requests_count_nothing(synthetic_splits: Splits) -> None:
    encoder = synthetic_splits.encoder
    request = raw_request(synthetic_splits.raw_train.take(np.arange(500)))
    _, clipped = preprocess.RawFeatureEncoder(encoder.to_dict()).encode_counting(request)
    assert set(clipped.values()) == {0}


def test_old_vocabularies_without_a_range_clip_like_feature_encoder_loading_them(synthetic_splits: Splits) -> None:
    old = {k: v for k, v in synthetic_splits.encoder.to_dict().items() if k not in ("dense_min", "dense_max")}
    rows = _rows_with(synthetic_splits.raw_test, AGES, YEARS)
    pre = preprocess.RawFeatureEncoder(old)
    np.testing.assert_array_equal(pre.dense_min, synthetic_splits.encoder.dense_min)
    np.testing.assert_array_equal(pre.dense_max, synthetic_splits.encoder.dense_max)
    got = pre.encode(raw_request(rows))
    want = FeatureEncoder.from_dict(old).transform(rows)
    np.testing.assert_array_equal(got["dense_features"], want.dense_features)
    np.testing.assert_array_equal(got["sparse_ids"], want.sparse_ids)


def test_a_null_bound_is_not_clipped(synthetic_splits: Splits) -> None:
    d = synthetic_splits.encoder.to_dict()
    d["dense_max"] = [None, d["dense_max"][1]]
    pre = preprocess.RawFeatureEncoder(d)
    rows = _rows_with(synthetic_splits.raw_test, ["300"], ["1990"])
    encoded, clipped = pre.encode_counting(raw_request(rows))
    assert clipped[("age", "max")] == 0
    want = np.float32((300 - d["dense_mean"][0]) / d["dense_std"][0])
    assert encoded["dense_features"][0, 0] == want
    np.testing.assert_array_equal(encoded["dense_features"], FeatureEncoder.from_dict(d).transform(rows).dense_features)


def test_a_minimum_above_the_maximum_is_refused(synthetic_splits: Splits) -> None:
    d = synthetic_splits.encoder.to_dict() | {"dense_min": [90.0, 1900.0], "dense_max": [10.0, 2000.0]}
    with pytest.raises(ValueError, match="a minimum above its maximum"):
        preprocess.RawFeatureEncoder(d)
