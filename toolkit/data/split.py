"""Train/validation/test splits."""

from __future__ import annotations

import numpy as np

from toolkit.errors import DataError

__all__ = ["random_split"]


def random_split(
    n_rows: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), *, seed: int = 42
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n_rows)`` with ``seed`` and cut it into train/validation/test index arrays.

    Returns:
        Three int64 index arrays whose sizes follow ``fractions`` (the test split takes the rounding rest).

    Raises:
        DataError: fractions that are negative or do not sum to 1, or too few rows for three non-empty splits.
    """
    if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise DataError(f"split fractions {fractions} must be positive and sum to 1")
    if n_rows < 3:
        raise DataError(f"need at least 3 rows to split, got {n_rows}")
    order = np.random.default_rng(seed).permutation(n_rows)
    n_train = int(round(fractions[0] * n_rows))
    n_val = int(round(fractions[1] * n_rows))
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
