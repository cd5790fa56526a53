"""`tritonrec verify` on the bundled Triton: a real repository of the MovieLens DLRM (CPU
variants, INT8 included, and its raw-feature ensembles) with a deliberately broken variant,
a model without metadata, and the ONNX Runtime platform model the bundled server cannot load."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.errors import RepositoryError
from toolkit.repository import build_repository
from toolkit.repository.config import parse_config
from toolkit.repository.metadata import ModelMetadata, write_metadata
from toolkit.serving import TritonServer, free_ports
from toolkit.serving.verify import verify_repository

pytestmark = pytest.mark.integration

N_ROWS = 2000
PERTURBED = 0.05  # added to every element of one weight initializer of the broken variant


def copy_model(repository: Path, src: str, dst: str) -> Path:
    """Copy model folder ``src`` to ``dst`` and rename the model in its config."""
    shutil.copytree(repository / src, repository / dst)
    config = repository / dst / "config.pbtxt"
    text = config.read_text().replace(f'name: "{src}"', f'name: "{dst}"', 1)
    assert parse_config(text).name == dst
    config.write_text(text)
    (repository / dst / "tritonrec.json").unlink(missing_ok=True)
    return repository / dst


def perturb_one_weight(model_dir: Path) -> str:
    """Add PERTURBED to the largest non-embedding weight of the latest version's model.onnx (saved as one file)."""
    version = max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    path = version / "model.onnx"
    model = onnx.load(str(path))  # with its external data
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2]
    target = max(weights, key=lambda t: int(np.prod(t.dims)) if "embedding" not in t.name else 0)
    value = numpy_helper.to_array(target) + np.float32(PERTURBED)
    target.CopyFrom(numpy_helper.from_array(value.astype(np.float32), target.name))
    for data in path.parent.glob("*.data"):
        data.unlink()
    onnx.save_model(model, str(path), save_as_external_data=False)
    return target.name


@pytest.fixture(scope="module")
def repository(tmp_path_factory, trained_movielens) -> Path:
    """The CPU variants with their ensembles (the builder writes every tritonrec.json), plus two copies
    of dlrm_onnx_python: one with a perturbed weight, one without metadata."""
    repo = tmp_path_factory.mktemp("verify") / "model_repository"
    build_repository(
        repo,
        checkpoint=trained_movielens.checkpoint,
        onnx_model=trained_movielens.onnx,
        variants=["pytorch", "onnx", "onnx_python", "onnx_int8_python"],
        ensembles=True,
        ensemble_ranker="onnx_python",
    )
    broken = copy_model(repo, "dlrm_onnx_python", "dlrm_onnx_python_broken")
    perturb_one_weight(broken)
    write_metadata(broken, ModelMetadata(role="ranker", variant="onnx_python", precision="fp32"))
    copy_model(repo, "dlrm_onnx_python", "handmade")  # no tritonrec.json: recognised by its inputs
    return repo


@pytest.fixture(scope="module")
def report(repository, movielens_dir):
    """verify_repository over gRPC against a running server (--url); the CLI test below starts its own."""
    ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
    with TritonServer(repository, **ports) as server:
        t0 = time.monotonic()
        result = verify_repository(repository, data_dir=movielens_dir, url=server.grpc_url, protocol="grpc", n_rows=N_ROWS)
        print(f"verify_repository on a running server: {time.monotonic() - t0:.1f} s")
    return result


def by_model(report):
    return {r.model: r for r in report.results}


def test_fp32_variants_match_pytorch_to_1e_5(report):
    models = by_model(report)
    assert report.protocol == "grpc" and report.n_rows == N_ROWS
    ref = models["dlrm_pytorch"]
    assert ref.status == "reference" and ref.n_rows == N_ROWS and ref.auc > 0.6
    # the split the checkpoint was trained on (its metrics.json records none: the default, 42), recorded by the build
    assert report.references == {"dlrm": {"model": "dlrm_pytorch", "auc": ref.auc, "split_seed": 42}}
    r = models["dlrm_onnx_python"]
    assert (r.status, r.precision, r.tolerance.kind, r.tolerance.value) == ("pass", "fp32", "max_abs_diff", 1e-5)
    assert r.max_abs_diff <= 1e-5 and abs(r.auc - ref.auc) <= 1e-4 and r.n_rows == N_ROWS


def test_onnxruntime_platform_model_is_listed_as_not_loaded_with_the_servers_reason(report):
    r = by_model(report)["dlrm_onnx"]
    assert r.status == "not loaded"
    assert "onnxruntime" in r.reason
    assert r.max_abs_diff is None and r.auc is None


def test_a_broken_variant_fails_with_its_numbers(report):
    r = by_model(report)["dlrm_onnx_python_broken"]
    assert r.status == "fail"
    assert r.max_abs_diff > 1e-5 and 0.0 < r.auc < 1.0
    assert r.tolerance.kind == "max_abs_diff" and "max |Δp|" in r.reason
    assert not report.passed and [f.model for f in report.failed] == ["dlrm_onnx_python_broken"]


def test_an_int8_variant_is_judged_by_the_auc_budget(report):
    r = by_model(report)["dlrm_onnx_int8_python"]
    ref = by_model(report)["dlrm_pytorch"]
    assert (r.precision, r.tolerance.kind, r.tolerance.value) == ("int8", "auc_ratio", 0.99)
    assert r.max_abs_diff is not None and r.max_abs_diff > 0  # reported even though the AUC decides
    assert r.status == ("pass" if r.auc >= 0.99 * ref.auc else "fail")
    assert r.status == "pass", r  # dynamic INT8 of this DLRM keeps its AUC


def test_ensembles_answer_like_pytorch_on_the_raw_request(report):
    models = by_model(report)
    r = models["dlrm_ensemble"]
    assert (r.status, r.role, r.precision, r.tolerance.kind) == ("pass", "ensemble", "fp32", "max_abs_diff")
    assert r.max_abs_diff <= 1e-5 and r.n_rows == N_ROWS
    topk = models["dlrm_topk"]
    assert (topk.status, topk.variant) == ("pass", "topk")
    assert topk.max_abs_diff <= 1e-5 and topk.auc is None and "candidates" in topk.reason
    assert models["dlrm_preprocess"].status == models["dlrm_postprocess"].status == "skipped"


def test_a_model_without_metadata_is_verified_as_a_ranker_of_unknown_precision(report):
    r = by_model(report)["handmade"]
    assert (r.status, r.precision, r.family) == ("pass", None, "dlrm")
    assert r.tolerance.kind == "max_abs_diff" and "no tritonrec.json" in r.reason


def test_missing_pytorch_reference_is_a_clear_error_before_any_server_starts(repository, movielens_dir, tmp_path):
    repo = tmp_path / "no_reference"
    repo.mkdir()
    shutil.copytree(repository / "dlrm_onnx_python", repo / "dlrm_onnx_python")
    t0 = time.monotonic()
    with pytest.raises(RepositoryError, match="no PyTorch reference") as info:
        verify_repository(repo, data_dir=movielens_dir)
    assert time.monotonic() - t0 < 5
    assert "tritonrec build --variant pytorch" in info.value.hint


def test_cli_over_http_starts_the_server_exits_1_and_writes_the_report(repository, movielens_dir, tmp_path):
    out = tmp_path / "reports" / "verify.json"
    args = ["verify", str(repository), "--data-dir", str(movielens_dir), "--protocol", "http", "--rows", "500", "--out", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "dlrm_onnx_python_broken" in result.output and "outside their tolerance" in result.output
    d = json.loads(out.read_text())
    assert d["passed"] is False and d["protocol"] == "http" and d["data"]["n_rows"] == 500
    models = {m["model"]: m for m in d["models"]}
    assert models["dlrm_onnx_python_broken"]["status"] == "fail" and models["dlrm_onnx_python_broken"]["max_abs_diff"] > 1e-5
    assert models["dlrm_onnx_python"]["status"] == "pass" and models["dlrm_onnx_python"]["max_abs_diff"] <= 1e-5
    assert models["dlrm_onnx"]["status"] == "not loaded"
    assert d["counts"]["fail"] == 1


def test_a_family_whose_reference_does_not_load_fails_alone(repository, movielens_dir, tmp_path):
    repo = tmp_path / "two_families"
    shutil.copytree(repository, repo, ignore=shutil.ignore_patterns("__pycache__"))
    for model in ("dlrm_pytorch", "dlrm_onnx_python"):
        other = copy_model(repo, model, model.replace("dlrm_", "other_"))
        write_metadata(other, ModelMetadata(role="ranker", variant=model.removeprefix("dlrm_"), precision="fp32"))
    weights = next((repo / "other_pytorch").glob("*/model.pt"))
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated checkpoint: the reference cannot load

    report = verify_repository(repo, data_dir=movielens_dir, n_rows=300)
    models = by_model(report)
    assert models["other_pytorch"].status == "fail" and "other_pytorch" in models["other_pytorch"].reason
    assert models["other_onnx_python"].status == "skipped" and "no reference" in models["other_onnx_python"].reason
    assert models["dlrm_onnx_python"].status == "pass"  # the other family is still verified
    assert {f.model for f in report.failed} == {"other_pytorch", "dlrm_onnx_python_broken"}
