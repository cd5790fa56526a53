"""Data: MovieLens-100K loaders (RecBole atomic and GroupLens layouts), features, vocabularies, splits."""

from toolkit.data.dataset import Splits, load_splits
from toolkit.data.features import (
    DENSE_FEATURES,
    MULTI_HOT_FEATURES,
    OOV_ID,
    PAD_ID,
    SPARSE_FEATURES,
    EncodedRows,
    FeatureEncoder,
    RawRows,
    Vocabulary,
    raw_rows,
)
from toolkit.data.fetch import fetch_movielens
from toolkit.data.movielens import MovieLens, load_movielens
from toolkit.data.split import random_split

__all__ = [
    "DENSE_FEATURES",
    "MULTI_HOT_FEATURES",
    "OOV_ID",
    "PAD_ID",
    "SPARSE_FEATURES",
    "EncodedRows",
    "FeatureEncoder",
    "MovieLens",
    "RawRows",
    "Splits",
    "Vocabulary",
    "fetch_movielens",
    "load_movielens",
    "load_splits",
    "random_split",
    "raw_rows",
]
