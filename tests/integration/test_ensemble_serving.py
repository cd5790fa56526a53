"""Raw-feature ensembles on the bundled Triton server, with real MovieLens-100K rows.

One repository (the shared trained DLRM as ``onnx_python`` and ``pytorch`` rankers, each with
its ensembles written by :func:`write_ensembles`) and one server start for the whole module.
The ensembles take the rows as a product sends them (strings); their answers must equal the
ranker's own on the same rows encoded offline with the checkpoint's vocabularies.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from toolkit.data import load_splits
from toolkit.data.features import OOV_ID, RawRows
from toolkit.errors import InferenceError
from toolkit.repository import build_repository
from toolkit.repository.config import BatchingOptions, read_config
from toolkit.repository.ensemble import write_ensembles
from toolkit.repository.raw_inputs import raw_request
from toolkit.serving import InferenceClient, TritonServer, free_ports
from toolkit.train import load_checkpoint

pytestmark = pytest.mark.integration

N_ROWS = 1000
TOP_K = 5
# ensemble prefix -> the ranker model it calls
RANKERS = {"raw_onnx": "dlrm_onnx_python", "raw_torch": "dlrm_pytorch"}
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_prefix")


@pytest.fixture(scope="module")
def served(tmp_path_factory, trained_movielens, movielens_dir):
    repository = tmp_path_factory.mktemp("ensembles") / "model_repository"
    build_repository(
        repository, checkpoint=trained_movielens.checkpoint, onnx_model=trained_movielens.onnx, variants=["onnx_python", "pytorch"]
    )
    encoder = load_checkpoint(trained_movielens.checkpoint).encoder
    for prefix, ranker in RANKERS.items():
        write_ensembles(
            repository,
            model_name=prefix,
            ranker_config=read_config(repository / ranker / "config.pbtxt"),
            encoder=encoder.to_dict(),
            options=BatchingOptions(),
            top_k=TOP_K,
        )
    raw = load_splits(movielens_dir, encoder=encoder).raw_test.take(np.arange(N_ROWS))
    http_port, grpc_port, metrics_port = free_ports(3)
    with TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port) as server:
        yield SimpleNamespace(server=server, encoder=encoder, raw=raw)


def _client(served, protocol: str, model: str) -> InferenceClient:
    url = served.server.http_url if protocol == "http" else served.server.grpc_url
    return InferenceClient(url, protocol=protocol, model_name=model)


def _direct(served, protocol: str, ranker: str, rows: RawRows) -> np.ndarray:
    """The ranker's own answer on ``rows`` encoded offline (FeatureEncoder.transform), (N,)."""
    with _client(served, protocol, ranker) as client:
        return client.infer_batched(served.encoder.transform(rows).inputs(), batch_size=256)["probability"].reshape(-1)


def _one_user(rows: RawRows) -> RawRows:
    """``rows``' items as one user's candidate list: every row gets the first row's user."""
    columns = dict(rows.columns)
    for name in USER_COLUMNS:
        columns[name] = np.full(len(rows), rows.columns[name][0], dtype=object)
    dense = rows.dense.copy()
    dense[:, 0] = rows.dense[0, 0]  # age
    return RawRows(columns, dense, rows.labels)


def test_ensembles_and_their_models_load(served):
    states = {s.name: s for s in served.server.model_states()}
    for prefix in RANKERS:
        for suffix in ("preprocess", "ensemble", "postprocess", "topk"):
            state = states[f"{prefix}_{suffix}"]
            assert state.state == "READY", state


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("prefix", sorted(RANKERS))
def test_ensemble_on_raw_rows_equals_the_ranker_on_encoded_rows(served, prefix, protocol):
    want = _direct(served, protocol, RANKERS[prefix], served.raw)
    with _client(served, protocol, f"{prefix}_ensemble") as client:
        assert client.max_batch_size == 256
        got = client.infer_batched(raw_request(served.raw), batch_size=256)["probability"]

    assert got.shape == (N_ROWS, 1)
    assert np.abs(got.reshape(-1) - want).max() <= 1e-6
    assert want.std() > 1e-3  # a trained model: the rows really get different scores


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_topk_of_one_users_candidates_equals_sorting_the_direct_scores(served, protocol):
    candidates = _one_user(served.raw.take(np.arange(40)))
    scores = _direct(served, protocol, "dlrm_onnx_python", candidates)
    order = np.argsort(-scores, kind="stable")[:TOP_K]
    with _client(served, protocol, "raw_onnx_topk") as client:
        assert client.max_batch_size == 0
        got = client.infer(raw_request(candidates))

    assert got["top_item_ids"].tolist() == [str(i).encode() for i in candidates.columns["item_id"][order]]
    np.testing.assert_allclose(got["top_scores"], scores[order], rtol=0, atol=1e-6)
    assert np.all(np.diff(got["top_scores"]) <= 0)


def test_topk_of_fewer_candidates_than_k_returns_them_all_sorted(served):
    candidates = _one_user(served.raw.take(np.arange(3)))
    scores = _direct(served, "grpc", "dlrm_pytorch", candidates)
    with _client(served, "grpc", "raw_torch_topk") as client:
        got = client.infer(raw_request(candidates))
    order = np.argsort(-scores, kind="stable")
    assert got["top_item_ids"].tolist() == [str(i).encode() for i in candidates.columns["item_id"][order]]


def test_unknown_user_item_and_genre_go_through_as_oov(served):
    rows = served.raw.take(np.arange(4))
    columns = dict(rows.columns)
    columns["user_id"] = np.array(["no-such-user", "no-such-user", columns["user_id"][2], columns["user_id"][3]], dtype=object)
    columns["item_id"] = np.array([columns["item_id"][0], "999999", "999999", columns["item_id"][3]], dtype=object)
    genres = np.empty(4, dtype=object)
    genres[:] = [("Space Western",), rows.columns["genres"][1], ("Space Western", "Drama"), ()]
    columns["genres"] = genres
    columns["release_year"] = np.array(["", columns["release_year"][1], "", columns["release_year"][3]], dtype=object)
    dense = rows.dense.copy()
    dense[[0, 2], 1] = np.nan
    unknown = RawRows(columns, dense, rows.labels)
    encoded = served.encoder.transform(unknown)
    assert encoded.sparse_ids[:2, 0].tolist() == [OOV_ID, OOV_ID] and encoded.sparse_ids[1:3, 1].tolist() == [OOV_ID, OOV_ID]
    assert encoded.multi_hot_ids[0, 0] == OOV_ID

    want = _direct(served, "grpc", "dlrm_onnx_python", unknown)
    request = raw_request(unknown)
    request["item_id"] = np.array([[int(i)] for i in columns["item_id"]], dtype=np.int64)  # ids as integers: sent as decimal strings
    with _client(served, "grpc", "raw_onnx_ensemble") as client:
        got = client.infer(request)["probability"].reshape(-1)
    assert np.abs(got - want).max() <= 1e-6


def test_candidate_list_longer_than_the_rankers_max_batch_size_is_refused_by_triton(served):
    candidates = _one_user(served.raw.take(np.arange(257)))
    with _client(served, "http", "raw_onnx_topk") as client:
        with pytest.raises(InferenceError, match="batch-size must be <= 256"):
            client.infer(raw_request(candidates))
