"""The raw-feature request an ensemble takes: the features as a product sends them.

An ensemble (``<model>_ensemble``) takes one row per candidate with these inputs (Triton
``TYPE_STRING``, i.e. BYTES, UTF-8):

==================  ===========  ==============================================================
input               shape        value
==================  ===========  ==============================================================
``user_id``         [B, 1]       the user's id as sent by the product, e.g. ``"196"``
``item_id``         [B, 1]       the item's id, e.g. ``"242"``
``age``             [B, 1]       the user's age in years, e.g. ``"24"``
``gender``          [B, 1]       ``"M"`` / ``"F"``
``occupation``      [B, 1]       e.g. ``"technician"``
``zip_code``        [B, 1]       the full zip code, e.g. ``"85711"`` (the model uses a prefix)
``release_year``    [B, 1]       e.g. ``"1995"``; ``""`` when unknown
``genres``          [B, G]       one genre per element, rows padded with ``""``; an element
                                 may also hold several joined by ``"|"`` (``"Action|Comedy"``)
==================  ===========  ==============================================================

Values never seen in training map to the out-of-vocabulary id, as in
:class:`toolkit.data.FeatureEncoder`. Integer ids are accepted by the client and sent as
their decimal strings.
"""

from __future__ import annotations

import numpy as np

from toolkit.data.features import RawRows
from toolkit.tensors import TensorSpec

__all__ = ["RAW_SCALAR_INPUTS", "RAW_INPUT_SPECS", "raw_request"]

# Raw request input -> the RawRows column it comes from.
RAW_SCALAR_INPUTS: dict[str, str] = {
    "user_id": "user_id",
    "item_id": "item_id",
    "age": "age",
    "gender": "gender",
    "occupation": "occupation",
    "zip_code": "zip_prefix",
    "release_year": "release_year",
}

RAW_INPUT_SPECS: tuple[TensorSpec, ...] = (
    *(TensorSpec(name, "object", (None, 1)) for name in RAW_SCALAR_INPUTS),
    TensorSpec("genres", "object", (None, None)),
)


def raw_request(rows: RawRows) -> dict[str, np.ndarray]:
    """The ensemble request for ``rows``: input name -> BYTES array (see the module docstring).

    ``rows.columns["zip_prefix"]`` already holds the prefix the model uses; it is sent as
    ``zip_code`` (a prefix of a prefix is itself). Returns object arrays of ``bytes``:
    scalars (N, 1), ``genres`` (N, G) with G = the most genres of any row (at least 1).
    """
    n = len(rows)
    request: dict[str, np.ndarray] = {}
    for name, column in RAW_SCALAR_INPUTS.items():
        values = np.empty((n, 1), dtype=object)
        values[:, 0] = [str(v).encode() for v in rows.columns[column]]
        request[name] = values
    genres = rows.columns["genres"]
    width = max([len(g) for g in genres] + [1])
    padded = np.full((n, width), b"", dtype=object)
    for r, gs in enumerate(genres):
        for c, g in enumerate(gs):
            padded[r, c] = str(g).encode()
    request["genres"] = padded
    return request
