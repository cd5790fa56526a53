"""One call from a MovieLens folder to encoded train/validation/test splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.data.features import EncodedRows, FeatureEncoder, RawRows, raw_rows
from toolkit.data.movielens import load_movielens
from toolkit.data.split import random_split

__all__ = ["Splits", "load_splits"]


@dataclass
class Splits:
    """Encoded splits of one data set plus the encoder fitted on the training split.

    ``raw_*`` keep the rows as strings (what a product would send) for the same indices.
    """

    encoder: FeatureEncoder
    train: EncodedRows
    val: EncodedRows
    test: EncodedRows
    raw_train: RawRows
    raw_val: RawRows
    raw_test: RawRows
    seed: int


def load_splits(data_dir: Path, *, seed: int = 42, zip_prefix_len: int = 3, encoder: FeatureEncoder | None = None) -> Splits:
    """Read MovieLens-100K from ``data_dir``, split it 80/10/10 at random with ``seed``,
    fit the vocabularies on the training split (or use ``encoder``, e.g. a checkpoint's)
    and encode all three.

    Raises:
        DataError: see :func:`toolkit.data.movielens.load_movielens`.
    """
    rows = raw_rows(load_movielens(Path(data_dir)), zip_prefix_len=zip_prefix_len)
    train_idx, val_idx, test_idx = random_split(len(rows), seed=seed)
    raw_train, raw_val, raw_test = rows.take(train_idx), rows.take(val_idx), rows.take(test_idx)
    encoder = encoder or FeatureEncoder.fit(raw_train)
    return Splits(
        encoder,
        encoder.transform(raw_train),
        encoder.transform(raw_val),
        encoder.transform(raw_test),
        raw_train,
        raw_val,
        raw_test,
        seed,
    )
