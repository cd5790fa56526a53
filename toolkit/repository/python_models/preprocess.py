"""Triton Python-backend model: raw request features -> the ranker's input tensors.

Copied by ``tritonrec build`` as ``<model>_preprocess/<version>/model.py`` next to
``vocabularies.json`` (``toolkit.data.FeatureEncoder.to_dict()`` of the checkpoint). It is
the first step of the ``<model>_ensemble`` and ``<model>_topk`` ensembles.

Inputs (Triton ``TYPE_STRING``, UTF-8; see ``toolkit/repository/raw_inputs.py``): ``user_id``,
``item_id``, ``age``, ``gender``, ``occupation``, ``zip_code``, ``release_year`` as [B, 1], and
``genres`` as [B, G] (one genre per element, rows padded with ``""``; an element may hold
several joined by ``"|"``).

Outputs, exactly as ``FeatureEncoder.transform`` encodes the same rows (the ranker's names;
dtypes are cast to whatever the model's config declares, e.g. FP16 or INT32 for a ranker
that takes those):

* ``dense_features`` FP32 [B, 2]: (age, release_year) standardized with the training mean and
  standard deviation; an empty or unparsable value becomes 0 (the mean);
* ``sparse_ids`` INT64 [B, 7]: ids of user, item, age, gender, occupation, zip prefix (first
  ``zip_prefix_len`` characters of ``zip_code``) and release year; unknown values -> 1 (OOV);
* ``multi_hot_ids`` INT64 [B, max_genres]: genre ids, unknown -> 1, padded with 0, genres
  beyond ``max_genres`` dropped.

Model parameters (``config.pbtxt`` ``parameters``): ``zip_prefix_len`` (default ``"3"``),
``vocabularies`` (file name in the version folder, default ``"vocabularies.json"``).

Self-contained on purpose (numpy and ``triton_python_backend_utils`` only): it runs inside
Triton's Python stub, where the toolkit need not be installed. The encoding is the
module-level :class:`RawFeatureEncoder` (no Triton import), which the toolkit's tests check
against ``FeatureEncoder.transform``.
"""

import json
from pathlib import Path

import numpy as np

PAD_ID = 0
OOV_ID = 1

# Raw request input -> the feature (vocabulary / RawRows column) it feeds.
# Mirrors toolkit.repository.raw_inputs.RAW_SCALAR_INPUTS (checked by the toolkit's tests).
RAW_TO_FEATURE = {
    "user_id": "user_id",
    "item_id": "item_id",
    "age": "age",
    "gender": "gender",
    "occupation": "occupation",
    "zip_code": "zip_prefix",
    "release_year": "release_year",
}
FEATURE_TO_RAW = {feature: raw for raw, feature in RAW_TO_FEATURE.items()}


def _text(value):
    """One request element as ``str``: bytes are decoded as UTF-8 (invalid bytes replaced), integers written in decimal."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def _number(text):
    """``float(text)``, NaN when empty or not a number (FeatureEncoder's missing value)."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _column(request, name):
    """(N,) object array of input ``name`` given as (N,) or (N, 1)."""
    if name not in request:
        raise ValueError(f"missing input '{name}'")
    values = np.asarray(request[name], dtype=object)
    if values.ndim == 1:
        return values
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    raise ValueError(f"input '{name}' must have shape [N, 1], got {list(values.shape)}")


class RawFeatureEncoder:
    """The numpy part of the preprocess model: raw request arrays -> ranker tensors.

    Args:
        vocabularies: ``FeatureEncoder.to_dict()`` (the checkpoint's ``vocabularies.json``).
        zip_prefix_len: characters of ``zip_code`` the model uses (the training prefix length).
    """

    def __init__(self, vocabularies, *, zip_prefix_len=3):
        self.sparse_features = list(vocabularies["sparse_features"])
        self.multi_hot_features = list(vocabularies["multi_hot_features"])
        self.dense_features = list(vocabularies["dense_features"])
        self.oov_id = int(vocabularies.get("oov_id", OOV_ID))
        self.pad_id = int(vocabularies.get("pad_id", PAD_ID))
        self.index = {name: {t: i + 2 for i, t in enumerate(tokens)} for name, tokens in vocabularies["vocabularies"].items()}
        # Triton hands BYTES tensors over as bytes: look them up without decoding each element.
        self.byte_index = {name: {t.encode("utf-8"): i for t, i in index.items()} for name, index in self.index.items()}
        self.dense_mean = np.asarray(vocabularies["dense_mean"], dtype=np.float64)
        self.dense_std = np.asarray(vocabularies["dense_std"], dtype=np.float64)
        self.max_genres = int(vocabularies["max_genres"])
        self.zip_prefix_len = int(zip_prefix_len)
        if self.zip_prefix_len < 1:
            raise ValueError(f"zip_prefix_len must be >= 1, got {zip_prefix_len}")
        unknown = [f for f in (*self.sparse_features, *self.dense_features) if f not in FEATURE_TO_RAW]
        if unknown:
            raise ValueError(f"vocabularies name features {unknown} that no raw input feeds")

    def _ids(self, request, feature):
        """(N,) int64 ids of a single-valued feature; bytes elements are looked up as they are."""
        index, oov = self.byte_index[feature], self.oov_id
        keys = [v if type(v) is bytes else _text(v).encode("utf-8") for v in _column(request, FEATURE_TO_RAW[feature])]
        if feature == "zip_prefix":
            n = self.zip_prefix_len
            keys = [k[:n] if k.isascii() else k.decode("utf-8", errors="replace")[:n].encode("utf-8") for k in keys]
        return np.fromiter((index.get(k, oov) for k in keys), dtype=np.int64, count=len(keys))

    def encode(self, request):
        """Encode one request.

        Args:
            request: raw input name -> object array of ``bytes`` (``str`` and ints also taken):
                scalars [N, 1] (or [N]), each multi-valued feature (``genres``) [N, G].

        Returns:
            ``{"dense_features": float32 [N, D], "sparse_ids": int64 [N, S],
            "multi_hot_ids": int64 [N, max_genres * len(multi_hot_features)]}``.

        Raises:
            ValueError: a missing input, a wrong shape, or inputs with different row counts.

        Bytes that are not valid UTF-8 match no vocabulary entry: they become the OOV id (a
        dense value: missing), like any other unknown value.
        """
        sparse_columns = []
        rows = None
        for feature in self.sparse_features:
            ids = self._ids(request, feature)
            if rows is None:
                rows = len(ids)
            elif len(ids) != rows:
                raise ValueError(f"input '{FEATURE_TO_RAW[feature]}' has {len(ids)} rows, expected {rows}")
            sparse_columns.append(ids)
        rows = 0 if rows is None else rows
        sparse = np.stack(sparse_columns, axis=1) if sparse_columns else np.zeros((rows, 0), dtype=np.int64)

        raw_dense = np.empty((rows, len(self.dense_features)), dtype=np.float64)
        for j, feature in enumerate(self.dense_features):
            texts = [_text(v) for v in _column(request, FEATURE_TO_RAW[feature])]
            if len(texts) != rows:
                raise ValueError(f"input '{FEATURE_TO_RAW[feature]}' has {len(texts)} rows, expected {rows}")
            raw_dense[:, j] = [_number(t) for t in texts]
        # The same float64 operations as FeatureEncoder.transform, so the result is bit-identical.
        dense = (raw_dense - self.dense_mean) / self.dense_std
        dense = np.nan_to_num(dense, nan=0.0).astype(np.float32)

        multi = []
        for feature in self.multi_hot_features:
            if feature not in request:
                raise ValueError(f"missing input '{feature}'")
            values = np.asarray(request[feature], dtype=object)
            if values.ndim == 1:
                values = values.reshape(-1, 1)
            if values.ndim != 2 or values.shape[0] != rows:
                raise ValueError(f"input '{feature}' must have shape [{rows}, G], got {list(values.shape)}")
            index, oov, width = self.byte_index[feature], self.oov_id, self.max_genres
            ids = np.full((rows, width), self.pad_id, dtype=np.int64)
            for r, row in enumerate(values.tolist()):
                parts = [p for v in row for p in (v if type(v) is bytes else _text(v).encode("utf-8")).split(b"|") if p]
                if parts:
                    looked_up = [index.get(p, oov) for p in parts[:width]]
                    ids[r, : len(looked_up)] = looked_up
            multi.append(ids)
        multi_hot = np.concatenate(multi, axis=1) if multi else np.zeros((rows, 0), dtype=np.int64)
        return {"dense_features": dense, "sparse_ids": sparse, "multi_hot_ids": multi_hot}


class TritonPythonModel:
    """Triton entry point: one :meth:`RawFeatureEncoder.encode` per request."""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        vocabularies = json.loads((version_dir / params.get("vocabularies", "vocabularies.json")).read_text())
        self.encoder = RawFeatureEncoder(vocabularies, zip_prefix_len=int(params.get("zip_prefix_len", "3")))
        self.input_names = [t["name"] for t in config["input"]]
        self.outputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["output"]]

    def execute(self, requests):
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            try:
                arrays = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                encoded = self.encoder.encode(arrays)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocess: {exc}")))
                continue
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(encoded[n].astype(dtype, copy=False))) for n, dtype in self.outputs]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
