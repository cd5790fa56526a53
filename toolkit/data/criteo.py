"""Criteo-format click logs: the Kaggle table sizes, a generator of Criteo-shaped rows,
a fast loader, and the Criteo-Kaggle-shaped DLRM configuration.

No package ships Criteo's rows (DESIGN.md, "Data"), so scale and speed work runs on
generated rows in Criteo's own format, which the same loader also reads from the real
Kaggle ``train.txt``.

**Format** (Criteo Kaggle Display Advertising Challenge, ``train.txt``): one row per
line, 40 tab-separated fields, no header::

    label  I1 .. I13  C1 .. C26

* ``label``: ``0`` or ``1`` (clicked);
* ``I1..I13``: integer features (mostly counts; a few real values are negative), a
  missing value is an empty field;
* ``C1..C26``: categorical features as 8-hex-digit hashes (``68fd1e64``), a missing
  value is an empty field.

**Loading** follows DLRM's Criteo preprocessing (facebookresearch/dlrm,
``data_utils.py`` and ``dlrm_data_pytorch.py``; Naumov et al., "Deep Learning
Recommendation Model for Personalization and Recommendation Systems",
arXiv:1906.00091, 2019): a missing field reads as 0; dense features are
``log(1 + max(x, 0))``; a categorical token becomes ``int(token, 16) % cardinality``,
the hashing trick DLRM applies with ``--max-ind-range`` to cap its tables. One difference:
DLRM hashes every table with the one modulus ``max_ind_range`` and then maps the distinct
hashed values to consecutive ids with a dictionary; here each table hashes with its own
(capped) cardinality, so ids index the tables directly and no dictionary is needed. On
the real Kaggle data distinct tokens may then share an id (also in the small tables),
and a missing token shares id 0 with the tokens that hash to 0.

**Generation** (:func:`generate_criteo_tsv`): categorical values follow a truncated
Zipf law per table (rank ``r`` with probability proportional to ``r**-a``,
``1 <= r <= cardinality``); each rank maps to a fixed 8-hex-digit token chosen so that
the loader, given the same cardinalities, reads rank ``r`` back as id ``r % cardinality``
(the most frequent value of every table is id 1, id 0 is mostly "missing"). Labels come
from a fixed hidden model, about 25% positive like Criteo's:

    logit = bias + Σ_j w_j·(log1p(I_j) − log1p(scale_j))    (3 dense features)
                 + Σ_t e_t(C_t)                               (per-value effects, 4 tables)
                 + Σ_{s<t} ⟨v_s(C_s), v_t(C_t)⟩                 (pairwise interactions, all 26 tables)

The last term is a factorization machine (Rendle, 2010) whose hidden vectors ``v_t(value)``
(for each table's 8 most frequent values; rarer values do not interact) have 16 dimensions, the
baseline DLRM's embedding dim, so fitting it takes embeddings of that size: a student with 8- or
4-dimensional embeddings can only learn a low-rank approximation of each pair's interactions and
loses AUC. Its spread is set so the interaction term has a standard deviation of 4 logits over
rows whose every field is a head value, the strongest term of the logit: the true logits rank at
AUC 0.91, the linear terms alone at 0.78 (``perf/criteo_label_signal.py``). Why a head of 8 values
and not more: the hidden model then has 26·8·16 = 3,328 parameters, few enough for the baseline to
learn from 10^5 rows (with a head of 64 values, 26,624 of them, it learnt none of the interactions in
two epochs on 160,000 rows, and students of any size matched it). Tokens and the hidden model do
not depend on the seed: files generated with different seeds are samples of the same distribution.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit._io import readable_by_others
from toolkit.data.features import EncodedRows
from toolkit.data.split import random_split
from toolkit.errors import DataError

__all__ = [
    "KAGGLE_CARDINALITIES",
    "CRITEO_DENSE_FEATURES",
    "CRITEO_SPARSE_FEATURES",
    "CRITEO_NUM_FIELDS",
    "DEFAULT_CARDINALITY_CAP",
    "CriteoSplits",
    "criteo_cardinalities",
    "criteo_dlrm_kwargs",
    "generate_criteo_tsv",
    "load_criteo_tsv",
    "criteo_splits",
]

#: Number of distinct values of C1..C26 in the Criteo Kaggle Display Advertising Challenge
#: ``train.txt`` (45,840,617 rows): the per-feature counts that DLRM's Kaggle preprocessing
#: computes and saves as ``train_fea_count.npz`` (facebookresearch/dlrm, ``data_utils.py``,
#: ``getCriteoAdData``; Naumov et al. 2019, arXiv:1906.00091), i.e. DLRM's embedding-table
#: sizes (``ln_emb``) for Kaggle, as reproduced in many DLRM-based code bases.
KAGGLE_CARDINALITIES: tuple[int, ...] = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip

CRITEO_DENSE_FEATURES: tuple[str, ...] = tuple(f"I{i}" for i in range(1, 14))
CRITEO_SPARSE_FEATURES: tuple[str, ...] = tuple(f"C{i}" for i in range(1, 27))
#: Fields per line: the label, 13 integer and 26 categorical features.
CRITEO_NUM_FIELDS = 1 + len(CRITEO_DENSE_FEATURES) + len(CRITEO_SPARSE_FEATURES)
_FIELD_NAMES: tuple[str, ...] = ("label", *CRITEO_DENSE_FEATURES, *CRITEO_SPARSE_FEATURES)
#: Table-size cap of the compression issue's Criteo DLRM (and DLRM's hashing trick).
DEFAULT_CARDINALITY_CAP = 100_000

_HINT = "regenerate it with toolkit.data.criteo.generate_criteo_tsv, or check that it is Criteo's train.txt format"
_CHUNK_ROWS = 65_536  # rows generated per step (bounds memory for big files)
_MAX_INT_CHARS = 18  # a sign and 17 digits, or 18 digits: never overflows int64
_MAX_HEX_CHARS = 16  # a token must fit in 64 bits

# ---------------------------------------------------------------- generator's parameters
# Missing-value rates per field, approximately the pattern reported for the Kaggle data
# (I1/I10 ~45%, I12 ~77%, a group of categorical features missing together ~44% or ~3%).
_DENSE_MISSING = np.array([0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0005, 0.04, 0.45, 0.04, 0.77, 0.22])
_SPARSE_MISSING = np.array(
    [0, 0, 0.034, 0.034, 0, 0.12, 0, 0, 0, 0, 0, 0.034, 0, 0, 0, 0.034, 0, 0, 0.44, 0.44, 0.034, 0.76, 0, 0.034, 0.44, 0.44]
)
# Typical size of each integer feature (about the Kaggle means); values are heavy-tailed counts.
_DENSE_SCALE = np.array([3.5, 105, 26, 7.3, 18500, 116, 16, 12.5, 106, 0.6, 2.7, 0.9, 8.2])
_DENSE_SIGMA = 1.2  # log-normal spread of the counts
# Hidden label model: logit = bias + sum of dense terms + per-value effects of a few tables.
_LABEL_DENSE = {0: 0.45, 4: -0.25, 10: 0.5}  # field index in I1..I13 -> weight on log1p(x) - log1p(scale)
_LABEL_SPARSE = {0: 0.9, 1: 0.7, 5: 0.8, 13: 0.9}  # table index in C1..C26 -> spread of per-value effects
#: Hidden pairwise-interaction vectors: dimension (the baseline DLRM's embedding dim) and the
#: logit standard deviation of their sum over the 325 field pairs when every field is present.
_LABEL_INTERACTION_DIM = 16
_LABEL_INTERACTION_STD = 4.0
#: Only a table's most frequent values interact (rank <= this): each of them is seen often
#: enough in 10^5 rows for a model to learn its vector; rarer values have v = 0.
_LABEL_INTERACTION_HEAD = 8
_TARGET_POSITIVE_RATE = 0.25
_HEAD_RANKS = 1 << 10  # ranks sampled from the exact discrete Zipf law; beyond: continuous tail (rel. error < 1e-6)


def criteo_cardinalities(cap: int = DEFAULT_CARDINALITY_CAP) -> list[int]:
    """The 26 Kaggle cardinalities, each capped at ``cap`` (``min(card, cap)``).

    Raises:
        DataError: ``cap`` < 1.
    """
    if cap < 1:
        raise DataError(f"cardinality cap must be >= 1, got {cap}")
    return [min(c, cap) for c in KAGGLE_CARDINALITIES]


def criteo_dlrm_kwargs(cap: int = DEFAULT_CARDINALITY_CAP) -> dict:
    """Fields of the Criteo-Kaggle-shaped DLRM of the compression issue, for
    ``toolkit.models.dlrm.DLRMConfig(**criteo_dlrm_kwargs())``.

    13 dense features; 26 single-valued tables of the Kaggle cardinalities capped at
    ``cap`` rows; embedding dimension 16; bottom MLP 13-512-256-64-16; top MLP
    (16 + 351 interactions)-512-256-1; no multi-valued tables (the model takes two inputs).
    The data stage may not import the model stage (``.importlinter``), hence a dict.
    """
    return {
        "num_dense": len(CRITEO_DENSE_FEATURES),
        "sparse_cardinalities": criteo_cardinalities(cap),
        "multi_hot_cardinalities": [],
        "multi_hot_lengths": [],
        "embedding_dim": 16,
        "bottom_mlp": [512, 256, 64],
        "top_mlp": [512, 256],
    }


def _check_cardinalities(cardinalities: Sequence[int] | None) -> list[int]:
    if cardinalities is None:
        return criteo_cardinalities()
    cards = [int(c) for c in cardinalities]
    if len(cards) != len(CRITEO_SPARSE_FEATURES) or any(c < 1 for c in cards):
        raise DataError(f"cardinalities must be {len(CRITEO_SPARSE_FEATURES)} positive integers (C1..C26), got {list(cardinalities)}")
    return cards


# ---------------------------------------------------------------- generation


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic): a stable integer hash."""
    x = x.astype(np.uint64, copy=True)
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _hash(table: int | np.ndarray, salt: int, ranks: np.ndarray) -> np.ndarray:
    """Stable uint64 hash of (table, salt, rank); ``table`` broadcasts against ``ranks``."""
    tables = np.asarray(table, dtype=np.uint64)
    key = (tables + np.uint64(1)) * np.uint64(0x9E3779B1) + np.uint64(salt * 0x85EBCA77)
    return _splitmix64(ranks.astype(np.uint64) ^ key)


def _tokens(table: int | np.ndarray, ranks: np.ndarray, card: int | np.ndarray) -> np.ndarray:
    """uint64 token values < 2**32 of 1-based ``ranks``, with ``token % card == rank % card``
    (``table`` and ``card`` broadcast against ``ranks``)."""
    cards = np.asarray(card, dtype=np.uint64)
    ids = ranks.astype(np.uint64) % cards
    k_max = (np.uint64(0xFFFFFFFF) - ids) // cards
    k = _hash(table, 1, ranks) % (k_max + np.uint64(1))
    return ids + k * cards


def _effects(table: int, ranks: np.ndarray, spread: float) -> np.ndarray:
    """The hidden model's fixed per-value effect of 1-based ``ranks``: uniform, std ``spread``."""
    u = (_hash(table, 2, ranks) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return (2.0 * u - 1.0) * math.sqrt(3.0) * spread


def _interactions(ranks: np.ndarray) -> np.ndarray:
    """Σ over field pairs s < t of ⟨v_s, v_t⟩ for (n, 26) 1-based ``ranks`` (0 = missing: v = 0;
    ranks past :data:`_LABEL_INTERACTION_HEAD`: v = 0).

    Each ``v_t(rank)`` has :data:`_LABEL_INTERACTION_DIM` uniform entries of std ``σ``, fixed by
    hashing (table, dimension, rank). With F fields the pair sum has variance P·K·σ⁴ (P = F(F-1)/2
    pairs, K dims), so ``σ = (std² / (P·K))**0.25`` gives it the std :data:`_LABEL_INTERACTION_STD`
    on rows whose every field is a head value (real rows, with missing and tail values, less).
    Computed with the factorization-machine identity Σ_{s<t}⟨v_s,v_t⟩ = (‖Σ_t v_t‖² − Σ_t ‖v_t‖²) / 2.
    """
    n, fields = ranks.shape
    k = _LABEL_INTERACTION_DIM
    sigma = (_LABEL_INTERACTION_STD**2 / (fields * (fields - 1) / 2 * k)) ** 0.25
    total = np.zeros((n, k))
    squares = np.zeros(n)
    for t in range(fields):
        present = (ranks[:, t] > 0) & (ranks[:, t] <= _LABEL_INTERACTION_HEAD)
        r = ranks[present, t]
        v = np.empty((len(r), k))
        for d in range(k):
            u = (_hash(t, 100 + d, r) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
            v[:, d] = (2.0 * u - 1.0) * math.sqrt(3.0) * sigma
        total[present] += v
        squares[present] += (v * v).sum(axis=1)
    return 0.5 * ((total * total).sum(axis=1) - squares)


class _ZipfSampler:
    """Rank ``r`` in ``1..n`` with probability ∝ ``r**-a``: exact for the first
    ``_HEAD_RANKS`` ranks, a continuous power law (rounded) for the tail of big tables."""

    def __init__(self, n: int, a: float) -> None:
        self.n, self.a = n, a
        head = min(n, _HEAD_RANKS)
        self.head_cdf = np.cumsum(np.arange(1, head + 1, dtype=np.float64) ** -a)
        head_mass = float(self.head_cdf[-1])
        self.lo, self.hi = head + 0.5, n + 0.5  # sum_{r=head+1..n} r^-a ≈ ∫_{lo}^{hi} x^-a dx
        tail_mass = self._primitive(self.hi) - self._primitive(self.lo) if n > head else 0.0
        self.p_head = head_mass / (head_mass + tail_mass)

    def _primitive(self, x: float | np.ndarray) -> float | np.ndarray:
        return np.log(x) if self.a == 1.0 else x ** (1.0 - self.a) / (1.0 - self.a)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        u = rng.random(size)
        ranks = np.searchsorted(self.head_cdf, u * self.head_cdf[-1] / self.p_head, side="right") + 1
        tail = u >= self.p_head
        if tail.any():
            v = (u[tail] - self.p_head) / (1.0 - self.p_head)  # uniform in [0, 1)
            f_lo, f_hi = self._primitive(self.lo), self._primitive(self.hi)
            f = f_lo + v * (f_hi - f_lo)
            x = np.exp(f) if self.a == 1.0 else (f * (1.0 - self.a)) ** (1.0 / (1.0 - self.a))
            ranks[tail] = np.clip(np.rint(x), self.lo + 0.5, self.n).astype(np.int64)
        return np.minimum(ranks, self.n).astype(np.int64)


_TAB, _NEWLINE, _ZERO = ord("\t"), ord("\n"), ord("0")


def _hex_bytes(values: np.ndarray) -> np.ndarray:
    """uint64 values < 2**32, any shape (...) -> (..., 8) uint8, lowercase zero-padded hex digits."""
    octets = values.astype(">u4").view(np.uint8).reshape(*values.shape, 4)
    nibbles = np.stack([octets >> 4, octets & 0xF], axis=-1).reshape(*values.shape, 8)
    return nibbles + np.uint8(_ZERO) + (nibbles > 9) * np.uint8(ord("a") - _ZERO - 10)


def _four_digits(leading: str) -> np.ndarray:
    """(10000,) uint32 table: the 4 digit bytes of 0..9999, leading zeros as ``leading``."""
    text = "".join(f"{v:4d}".replace(" ", leading) for v in range(10_000)).encode("latin-1")
    return np.frombuffer(text, dtype=np.uint32)


_DIGITS_NUL = _four_digits("\0")  # "   7" -> "\0\0\07"
_DIGITS_ZERO = np.frombuffer("".join(f"{v:04d}" for v in range(10_000)).encode(), dtype=np.uint32)  # "0007"
_DIGITS_HIGH = _DIGITS_NUL.copy()
_DIGITS_HIGH[0] = 0  # the high half of a value < 10000 is empty
_MAX_DENSE = 99_999_999  # generated integers have at most 8 digits


def _decimal_bytes(values: np.ndarray) -> np.ndarray:
    """Int64 values in ``0.._MAX_DENSE``, any shape (...) -> (..., 8) uint8 decimal digits,
    right-aligned, leading zeros as NUL bytes (the writer drops NULs: the field reads ``"42"``)."""
    high, low = np.divmod(values, 10_000)
    out = np.empty((*values.shape, 2), dtype=np.uint32)
    out[..., 0] = _DIGITS_HIGH[high]
    out[..., 1] = np.where(high > 0, _DIGITS_ZERO[low], _DIGITS_NUL[low])
    return out.view(np.uint8).reshape(*values.shape, 8)


@dataclass
class _Chunk:
    labels: np.ndarray  # (n,) int8
    dense: np.ndarray  # (n, 13) int64, -1 = missing
    ranks: np.ndarray  # (n, 26) int64, 0 = missing


def _sample_chunk(rng: np.random.Generator, n: int, samplers: list[_ZipfSampler]) -> tuple[_Chunk, np.ndarray]:
    """Rows without labels, and their hidden-model logits (without the bias)."""
    dense = np.floor(_DENSE_SCALE * rng.lognormal(-0.5 * _DENSE_SIGMA**2, _DENSE_SIGMA, size=(n, len(_DENSE_SCALE))))
    dense = np.minimum(dense, _MAX_DENSE).astype(np.int64)
    dense[rng.random((n, len(_DENSE_SCALE))) < _DENSE_MISSING] = -1
    ranks = np.stack([s.sample(rng, n) for s in samplers], axis=1)
    ranks[rng.random((n, len(samplers))) < _SPARSE_MISSING] = 0
    logits = np.zeros(n)
    for j, w in _LABEL_DENSE.items():
        logits += w * (np.log1p(np.maximum(dense[:, j], 0)) - math.log1p(_DENSE_SCALE[j]))
    for t, spread in _LABEL_SPARSE.items():
        present = ranks[:, t] > 0
        logits[present] += _effects(t, ranks[present, t], spread)
    logits += _interactions(ranks)
    return _Chunk(np.zeros(n, dtype=np.int8), dense, ranks), logits


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _label_bias(samplers: list[_ZipfSampler]) -> float:
    """Intercept that makes about ``_TARGET_POSITIVE_RATE`` of the rows positive (fixed pilot sample)."""
    _, logits = _sample_chunk(np.random.default_rng(20140201), 50_000, samplers)
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sigmoid(logits + mid).mean() < _TARGET_POSITIVE_RATE else (lo, mid)
    return 0.5 * (lo + hi)


def _format_chunk(chunk: _Chunk, cards: list[int]) -> bytes:
    """The rows as TSV bytes, built without a Python loop over rows or fields: every field goes
    into a fixed-width slot of an (n, 40, width + 1) byte array, right-aligned after NUL padding
    and followed by its separator; dropping the NULs leaves the lines (an empty field leaves
    only its separator)."""
    n, n_dense = chunk.dense.shape
    width = 8
    out = np.zeros((n, CRITEO_NUM_FIELDS, width + 1), dtype=np.uint8)
    out[:, :, width] = _TAB
    out[:, -1, width] = _NEWLINE
    out[:, 0, width - 1] = chunk.labels.astype(np.uint8) + _ZERO
    dense = _decimal_bytes(np.maximum(chunk.dense, 0))
    dense[chunk.dense < 0] = 0  # missing: empty field
    out[:, 1 : 1 + n_dense, :width] = dense
    tables = np.arange(len(cards), dtype=np.uint64)
    tokens = _hex_bytes(_tokens(tables, np.maximum(chunk.ranks, 1), np.array(cards, dtype=np.uint64)))
    tokens[chunk.ranks == 0] = 0  # missing: empty field
    out[:, 1 + n_dense :, width - 8 : width] = tokens
    flat = out.reshape(-1)
    return flat[flat != 0].tobytes()


def generate_criteo_tsv(
    path: Path,
    n_rows: int,
    *,
    seed: int = 0,
    zipf_a: float = 1.2,
    cardinalities: Sequence[int] | None = None,
) -> Path:
    """Write ``n_rows`` generated rows in Criteo's TSV format to ``path`` (atomically).

    Args:
        path: the file to write (its folder is created; an existing file is replaced only
            when the whole file has been written).
        n_rows: number of rows (>= 1).
        seed: seed of the row sampler (tokens and the hidden label model do not depend on it).
        zipf_a: Zipf exponent ``a`` (> 0) of every categorical table.
        cardinalities: the 26 table sizes the ranks are truncated to; default
            :func:`criteo_cardinalities` (Kaggle sizes capped at 100,000). With
            :data:`KAGGLE_CARDINALITIES` the ranks span the full Kaggle tables and the
            loader's hashing trick folds them into its capped tables.

    Returns:
        ``path``.

    Raises:
        DataError: invalid ``n_rows``, ``zipf_a`` or ``cardinalities``.
    """
    if n_rows < 1:
        raise DataError(f"n_rows must be >= 1, got {n_rows}")
    if not zipf_a > 0:
        raise DataError(f"zipf_a must be > 0, got {zipf_a}")
    cards = _check_cardinalities(cardinalities)
    samplers = [_ZipfSampler(c, float(zipf_a)) for c in cards]
    bias = _label_bias(samplers)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for start in range(0, n_rows, _CHUNK_ROWS):
                chunk, logits = _sample_chunk(rng, min(_CHUNK_ROWS, n_rows - start), samplers)
                chunk.labels = (rng.random(len(logits)) < _sigmoid(logits + bias)).astype(np.int8)
                f.write(_format_chunk(chunk, cards))
            f.flush()
            os.fsync(f.fileno())
        readable_by_others(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------- loading

_NIBBLE = np.full(256, 255, dtype=np.uint8)  # 255: not a hex digit
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i
_READ_BYTES = 16 << 20  # bytes read per step (about 65k rows of Criteo)


_PAD = 32  # NUL bytes after a block, so that a fixed-width window at any field start stays inside


@dataclass
class _Block:
    """Field boundaries of the rows of one block of whole lines."""

    path: Path
    data: bytes  # the lines, then _PAD NUL bytes
    starts: np.ndarray  # (n, 40) int64, first byte of each field
    lengths: np.ndarray  # (n, 40) int64
    lines: np.ndarray  # (n,) int64, 1-based line number of each row

    def fail(self, row: int, field: int, expected: str) -> DataError:
        start = int(self.starts[row, field])
        value = self.data[start : start + int(self.lengths[row, field])].decode("utf-8", errors="replace")
        if len(value) > 40:
            value = value[:40] + "..."
        return DataError(f"{self.path}:{self.lines[row]}: field {_FIELD_NAMES[field]!r} is {value!r}, expected {expected}", hint=_HINT)

    def chars(self, fields: slice, max_chars: int, expected: str) -> tuple[np.ndarray, np.ndarray]:
        """(n, F, W) uint8 bytes of the columns ``fields`` (W: their longest value, NUL after
        each value's end) and the (n, F, W) mask of the bytes that belong to the values.

        Raises:
            DataError: a value longer than ``max_chars`` (the first one in file order).
        """
        lengths = self.lengths[:, fields]
        too_long = lengths > max_chars
        if too_long.any():
            row, col = np.unravel_index(int(np.argmax(too_long)), too_long.shape)
            raise self.fail(int(row), range(CRITEO_NUM_FIELDS)[fields][col], expected)
        width = max(int(lengths.max(initial=0)), 1)
        windows = np.lib.stride_tricks.sliding_window_view(np.frombuffer(self.data, dtype=np.uint8), width)
        mask = np.arange(width) < lengths[..., None]
        return np.where(mask, windows[self.starts[:, fields]], 0), mask

    def first_bad(self, bad: np.ndarray, fields: slice, expected: str) -> DataError:
        """The error for the first True of an (n, F) ``bad`` in file order."""
        row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
        return self.fail(int(row), range(CRITEO_NUM_FIELDS)[fields][col], expected)


def _split_block(path: Path, data: bytes, first_line: int) -> _Block:
    """Find the fields of ``data`` (whole lines, each ending in a newline; blank lines skipped).

    Raises:
        DataError: a line whose number of fields is not 40.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf <= _NEWLINE)  # tabs, newlines and other control bytes (rare: one pass)
    ends = ends[buf[ends] >= _TAB]  # where each field ends (a stray control byte fails as field content)
    line_end = buf[ends] == _NEWLINE
    newlines = ends[line_end]
    line_starts = np.concatenate([[0], newlines[:-1] + 1])
    keep = newlines > line_starts  # blank lines hold no row
    n_fields = np.diff(np.concatenate([[-1], np.flatnonzero(line_end)]))
    bad = keep & (n_fields != CRITEO_NUM_FIELDS)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{path}:{first_line + i}: {n_fields[i]} tab-separated fields, expected {CRITEO_NUM_FIELDS} "
            "(label, I1..I13, C1..C26); truncated?",
            hint=_HINT,
        )
    if not keep.all():
        blank = np.zeros(len(ends), dtype=bool)
        blank[np.flatnonzero(line_end)[~keep]] = True
        ends = ends[~blank]
    ends = ends.reshape(-1, CRITEO_NUM_FIELDS)
    starts = np.empty_like(ends)
    starts[:, 0] = line_starts[keep]
    starts[:, 1:] = ends[:, :-1] + 1
    return _Block(path, data + bytes(_PAD), starts, ends - starts, first_line + np.flatnonzero(keep))


_LABEL = slice(0, 1)
_INTS = slice(1, 1 + len(CRITEO_DENSE_FEATURES))
_TOKENS = slice(1 + len(CRITEO_DENSE_FEATURES), CRITEO_NUM_FIELDS)


def _parse_labels(block: _Block) -> np.ndarray:
    chars, _ = block.chars(_LABEL, 1, "0 or 1")
    first = chars[:, 0, 0]
    ok = (first == _ZERO) | (first == _ZERO + 1)  # an empty label reads as NUL: not ok
    if not ok.all():
        raise block.fail(int(np.argmax(~ok)), 0, "0 or 1")
    return (first == _ZERO + 1).astype(np.float32)


def _parse_ints(block: _Block) -> np.ndarray:
    """(n, 13) int64 values of I1..I13 (optional leading ``-``; empty: 0)."""
    expected = "an integer or an empty field"
    chars, mask = block.chars(_INTS, _MAX_INT_CHARS, expected)
    digits = chars - np.uint8(_ZERO)  # wraps for non-digits: anything > 9 is not a digit
    is_digit = digits <= 9
    negative = (chars[..., 0] == ord("-")) & (block.lengths[:, _INTS] > 1)
    ok = is_digit | ~mask
    ok[..., 0] |= negative
    bad = ~ok.all(axis=-1)
    if bad.any():
        raise block.first_bad(bad, _INTS, expected)
    use = mask & is_digit
    value = np.zeros(chars.shape[:2], dtype=np.int64)
    for k in range(chars.shape[2]):
        value = np.where(use[..., k], value * 10 + digits[..., k], value)
    return np.where(negative, -value, value)


def _parse_tokens(block: _Block, cards: np.ndarray) -> np.ndarray:
    """(n, 26) int64 ``int(token, 16) % card`` of C1..C26 (empty: 0)."""
    expected = "a hexadecimal token or an empty field"
    chars, mask = block.chars(_TOKENS, _MAX_HEX_CHARS, expected)
    nibbles = _NIBBLE[chars]
    bad = ((nibbles == 255) & mask).any(axis=-1)
    if bad.any():
        raise block.first_bad(bad, _TOKENS, expected)
    lengths = block.lengths[:, _TOKENS]
    if chars.shape[2] == 8 and ((lengths == 8) | (lengths == 0)).all():  # Criteo's tokens: 8 digits or empty
        nibbles[~mask] = 0
        octets = (nibbles[..., 0::2] << 4) | nibbles[..., 1::2]
        value = np.ascontiguousarray(octets).view(">u4")[..., 0].astype(np.uint64)
        return (value % cards).astype(np.int64)
    value = np.zeros(chars.shape[:2], dtype=np.uint64)
    for k in range(chars.shape[2]):
        value = np.where(mask[..., k], (value << np.uint64(4)) | nibbles[..., k].astype(np.uint64), value)
    return (value % cards).astype(np.int64)


def _parse_block(block: _Block, cards: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = _parse_labels(block)
    dense = np.log1p(np.maximum(_parse_ints(block), 0).astype(np.float64)).astype(np.float32)
    return dense, _parse_tokens(block, cards), labels


def _blocks(path: Path, max_rows: int | None):
    """Yield (bytes of whole lines, number of the first line), about ``_READ_BYTES`` at a time."""
    carry, line, rows_left = b"", 1, max_rows
    with path.open("rb") as f:
        while rows_left is None or rows_left > 0:
            chunk = f.read(_READ_BYTES)
            data = carry + chunk
            if not chunk:  # end of file: a last line without its newline
                if data:
                    yield data.removesuffix(b"\r") + b"\n", line
                return
            cut = data.rfind(b"\n") + 1
            data, carry = data[:cut], data[cut:]
            if not data:
                continue
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            if rows_left is not None:  # stop at the line holding the last row wanted (blank lines hold none)
                buf = np.frombuffer(data, dtype=np.uint8)
                newlines = np.flatnonzero(buf == _NEWLINE)
                row_ends = newlines[newlines > np.concatenate([[-1], newlines[:-1]]) + 1]
                if len(row_ends) >= rows_left:
                    data = data[: row_ends[rows_left - 1] + 1]
                rows_left -= min(len(row_ends), rows_left)
            yield data, line
            line += data.count(b"\n")


def load_criteo_tsv(
    path: Path,
    *,
    cardinalities: Sequence[int] | None = None,
    max_rows: int | None = None,
) -> EncodedRows:
    """Read a Criteo TSV file (generated, or the real Kaggle ``train.txt``) into model-ready rows.

    Parsing is vectorized over whole blocks of bytes (no Python loop per row or field).
    Blank lines are skipped; ``\\r\\n`` line ends are accepted.

    Args:
        path: the file.
        cardinalities: the 26 table sizes ids are hashed into (``int(token, 16) % size``);
            default :func:`criteo_cardinalities` (Kaggle sizes capped at 100,000).
        max_rows: read at most this many rows (the first ones); default all.

    Returns:
        :class:`EncodedRows` with ``dense_features`` (N, 13) float32 ``log(1 + max(x, 0))``
        (missing: 0), ``sparse_ids`` (N, 26) int64 in ``[0, cardinalities[s])`` (missing: 0),
        ``multi_hot_ids`` (N, 0) int64 and ``labels`` (N,) float32.

    Raises:
        DataError: the file is missing or unreadable, has no rows, a line does not have
            40 fields, or a label, integer or token is malformed (the message names the
            file, the line and the field).
    """
    path = Path(path)
    cards = _check_cardinalities(cardinalities)
    if max_rows is not None and max_rows < 1:
        raise DataError(f"max_rows must be >= 1, got {max_rows}")
    if not path.is_file():
        raise DataError(f"Criteo TSV file {path} does not exist", hint=_HINT)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    try:
        for data, first_line in _blocks(path, max_rows):
            block = _split_block(path, data, first_line)
            if len(block.lines):
                parts.append(_parse_block(block, np.array(cards, dtype=np.uint64)))
    except OSError as exc:
        raise DataError(f"cannot read Criteo TSV file {path}: {exc}") from exc
    if not parts:
        raise DataError(f"{path}: no rows found", hint=_HINT)
    dense, sparse, labels = (np.concatenate(p) for p in zip(*parts, strict=True))
    return EncodedRows(dense, sparse, np.zeros((len(labels), 0), dtype=np.int64), labels)


@dataclass
class CriteoSplits:
    """Train/validation/test rows of one Criteo TSV file and the table sizes their ids index."""

    train: EncodedRows
    val: EncodedRows
    test: EncodedRows
    cardinalities: list[int]
    seed: int


def criteo_splits(
    path: Path,
    *,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    cardinalities: Sequence[int] | None = None,
    max_rows: int | None = None,
) -> CriteoSplits:
    """Load ``path`` with :func:`load_criteo_tsv` and split it at random
    (:func:`toolkit.data.split.random_split` with ``fractions`` and ``seed``).

    Raises:
        DataError: see :func:`load_criteo_tsv` and :func:`toolkit.data.split.random_split`.
    """
    cards = _check_cardinalities(cardinalities)
    rows = load_criteo_tsv(path, cardinalities=cards, max_rows=max_rows)
    train, val, test = random_split(len(rows), fractions, seed=seed)
    return CriteoSplits(rows.take(train), rows.take(val), rows.take(test), cards, seed)
