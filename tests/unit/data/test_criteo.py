"""Criteo format: Kaggle cardinalities, the generator, the loader, its errors, and the Criteo-shaped DLRM."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import (
    CRITEO_NUM_FIELDS,
    KAGGLE_CARDINALITIES,
    criteo_cardinalities,
    criteo_dlrm_kwargs,
    criteo_splits,
    generate_criteo_tsv,
    load_criteo_tsv,
)
from toolkit.errors import DataError
from toolkit.metrics import auc
from toolkit.models.dlrm import DLRM, DLRMConfig

N_ROWS = 20_000
CAPPED = criteo_cardinalities()
INT_FIELD = re.compile(rb"-?[0-9]*")
HEX_FIELD = re.compile(rb"([0-9a-f]{8})?")


@pytest.fixture(scope="module")
def tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_criteo_tsv(tmp_path_factory.mktemp("criteo") / "train.txt", N_ROWS, seed=7)


@pytest.fixture(scope="module")
def fields(tsv: Path) -> list[list[bytes]]:
    return [line.split(b"\t") for line in tsv.read_bytes().splitlines()]


def _line(label: str = "0", ints: list[str] | None = None, tokens: list[str] | None = None) -> str:
    ints = ints if ints is not None else ["1"] * 13
    tokens = tokens if tokens is not None else ["68fd1e64"] * 26
    return "\t".join([label, *ints, *tokens]) + "\n"


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------ cardinalities and the model shape


def test_kaggle_cardinalities_are_dlrms_26_values_and_the_cap_is_100k() -> None:
    assert KAGGLE_CARDINALITIES == (
        1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
        27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
    )  # fmt: skip
    assert CAPPED == [min(c, 100_000) for c in KAGGLE_CARDINALITIES]
    assert max(CAPPED) == 100_000 and CAPPED.count(100_000) == 7
    assert criteo_cardinalities(1000)[:3] == [1000, 583, 1000]
    with pytest.raises(DataError, match="cap"):
        criteo_cardinalities(0)


def test_criteo_dlrm_has_the_compression_issues_shape() -> None:
    kwargs = criteo_dlrm_kwargs()
    config = DLRMConfig(**kwargs)
    assert (config.num_dense, config.embedding_dim) == (13, 16)
    assert config.sparse_cardinalities == CAPPED
    assert config.multi_hot_cardinalities == [] and config.multi_hot_lengths == []
    assert config.bottom_mlp == [512, 256, 64] and config.top_mlp == [512, 256]
    model = DLRM(config)
    widths = [m.out_features for m in model.bottom_mlp if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 256, 64, 16]
    top = [m for m in model.top_mlp if isinstance(m, torch.nn.Linear)]
    assert top[0].in_features == 16 + 27 * 26 // 2 and [m.out_features for m in top] == [512, 256, 1]


# ------------------------------------------------------------------ the generated file


def test_generated_lines_have_criteos_40_fields(fields: list[list[bytes]]) -> None:
    assert len(fields) == N_ROWS
    assert {len(f) for f in fields} == {CRITEO_NUM_FIELDS}
    for f in fields[:2000]:
        assert f[0] in (b"0", b"1")
        assert all(INT_FIELD.fullmatch(v) and not v.startswith(b"-") for v in f[1:14]), f
        assert all(HEX_FIELD.fullmatch(v) for v in f[14:]), f


def test_generated_file_has_missing_values_in_both_kinds_of_fields(fields: list[list[bytes]]) -> None:
    missing = np.array([[v == b"" for v in f] for f in fields])
    assert not missing[:, 0].any()  # labels are never missing
    dense, sparse = missing[:, 1:14].mean(axis=0), missing[:, 14:].mean(axis=0)
    assert dense[0] == pytest.approx(0.45, abs=0.03) and dense[11] == pytest.approx(0.77, abs=0.03)  # I1, I12
    assert sparse[21] == pytest.approx(0.76, abs=0.03) and sparse[0] == 0  # C22 often missing, C1 never
    assert missing.mean() > 0.05


def test_categorical_values_are_zipf_skewed(fields: list[list[bytes]]) -> None:
    c3 = Counter(f[16] for f in fields if f[16])  # C3: 10.1M Kaggle values, capped at 100,000
    (_, top), (_, second) = c3.most_common(2)
    share = top / sum(c3.values())
    # Zipf a=1.2 over 100,000 ranks: rank 1 holds ~19.6% of the mass, rank 2 ~8.5%; uniform would be 0.001%
    assert 0.17 < share < 0.23
    assert share > 10_000 / 100_000
    assert 1.8 < top / second < 2.9  # 2**1.2 = 2.3
    assert len(c3) > 1000  # and a long tail


def test_labels_are_about_a_quarter_positive_and_learnable(tsv: Path) -> None:
    rows = load_criteo_tsv(tsv)
    assert rows.labels.mean() == pytest.approx(0.25, abs=0.02)
    # one categorical feature of the hidden model, target-encoded on half the rows, ranks the other half
    half = len(rows) // 2
    ids, labels = rows.sparse_ids[:, 0], rows.labels  # C1
    clicks = np.bincount(ids[:half], weights=labels[:half], minlength=CAPPED[0])
    shows = np.bincount(ids[:half], minlength=CAPPED[0])
    rate = (clicks + 0.25 * 20) / (shows + 20)
    assert auc(labels[half:], rate[ids[half:]]) > 0.62


def test_generation_is_deterministic_atomic_and_the_seed_changes_the_rows(tmp_path: Path) -> None:
    a = generate_criteo_tsv(tmp_path / "a.tsv", 500, seed=1)
    b = generate_criteo_tsv(tmp_path / "b.tsv", 500, seed=1)
    c = generate_criteo_tsv(tmp_path / "c.tsv", 500, seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    generate_criteo_tsv(a, 10, seed=3)  # replaces the file
    assert len(a.read_bytes().splitlines()) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tsv", "b.tsv", "c.tsv"]  # no temporary files left


def test_generation_rejects_bad_arguments_and_leaves_the_old_file(tmp_path: Path) -> None:
    path = generate_criteo_tsv(tmp_path / "keep.tsv", 5)
    before = path.read_bytes()
    with pytest.raises(DataError, match="n_rows"):
        generate_criteo_tsv(path, 0)
    with pytest.raises(DataError, match="26 positive integers"):
        generate_criteo_tsv(path, 5, cardinalities=[10] * 25)
    with pytest.raises(DataError, match="zipf_a"):
        generate_criteo_tsv(path, 5, zipf_a=0.0)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["keep.tsv"]


# ------------------------------------------------------------------ loading


def test_round_trip_gives_model_ready_arrays_within_the_capped_tables(tsv: Path, fields: list[list[bytes]]) -> None:
    rows = load_criteo_tsv(tsv)
    assert len(rows) == N_ROWS
    assert rows.dense_features.shape == (N_ROWS, 13) and rows.dense_features.dtype == np.float32
    assert rows.sparse_ids.shape == (N_ROWS, 26) and rows.sparse_ids.dtype == np.int64
    assert rows.multi_hot_ids.shape == (N_ROWS, 0) and rows.multi_hot_ids.dtype == np.int64
    assert rows.labels.dtype == np.float32 and set(np.unique(rows.labels)) == {0.0, 1.0}
    assert list(rows.inputs()) == ["dense_features", "sparse_ids"]
    assert (rows.sparse_ids >= 0).all() and (rows.sparse_ids < np.array(CAPPED)).all()
    assert (rows.dense_features >= 0).all()
    # the generator's most frequent value of every table is id 1 (rank 1); missing is id 0
    assert (np.array([np.bincount(rows.sparse_ids[:, t]).argmax() for t in (0, 2, 10)]) == 1).all()
    # same values as a plain Python reading of the first lines
    for i, f in enumerate(fields[:300]):
        assert rows.labels[i] == int(f[0])
        assert rows.dense_features[i] == pytest.approx([math.log1p(int(v or b"0")) for v in f[1:14]], rel=1e-6)
        assert rows.sparse_ids[i].tolist() == [int(v or b"0", 16) % c for v, c in zip(f[14:], CAPPED, strict=True)]


def test_loader_follows_dlrms_preprocessing_on_a_kaggle_line(tmp_path: Path) -> None:
    ints = ["5", "-1", "", "2", "1382", "", "", "0", "", "", "", "", "7"]
    tokens = ["68fd1e64", "80e26c9b", "fb936136", "7b4723c4", "25c83c98", "7e0ccccf", "de7995b8", "1f89b562", "a73ee510",
              "a8cd5504", "b2cb9c98", "37c9c164", "2824a5f6", "1adce6ef", "8ba8b39a", "891b62e7", "e5ba7672", "f54016b9",
              "21ddcdc9", "b1252a9d", "07b5194c", "", "3a171ecb", "c5c50484", "e8b83407", "9727dd16"]  # fmt: skip
    path = _write(tmp_path / "train.txt", "\t".join(["1", *ints, *tokens]) + "\n")
    rows = load_criteo_tsv(path)
    expected_dense = [math.log1p(max(int(v or "0"), 0)) for v in ints]
    assert rows.dense_features[0] == pytest.approx(expected_dense, rel=1e-6)
    assert rows.dense_features[0, 1] == 0.0  # negative counts (I2 = -1 happens in Kaggle's data) clip to 0
    assert rows.sparse_ids[0].tolist() == [int(t or "0", 16) % c for t, c in zip(tokens, CAPPED, strict=True)]
    assert rows.sparse_ids[0, 0] == 0x68FD1E64 % 1460 and rows.sparse_ids[0, 21] == 0  # missing token -> 0
    full = load_criteo_tsv(path, cardinalities=[1 << 32] * 26)
    assert full.sparse_ids[0, 0] == 0x68FD1E64
    assert rows.labels.tolist() == [1.0]


def test_loader_handles_blank_lines_crlf_a_missing_final_newline_and_max_rows(tmp_path: Path) -> None:
    lines = [_line(str(i % 2), ints=[str(i)] * 13) for i in range(5)]
    path = tmp_path / "rows.tsv"
    path.write_bytes(("".join(lines[:2]) + "\n" + "".join(lines[2:])).replace("\n", "\r\n").encode().removesuffix(b"\r\n"))
    rows = load_criteo_tsv(path)
    assert rows.labels.tolist() == [0, 1, 0, 1, 0]
    assert np.expm1(rows.dense_features[:, 0]).round().tolist() == [0, 1, 2, 3, 4]
    assert load_criteo_tsv(path, max_rows=3).labels.tolist() == [0, 1, 0]


def test_max_rows_stops_before_a_bad_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "rows.tsv", _line(), _line(), "garbage\n")
    assert len(load_criteo_tsv(path, max_rows=2)) == 2
    with pytest.raises(DataError, match=r"rows\.tsv:3: 1 tab-separated fields"):
        load_criteo_tsv(path)


def test_loader_reads_files_larger_than_one_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toolkit.data.criteo as criteo

    monkeypatch.setattr(criteo, "_READ_BYTES", 1000)  # ~4 lines a block, lines cut across reads
    path = generate_criteo_tsv(tmp_path / "g.tsv", 300, seed=4)
    small = load_criteo_tsv(path)
    monkeypatch.undo()
    whole = load_criteo_tsv(path)
    for a, b in zip(small.inputs().values(), whole.inputs().values(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(small.labels, whole.labels)
    assert len(load_criteo_tsv(path, max_rows=123)) == 123


def test_the_criteo_dlrm_runs_on_loaded_rows(tsv: Path) -> None:
    rows = load_criteo_tsv(tsv, max_rows=64)
    model = DLRM(DLRMConfig(**criteo_dlrm_kwargs())).eval()
    with torch.no_grad():
        out = model(*(torch.from_numpy(a) for a in rows.inputs().values()))
    assert out.shape == (64, 1) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and ((out > 0) & (out < 1)).all()


def test_full_kaggle_tables_hash_into_the_capped_ones(tmp_path: Path) -> None:
    path = generate_criteo_tsv(tmp_path / "full.tsv", 2000, cardinalities=KAGGLE_CARDINALITIES)
    rows = load_criteo_tsv(path)
    assert (rows.sparse_ids < np.array(CAPPED)).all()
    big = [t for t, c in enumerate(KAGGLE_CARDINALITIES) if c > 1_000_000]
    assert all(len(np.unique(rows.sparse_ids[:, t])) > 100 for t in big)


def test_criteo_splits_cut_the_rows_80_10_10(tsv: Path) -> None:
    splits = criteo_splits(tsv, seed=3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (16_000, 2_000, 2_000)
    assert splits.cardinalities == CAPPED and splits.seed == 3
    again = criteo_splits(tsv, seed=3)
    np.testing.assert_array_equal(splits.test.sparse_ids, again.test.sparse_ids)
    assert splits.train.multi_hot_ids.shape == (16_000, 0)


# ------------------------------------------------------------------ errors


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_criteo_tsv(tmp_path / "nope.txt")


def test_empty_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no rows"):
        load_criteo_tsv(_write(tmp_path / "empty.txt", "\n\n"))


def test_truncated_file_names_file_and_line(tmp_path: Path) -> None:
    cut = _line()[:-40] + "\n"
    path = _write(tmp_path / "train.txt", _line(), "\n", _line(), cut, _line())
    with pytest.raises(DataError) as info:
        load_criteo_tsv(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: ") and "truncated?" in message
    assert "expected 40" in message


def test_truncated_last_line_without_newline_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.txt", _line(), _line()[:30])
    with pytest.raises(DataError, match=r"train\.txt:2: .*truncated\?"):
        load_criteo_tsv(path)


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        (_line(tokens=["68fd1e64"] * 4 + ["68fd1x64"] + ["68fd1e64"] * 21), "C5", "68fd1x64"),
        (_line(tokens=["68fd1e64"] * 25 + ["0123456789abcdef0"]), "C26", "0123456789abcdef0"),
        (_line(label="yes"), "label", "yes"),
        (_line(label=""), "label", ""),
        (_line(ints=["1"] * 2 + ["3.5"] + ["1"] * 10), "I3", "3.5"),
        (_line(ints=["1"] * 12 + ["-"]), "I13", "-"),
        (_line(ints=["12a"] + ["1"] * 12), "I1", "12a"),
    ],
)
def test_malformed_fields_name_file_line_field_and_value(tmp_path: Path, line: str, field: str, value: str) -> None:
    path = _write(tmp_path / "day_0.tsv", _line(), _line(), line)
    with pytest.raises(DataError) as info:
        load_criteo_tsv(path)
    assert str(info.value).startswith(f"{path}:3: field {field!r} is {value!r}, expected")


def test_bad_cardinalities_and_max_rows_are_rejected(tsv: Path) -> None:
    with pytest.raises(DataError, match="26 positive integers"):
        load_criteo_tsv(tsv, cardinalities=[0] * 26)
    with pytest.raises(DataError, match="max_rows"):
        load_criteo_tsv(tsv, max_rows=0)


def test_hidden_labels_have_pairwise_interactions_a_linear_model_cannot_fit() -> None:
    from toolkit.data.criteo import _LABEL_INTERACTION_HEAD, _LABEL_INTERACTION_STD, _interactions

    rng = np.random.default_rng(0)
    ranks = rng.integers(1, _LABEL_INTERACTION_HEAD + 1, size=(20_000, 26))  # head values only: the documented scale applies
    term = _interactions(ranks)
    # std 4 logits over rows whose every field is a head value (sampling error of 20k rows ~1%)
    assert term.std() == pytest.approx(_LABEL_INTERACTION_STD, rel=0.05)
    # not additive in the fields: swapping the values of two fields changes the term by more than their own effects
    a, b = ranks[:1].copy(), ranks[:1].copy()
    rows = np.concatenate([a, a, b, b])
    rows[1, 0] = rows[3, 0] = a[0, 0] % _LABEL_INTERACTION_HEAD + 1  # field C1: value x or another head value
    rows[2, 1] = rows[3, 1] = a[0, 1] % _LABEL_INTERACTION_HEAD + 1  # field C2: value y or another head value
    f = _interactions(rows)
    assert abs(f[0] - f[1] - f[2] + f[3]) > 1e-3


def test_only_the_head_values_of_a_table_interact() -> None:
    from toolkit.data.criteo import _LABEL_INTERACTION_HEAD, _interactions

    ranks = np.full((2, 26), _LABEL_INTERACTION_HEAD + 1)
    ranks[1, 0] = 1  # one head value alone has nothing to interact with
    assert np.all(_interactions(ranks) == 0)
