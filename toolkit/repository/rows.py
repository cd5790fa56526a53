"""Real rows of a checkpoint's data split, in the forms served models take them.

The builder's sample rows (warmup requests, INT8 calibration, the checks of every variant) and
the test rows that ``tritonrec perf`` and ``tritonrec tune`` send to perf_analyzer come from the
split the checkpoint was trained on (:func:`toolkit.data.checkpoint_split.checkpoint_splits`),
so every id is real and in range. Reads JSON and the MovieLens folder only (no torch): perf runs
next to a server.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from toolkit.data.checkpoint_split import checkpoint_splits
from toolkit.errors import CheckpointError, DataError
from toolkit.repository.raw_inputs import raw_request

__all__ = ["SAMPLE_ROWS", "checkpoint_sample_rows", "checkpoint_test_rows"]

#: Sample rows the builder gets: enough for a warmup batch and a calibration pass, few enough to build in seconds.
SAMPLE_ROWS = 256


def checkpoint_sample_rows(
    checkpoint: Path, data_dir: Path, *, n_rows: int = SAMPLE_ROWS, on_note: Callable[[str], None] | None = None
) -> dict[str, np.ndarray] | None:
    """The first ``n_rows`` training rows of the checkpoint's split, encoded (input name -> (N, ...) array).

    None when there are no real rows to take (the builder then uses random in-range rows of the
    model's ``example_inputs``): the checkpoint has no ``vocabularies.json`` (a model fed
    pre-encoded ids), ``data_dir`` is not a folder, or the split cannot be read; in the last case
    ``on_note`` receives one line saying why.
    """
    checkpoint, data_dir = Path(checkpoint), Path(data_dir)
    if not (checkpoint / "vocabularies.json").is_file() or not data_dir.is_dir():
        return None
    try:
        return checkpoint_splits(checkpoint, data_dir).train.take(slice(0, n_rows)).inputs()
    except (CheckpointError, DataError) as exc:
        if on_note is not None:
            on_note(f"no real sample rows from {data_dir} ({exc}); using random in-range rows")
        return None


def checkpoint_test_rows(checkpoint: Path, data_dir: Path, n_rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The first ``n_rows`` rows of the checkpoint's test split (its seed and vocabularies), twice:
    encoded (``EncodedRows.inputs()``, what a ranker takes) and as the raw-feature request of the
    same rows (:func:`toolkit.repository.raw_inputs.raw_request`, BYTES, what ``<model>_ensemble`` takes).

    Raises:
        CheckpointError: the checkpoint's JSON files are missing or unreadable, or it has no vocabularies.
        DataError: from reading ``data_dir``.
    """
    splits = checkpoint_splits(checkpoint, data_dir)
    index = slice(0, n_rows)
    return splits.test.take(index).inputs(), raw_request(splits.raw_test.take(index))
