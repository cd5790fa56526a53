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

* ``dense_features`` FP32 [B, 2]: (age, release_year) clipped to the training range, then
  standardized with the training mean and standard deviation; an empty or non-numeric value
  is missing and becomes 0 (the mean);
* ``sparse_ids`` INT64 [B, 7]: ids of user, item, age, gender, occupation, zip prefix (first
  ``zip_prefix_len`` characters of ``zip_code``) and release year; unknown values -> 1 (OOV);
  an age or release year outside the training range gets the id of the boundary value it is
  clipped to (an age of 300 is encoded exactly as the oldest training age);
* ``multi_hot_ids`` INT64 [B, max_genres]: genre ids, unknown -> 1, padded with 0, genres
  beyond ``max_genres`` dropped.

Model parameters (``config.pbtxt`` ``parameters``): ``zip_prefix_len`` (default ``"3"``),
``vocabularies`` (file name in the version folder, default ``"vocabularies.json"``).

The training range is ``dense_min``/``dense_max`` of ``vocabularies.json`` (recorded at fit
time); a file saved before they were recorded gets the range of the numeric tokens of the
feature's own vocabulary (the same range for vocabularies tritonrec fitted), and a feature
without either is not clipped. Every clipped value is counted in the Triton metric
:data:`CLIPPED_METRIC` (a counter on the server's metrics endpoint, labels ``model``,
``version``, ``feature``, ``bound`` = ``min``/``max``), and the first one per feature and
bound of each model instance is logged as a warning.

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
CLIPPED_METRIC = "tritonrec_preprocess_clipped_values_total"
BOUNDS = ("min", "max")


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


def _numeric_tokens(tokens):
    """(value, token) of the tokens that are finite numbers, in vocabulary order."""
    out = []
    for token in tokens:
        value = _number(token)
        if np.isfinite(value):
            out.append((value, token))
    return out


def dense_range(vocabularies, features):
    """(min, max) float64 arrays of the training range of ``features`` (``toolkit.data.FeatureEncoder.from_dict``'s rule).

    ``dense_min``/``dense_max`` when saved (``null``: that side unbounded); else the numeric
    tokens of each feature's vocabulary; else unbounded (-inf, inf).
    """
    lows, highs = [], []
    for j, feature in enumerate(features):
        numeric = [v for v, _ in _numeric_tokens(vocabularies["vocabularies"].get(feature, []))]
        derived = (min(numeric), max(numeric)) if numeric else (-np.inf, np.inf)
        for key, side, default, out in (("dense_min", 0, -np.inf, lows), ("dense_max", 1, np.inf, highs)):
            if key in vocabularies:
                value = vocabularies[key][j]
                out.append(default if value is None else float(value))
            else:
                out.append(derived[side])
    return np.asarray(lows, dtype=np.float64), np.asarray(highs, dtype=np.float64)


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
        self.dense_min, self.dense_max = dense_range(vocabularies, self.dense_features)
        if (self.dense_min > self.dense_max).any():
            raise ValueError(f"dense range: a minimum above its maximum ({self.dense_min.tolist()} > {self.dense_max.tolist()})")
        # dense feature j -> (its sparse column, id of its lowest, id of its highest training value)
        self.bound_ids = {}
        for j, feature in enumerate(self.dense_features):
            if feature in self.sparse_features and feature in self.index:
                numeric = _numeric_tokens(vocabularies["vocabularies"][feature])  # most frequent first
                ids = [
                    next((self.index[feature][t] for v, t in numeric if v == b), self.oov_id)
                    for b in (self.dense_min[j], self.dense_max[j])
                ]
                self.bound_ids[j] = (self.sparse_features.index(feature), ids[0], ids[1])

    def _ids(self, request, feature):
        """(N,) int64 ids of a single-valued feature; bytes elements are looked up as they are."""
        index, oov = self.byte_index[feature], self.oov_id
        keys = [v if type(v) is bytes else _text(v).encode("utf-8") for v in _column(request, FEATURE_TO_RAW[feature])]
        if feature == "zip_prefix":
            n = self.zip_prefix_len
            keys = [k[:n] if k.isascii() else k.decode("utf-8", errors="replace")[:n].encode("utf-8") for k in keys]
        return np.fromiter((index.get(k, oov) for k in keys), dtype=np.int64, count=len(keys))

    def encode(self, request):
        """Encode one request: the tensors of :meth:`encode_counting`, without the counts."""
        return self.encode_counting(request)[0]

    def encode_counting(self, request):
        """Encode one request and count the dense values clipped to the training range.

        Args:
            request: raw input name -> object array of ``bytes`` (``str`` and ints also taken):
                scalars [N, 1] (or [N]), each multi-valued feature (``genres``) [N, G].

        Returns:
            ``({"dense_features": float32 [N, D], "sparse_ids": int64 [N, S],
            "multi_hot_ids": int64 [N, max_genres * len(multi_hot_features)]}, clipped)``, where
            ``clipped`` maps ``(dense feature, "min" | "max")`` to the number of values of this
            request below the training minimum / above the maximum (every pair, zeros included).

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
        below, above = raw_dense < self.dense_min, raw_dense > self.dense_max  # NaN (missing) is neither
        for j, (column, low_id, high_id) in self.bound_ids.items():
            sparse[below[:, j], column] = low_id
            sparse[above[:, j], column] = high_id
        clipped = {}
        for j, feature in enumerate(self.dense_features):
            clipped[(feature, "min")] = int(below[:, j].sum())
            clipped[(feature, "max")] = int(above[:, j].sum())
        # The same float64 operations as FeatureEncoder.transform, so the result is bit-identical.
        dense = (np.clip(raw_dense, self.dense_min, self.dense_max) - self.dense_mean) / self.dense_std
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
        return {"dense_features": dense, "sparse_ids": sparse, "multi_hot_ids": multi_hot}, clipped


class TritonPythonModel:
    """Triton entry point: one :meth:`RawFeatureEncoder.encode_counting` per request, clipped values counted."""

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
        self.model = f"{args['model_name']} version {args['model_version']}"
        self.logged = set()  # (feature, bound) pairs already logged by this instance
        self.counters = {}
        try:  # custom metrics need the server's metrics on (not --allow-metrics=false); the log line stays
            family = pb_utils.MetricFamily(
                name=CLIPPED_METRIC,
                description="raw dense feature values outside the training range, clipped to it by the preprocess model",
                kind=pb_utils.MetricFamily.COUNTER,
            )
            self.family = family  # keep it alive as long as its metrics
            for feature in self.encoder.dense_features:
                for bound in BOUNDS:
                    labels = {"model": args["model_name"], "version": args["model_version"], "feature": feature, "bound": bound}
                    self.counters[(feature, bound)] = family.Metric(labels=labels)
        except Exception as exc:  # noqa: BLE001 (pb_utils raises its own error types)
            self._warn(f"{self.model}: clipped values are not counted in {CLIPPED_METRIC}: {exc}")

    def _warn(self, message):
        try:
            self.pb_utils.Logger.log_warn(message)
        except Exception:  # noqa: BLE001 (no logger in this stub: print to the server log)
            print(message, flush=True)

    def _count(self, clipped):
        for (feature, bound), n in clipped.items():
            if not n:
                continue
            if (feature, bound) in self.counters:
                self.counters[(feature, bound)].increment(n)
            if (feature, bound) not in self.logged:
                self.logged.add((feature, bound))
                j = self.encoder.dense_features.index(feature)
                limit = (self.encoder.dense_min if bound == "min" else self.encoder.dense_max)[j]
                side = "below the training minimum" if bound == "min" else "above the training maximum"
                self._warn(
                    f"{self.model}: {n} value(s) of '{FEATURE_TO_RAW[feature]}' {side} {limit:g} clipped to it "
                    f"(further ones are counted in {CLIPPED_METRIC}, not logged)"
                )

    def execute(self, requests):
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            try:
                arrays = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                encoded, clipped = self.encoder.encode_counting(arrays)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocess: {exc}")))
                continue
            self._count(clipped)
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(encoded[n].astype(dtype, copy=False))) for n, dtype in self.outputs]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
