"""write_input_data: perf_analyzer's --input-data JSON from real rows (one entry per row for batching models)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.data.features import EncodedRows
from toolkit.errors import PerfError
from toolkit.perf import read_input_data, write_input_data


def _rows(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "dense_features": rng.normal(size=(n, 2)).astype(np.float32),
        "sparse_ids": rng.integers(0, 50_000, size=(n, 7), dtype=np.int64),
    }


def test_one_entry_per_row_without_the_batch_dimension(tmp_path: Path) -> None:
    rows = _rows(10)
    path = write_input_data(tmp_path / "sub" / "data.json", rows, batch_size=4)
    doc = json.loads(path.read_text())
    assert len(doc["data"]) == 8  # trimmed to a multiple of the batch size: every request is 4 real rows
    first = doc["data"][0]
    assert first["sparse_ids"]["shape"] == [7] and first["dense_features"]["shape"] == [2]
    assert first["sparse_ids"]["content"] == rows["sparse_ids"][0].tolist()
    assert not list(tmp_path.glob("sub/.*"))  # no temporary file left behind


def test_round_trip_keeps_values_exactly(tmp_path: Path) -> None:
    rows = _rows(12)
    path = write_input_data(tmp_path / "data.json", rows, batch_size=3)
    back = read_input_data(path, {"dense_features": "float32", "sparse_ids": "int64"})
    assert set(back) == set(rows)
    for name, array in rows.items():
        assert back[name].dtype == array.dtype
        np.testing.assert_array_equal(back[name], array)  # float32 survives JSON exactly
    defaults = read_input_data(path)
    assert defaults["sparse_ids"].dtype == np.int64 and defaults["dense_features"].dtype == np.float32


def test_encoded_rows_are_accepted(tmp_path: Path) -> None:
    rows = _rows(4)
    encoded = EncodedRows(rows["dense_features"], rows["sparse_ids"], np.zeros((4, 3), np.int64), np.zeros(4, np.float32))
    back = read_input_data(write_input_data(tmp_path / "data.json", encoded, batch_size=2))
    assert set(back) == {"dense_features", "sparse_ids", "multi_hot_ids"}
    np.testing.assert_array_equal(back["sparse_ids"], rows["sparse_ids"])


def test_non_batching_model_gets_whole_requests(tmp_path: Path) -> None:
    rows = _rows(9)
    doc = json.loads(write_input_data(tmp_path / "data.json", rows, batch_size=4, model_batches=False).read_text())
    assert len(doc["data"]) == 2
    assert doc["data"][1]["sparse_ids"]["shape"] == [4, 7]
    assert doc["data"][1]["sparse_ids"]["content"] == rows["sparse_ids"][4:8].reshape(-1).tolist()


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    with pytest.raises(PerfError, match="different row counts"):
        write_input_data(path, {"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, batch_size=1)
    with pytest.raises(PerfError, match="3 rows, fewer than batch_size=8"):
        write_input_data(path, {"a": np.zeros((3, 2))}, batch_size=8)
    with pytest.raises(PerfError, match="input 'a': <U1 data"):
        write_input_data(path, {"a": np.array([["x"]])}, batch_size=1)
    with pytest.raises(PerfError, match="non-empty mapping"):
        write_input_data(path, {}, batch_size=1)
    with pytest.raises(PerfError, match="batch_size must be >= 1"):
        write_input_data(path, {"a": np.zeros((3, 2))}, batch_size=0)
    assert not path.exists()
