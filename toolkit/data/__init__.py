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

from toolkit.data.criteo import (  # noqa: E402  (appended: Criteo format)
    CRITEO_DENSE_FEATURES,
    CRITEO_NUM_FIELDS,
    CRITEO_SPARSE_FEATURES,
    KAGGLE_CARDINALITIES,
    CriteoSplits,
    criteo_cardinalities,
    criteo_dlrm_kwargs,
    criteo_splits,
    generate_criteo_tsv,
    load_criteo_tsv,
)

__all__ += [
    "CRITEO_DENSE_FEATURES",
    "CRITEO_NUM_FIELDS",
    "CRITEO_SPARSE_FEATURES",
    "KAGGLE_CARDINALITIES",
    "CriteoSplits",
    "criteo_cardinalities",
    "criteo_dlrm_kwargs",
    "criteo_splits",
    "generate_criteo_tsv",
    "load_criteo_tsv",
]
