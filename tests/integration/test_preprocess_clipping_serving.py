"""The served raw-feature ensemble keeps numeric features inside what training saw.

A repository built by ``build_repository`` (FP32 ``onnx_python`` ranker and its ensembles) on the
shared trained DLRM, plus a second ensemble set written from the same vocabularies as a file saved
before the training range was recorded, on one bundled Triton server. A request with an age of 300
or a release year of 3000 must answer exactly as one with the oldest training age / the latest
training year, the clipped values must show on the server's metrics endpoint, and the first one
of each instance in its log.
"""

from __future__ import annotations

import re
import time
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest

from toolkit.data import load_splits
from toolkit.data.features import DENSE_FEATURES, OOV_ID, SPARSE_FEATURES, RawRows
from toolkit.repository import build_repository
from toolkit.repository.config import BatchingOptions, read_config
from toolkit.repository.ensemble import write_ensembles
from toolkit.repository.raw_inputs import raw_request
from toolkit.serving import InferenceClient, TritonServer, free_ports
from toolkit.train import load_checkpoint

pytestmark = pytest.mark.integration

N_ROWS = 8
METRIC = "tritonrec_preprocess_clipped_values_total"


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained_movielens, movielens_dir):
    repository = tmp_path_factory.mktemp("clipping") / "model_repository"
    build_repository(
        repository,
        checkpoint=trained_movielens.checkpoint,
        onnx_model=trained_movielens.onnx,
        variants=["onnx_python"],
        ensembles=True,
        ensemble_ranker="onnx_python",  # FP32: the same tensors give the same scores whatever the batch
        top_k=None,
    )
    encoder = load_checkpoint(trained_movielens.checkpoint).encoder
    old = {k: v for k, v in encoder.to_dict().items() if k not in ("dense_min", "dense_max")}
    write_ensembles(
        repository,
        model_name="old",
        ranker_config=read_config(repository / "dlrm_onnx_python" / "config.pbtxt"),
        encoder=old,
        options=BatchingOptions(),
        top_k=None,
    )
    raw = load_splits(movielens_dir, encoder=encoder).raw_test.take(np.arange(N_ROWS))
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port) as server:
        yield SimpleNamespace(server=server, encoder=encoder, raw=raw)


def _with(rows: RawRows, feature: str, value: float) -> RawRows:
    columns = dict(rows.columns)
    columns[feature] = np.full(len(rows), str(int(value)), dtype=object)
    dense = rows.dense.copy()
    dense[:, DENSE_FEATURES.index(feature)] = value
    return RawRows(columns, dense, rows.labels)


def _ensemble(served, model: str, rows: RawRows) -> np.ndarray:
    with InferenceClient(served.server.grpc_url, protocol="grpc", model_name=model) as client:
        return client.infer(raw_request(rows))["probability"].reshape(-1)


def _clipped(served, model: str) -> dict[tuple[str, str], float]:
    """(feature, bound) -> the counter of ``model`` on the metrics endpoint."""
    text = urllib.request.urlopen(served.server.metrics_url, timeout=10).read().decode()
    out = {}
    for labels, value in re.findall(rf"^{METRIC}\{{([^}}]*)\}} (\S+)$", text, flags=re.M):
        d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if d["model"] == model:
            out[(d["feature"], d["bound"])] = float(value)
    return out


@pytest.mark.parametrize(("feature", "outside"), [("age", 300.0), ("release_year", 3000.0)])
@pytest.mark.parametrize("model", ["dlrm_ensemble", "old_ensemble"])
def test_a_value_above_the_training_range_answers_exactly_as_the_maximum(served, feature, outside, model):
    j = DENSE_FEATURES.index(feature)
    top = served.encoder.dense_max[j]
    assert top == {"age": 73.0, "release_year": 1998.0}[feature]  # MovieLens-100K's training split
    preprocess = model.replace("_ensemble", "_preprocess")
    before = _clipped(served, preprocess)

    clipped = _ensemble(served, model, _with(served.raw, feature, outside))
    at_max = _ensemble(served, model, _with(served.raw, feature, top))
    np.testing.assert_array_equal(clipped, at_max)  # bit-for-bit: the preprocess sent the same tensors

    # what it would answer unclipped (an unknown age id, a standardized 300): something else
    unclipped = served.encoder.transform(_with(served.raw, feature, top))
    unclipped.sparse_ids[:, SPARSE_FEATURES.index(feature)] = OOV_ID
    unclipped.dense_features[:, j] = np.float32((outside - served.encoder.dense_mean[j]) / served.encoder.dense_std[j])
    with InferenceClient(served.server.grpc_url, protocol="grpc", model_name="dlrm_onnx_python") as client:
        raw_answer = client.infer(unclipped.inputs())["probability"].reshape(-1)
    assert np.abs(raw_answer - at_max).max() > 1e-3

    after = _clipped(served, preprocess)
    assert after[(feature, "max")] - before.get((feature, "max"), 0.0) == N_ROWS
    assert after[(feature, "min")] == before.get((feature, "min"), 0.0)


def test_the_counter_is_on_the_metrics_endpoint_from_the_start_for_every_feature_and_bound(served):
    assert set(_clipped(served, "dlrm_preprocess")) == {(f, b) for f in DENSE_FEATURES for b in ("min", "max")}


def test_the_first_clip_is_logged_by_the_server(served):
    _ensemble(served, "dlrm_ensemble", _with(served.raw, "age", 300.0))
    deadline = time.monotonic() + 10
    while "'age' above the training maximum 73 clipped to it" not in served.server.log_tail(100_000):
        assert time.monotonic() < deadline, served.server.log_tail(40)
        time.sleep(0.2)
