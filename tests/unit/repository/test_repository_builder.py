"""build_repository with a small DLRM checkpoint and its ONNX exports (exported once per module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from toolkit.data import FeatureEncoder, Splits
from toolkit.errors import CheckpointError, RepositoryError
from toolkit.export import export_onnx, read_io_specs
from toolkit.models import DLRM, dlrm_example_inputs
from toolkit.repository import TARGET_VARIANTS, BatchingOptions, build_repository, check_config_against, read_config, read_metadata
from toolkit.train import TrainConfig, dlrm_config_for, load_checkpoint, predict, save_checkpoint

BASIC = ["pytorch", "onnx", "onnx_python"]
SMALL = TrainConfig(embedding_dim=8, bottom_mlp=[16], top_mlp=[16])
MODEL_FILES = {
    "dlrm_pytorch": ["architecture.json", "dlrm.py", "layers.py", "model.pt", "model.py", "model_config.json"],
    "dlrm_onnx": ["model.onnx", "model.onnx.data"],
    "dlrm_onnx_python": ["model.onnx", "model.onnx.data", "model.py"],
}


@dataclass(frozen=True)
class Artifacts:
    checkpoint: Path
    onnx: Path  # dynamic batch dimension
    fixed_onnx: Path  # batch fixed to 8 rows


def _checkpoint(path: Path, encoder: FeatureEncoder, train_config: TrainConfig = SMALL, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = DLRM(dlrm_config_for(encoder, train_config))
    return save_checkpoint(path, model, encoder, {"test_auc": 0.5})


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, synthetic_splits: Splits) -> Artifacts:
    root = tmp_path_factory.mktemp("artifacts")
    checkpoint = _checkpoint(root / "checkpoint", synthetic_splits.encoder)
    ckpt = load_checkpoint(checkpoint)
    example = dlrm_example_inputs(ckpt.config, 8)
    onnx = export_onnx(ckpt.model, example, ["probability"], root / "onnx" / "model.onnx")
    fixed = export_onnx(ckpt.model, example, ["probability"], root / "fixed" / "model.onnx", dynamic_batch=False)
    return Artifacts(checkpoint, onnx, fixed)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(repository: Path) -> list[str]:
    """Temporary folders a build may have left next to or inside the repository."""
    return [p.name for p in (*repository.parent.iterdir(), *repository.iterdir()) if p.name.startswith(".")]


@pytest.fixture
def repository(tmp_path: Path, artifacts: Artifacts) -> Path:
    """A repository holding one successful default build."""
    repo = tmp_path / "model_repository"
    build_repository(repo, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=BASIC)
    return repo


def test_build_writes_the_variants_with_their_model_files(tmp_path: Path, artifacts: Artifacts) -> None:
    repo = tmp_path / "model_repository"
    built = build_repository(repo, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=BASIC)

    assert [(b.name, b.variant, b.path, b.version) for b in built] == [(f"dlrm_{v}", v, repo / f"dlrm_{v}", 1) for v in BASIC]
    assert sorted(p.name for p in repo.iterdir()) == sorted(MODEL_FILES)
    for name, files in MODEL_FILES.items():
        assert sorted(p.name for p in (repo / name).iterdir()) == ["1", "config.pbtxt", "tritonrec.json", "vocabularies.json"]
        metadata = read_metadata(repo / name)
        assert (metadata.role, metadata.variant, metadata.precision) == ("ranker", name.removeprefix("dlrm_"), "fp32")
        assert metadata.source["split_seed"] == 42  # its metrics.json records none: the default split (verify's rows)
        assert sorted(p.name for p in (repo / name / "1").iterdir()) == files
        assert (repo / name / "vocabularies.json").read_bytes() == (artifacts.checkpoint / "vocabularies.json").read_bytes()
    assert (repo / "dlrm_pytorch/1/model.pt").read_bytes() == (artifacts.checkpoint / "model.pt").read_bytes()
    for name in ("dlrm_onnx", "dlrm_onnx_python"):
        assert (repo / name / "1/model.onnx").read_bytes() == artifacts.onnx.read_bytes()
        assert (repo / name / "1/model.onnx.data").read_bytes() == (artifacts.onnx.parent / "model.onnx.data").read_bytes()
    assert _leftovers(repo) == []


def test_built_configs_parse_and_match_the_onnx_file(repository: Path) -> None:
    onnx_inputs, onnx_outputs = read_io_specs(repository / "dlrm_onnx/1/model.onnx")
    configs = {name: read_config(repository / name / "config.pbtxt") for name in MODEL_FILES}

    assert configs["dlrm_onnx"].platform == "onnxruntime_onnx" and configs["dlrm_onnx"].backend == ""
    assert configs["dlrm_onnx_python"].backend == "python" and configs["dlrm_onnx_python"].platform == ""
    assert configs["dlrm_pytorch"].backend == "python"
    for name, config in configs.items():
        assert config.name == name
        assert config.max_batch_size == 256
        assert config.dynamic_batching.max_queue_delay_microseconds == 100
        check_config_against(config, onnx_inputs, onnx_outputs)
        assert [t.name for t in config.input] == ["dense_features", "sparse_ids", "multi_hot_ids"]


def test_the_served_onnx_file_predicts_what_the_checkpoint_predicts(repository: Path, artifacts: Artifacts, synthetic_splits) -> None:
    rows = synthetic_splits.test.take(slice(0, 100))
    session = ort.InferenceSession(str(repository / "dlrm_onnx/1/model.onnx"), providers=["CPUExecutionProvider"])
    served = session.run(["probability"], rows.inputs())[0].reshape(-1)
    np.testing.assert_allclose(served, predict(load_checkpoint(artifacts.checkpoint).model, rows), atol=1e-6)


def test_fixed_batch_onnx_with_batching_is_refused_and_the_repository_is_unchanged(repository: Path, artifacts: Artifacts) -> None:
    before = _snapshot(repository)

    with pytest.raises(RepositoryError, match="fixed batch dimension of 8, but max_batch_size=256") as info:
        build_repository(repository, checkpoint=artifacts.checkpoint, onnx_model=artifacts.fixed_onnx, variants=BASIC)

    assert "--max-batch-size 0" in info.value.hint
    assert _snapshot(repository) == before
    assert _leftovers(repository) == []


def test_fixed_batch_onnx_builds_without_batching(tmp_path: Path, artifacts: Artifacts) -> None:
    repo = tmp_path / "model_repository"
    options = BatchingOptions(max_batch_size=0, dynamic_batching=False)
    build_repository(repo, checkpoint=artifacts.checkpoint, onnx_model=artifacts.fixed_onnx, options=options, variants=BASIC)

    config = read_config(repo / "dlrm_onnx/config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [len(t.dims) for t in config.input] == [2, 2, 2]  # the batch dimension is explicit
    assert [t.dims[0] for t in config.input] == [8, 8, 8]  # and fixed, as in the ONNX file
    check_config_against(config, *read_io_specs(repo / "dlrm_onnx/1/model.onnx"))


def test_onnx_from_a_checkpoint_with_other_table_sizes_is_refused(tmp_path: Path, artifacts: Artifacts, synthetic_splits) -> None:
    d = synthetic_splits.encoder.to_dict()
    d["vocabularies"]["user_id"] = d["vocabularies"]["user_id"][:-3]  # three users fewer
    other = _checkpoint(tmp_path / "other", FeatureEncoder.from_dict(d))
    repo = tmp_path / "model_repository"

    with pytest.raises(RepositoryError, match=r"sparse_embeddings\.0\.weight") as info:
        build_repository(repo, checkpoint=other, onnx_model=artifacts.onnx)
    assert "export the ONNX file from this checkpoint" in info.value.hint
    assert not repo.exists()


def test_onnx_from_a_differently_shaped_model_is_refused(tmp_path: Path, artifacts: Artifacts, synthetic_splits) -> None:
    wider = TrainConfig(embedding_dim=4, bottom_mlp=[16], top_mlp=[16])  # same inputs and outputs, other weights
    other = _checkpoint(tmp_path / "other", synthetic_splits.encoder, wider)
    repo = tmp_path / "model_repository"

    message = r"ONNX weights do not match the checkpoint's: .*embeddings\.0\.weight \[\d+, 8\] \(checkpoint: \[\d+, 4\]\)"
    with pytest.raises(RepositoryError, match=message):
        build_repository(repo, checkpoint=other, onnx_model=artifacts.onnx)
    assert not repo.exists()


def test_onnx_with_another_multi_hot_width_is_refused(tmp_path: Path, artifacts: Artifacts, synthetic_splits) -> None:
    d = synthetic_splits.encoder.to_dict()
    d["max_genres"] += 2  # multi_hot_ids gets two more columns
    other = _checkpoint(tmp_path / "other", FeatureEncoder.from_dict(d))
    repo = tmp_path / "model_repository"

    with pytest.raises(RepositoryError, match="multi_hot_ids"):
        build_repository(repo, checkpoint=other, onnx_model=artifacts.onnx)
    assert not repo.exists()


def test_rebuilding_adds_version_2_next_to_1_and_keeps_unrelated_models(repository: Path, artifacts: Artifacts) -> None:
    unrelated = repository / "ranker_v0"
    (unrelated / "1").mkdir(parents=True)
    (unrelated / "config.pbtxt").write_text('name: "ranker_v0"\nbackend: "python"\n')
    (unrelated / "1" / "model.py").write_text("# someone else's model\n")
    kept = _snapshot(unrelated)
    version_1 = {name: _snapshot(repository / name / "1") for name in MODEL_FILES}

    built = build_repository(
        repository, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, options=BatchingOptions(max_batch_size=64), variants=BASIC
    )

    assert [b.version for b in built] == [2, 2, 2]
    assert _snapshot(unrelated) == kept
    for name in MODEL_FILES:
        assert read_config(repository / name / "config.pbtxt").max_batch_size == 64
        assert sorted(p.name for p in (repository / name).iterdir() if p.is_dir()) == ["1", "2"]
        assert _snapshot(repository / name / "1") == version_1[name]  # a version a server may serve is never rewritten
        assert (repository / name / "config.v1.pbtxt").is_file()  # the config version 1 was built with
    assert _leftovers(repository) == []


def test_a_subset_of_variants_under_another_name_leaves_the_rest_alone(repository: Path, artifacts: Artifacts) -> None:
    built = build_repository(repository, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, model_name="ranker", variants=["onnx"])

    assert [b.name for b in built] == ["ranker_onnx"]
    assert sorted(p.name for p in repository.iterdir()) == sorted([*MODEL_FILES, "ranker_onnx"])


def test_corrupt_checkpoint_is_a_checkpoint_error_and_nothing_is_written(tmp_path: Path, artifacts: Artifacts, synthetic_splits) -> None:
    broken = _checkpoint(tmp_path / "broken", synthetic_splits.encoder)
    data = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) // 3])
    repo = tmp_path / "out" / "model_repository"

    with pytest.raises(CheckpointError, match=r"model\.pt"):
        build_repository(repo, checkpoint=broken, onnx_model=artifacts.onnx)
    assert not (tmp_path / "out").exists()


def test_corrupt_checkpoint_leaves_an_existing_repository_unchanged(repository: Path, tmp_path: Path, artifacts: Artifacts) -> None:
    before = _snapshot(repository)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_repository(repository, checkpoint=tmp_path / "missing", onnx_model=artifacts.onnx)
    assert _snapshot(repository) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variants": ["onnx_int4"]}, r"unknown variants \['onnx_int4'\]"),
        ({"variants": ["onnx", "onnx"]}, "name one variant twice"),
        ({"target": "tpu"}, "unknown target 'tpu'"),
        ({"model_name": "dlrm/../x"}, "must be letters, digits"),
        ({"model_name": ""}, "must be letters, digits"),
    ],
)
def test_invalid_variants_or_model_names_are_refused(tmp_path: Path, artifacts: Artifacts, kwargs: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        build_repository(tmp_path / "repo", checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, **kwargs)
    assert not (tmp_path / "repo").exists()


def test_a_missing_onnx_file_is_refused(tmp_path: Path, artifacts: Artifacts) -> None:
    with pytest.raises(RepositoryError, match="does not exist"):
        build_repository(tmp_path / "repo", checkpoint=artifacts.checkpoint, onnx_model=tmp_path / "nope.onnx")
    assert not (tmp_path / "repo").exists()


def test_the_pytorch_variant_alone_needs_no_onnx_file(tmp_path: Path, artifacts: Artifacts) -> None:
    built = build_repository(tmp_path / "repo", checkpoint=artifacts.checkpoint, onnx_model=tmp_path / "nope.onnx", variants=["pytorch"])
    assert [b.name for b in built] == ["dlrm_pytorch"]
    assert read_config(tmp_path / "repo/dlrm_pytorch/config.pbtxt").backend == "python"


def test_target_cpu_builds_its_variants_and_ensembles_on_cpu(tmp_path: Path, artifacts: Artifacts, synthetic_splits) -> None:
    repo = tmp_path / "repo"
    rows = synthetic_splits.train.take(slice(0, 32)).inputs()
    built = build_repository(
        repo,
        checkpoint=artifacts.checkpoint,
        onnx_model=artifacts.onnx,
        target="cpu",
        ensembles=True,
        sample_inputs=rows,
        options=BatchingOptions(warmup_batch_sizes=[1, 4]),
    )

    rankers = [b.variant for b in built if b.name.removeprefix("dlrm_") in TARGET_VARIANTS["cpu"]]
    assert rankers == list(TARGET_VARIANTS["cpu"])
    assert [b.variant for b in built][len(rankers) :] == ["preprocess", "ensemble", "postprocess", "topk"]
    assert {b.name: b.precision for b in built}["dlrm_onnx_int8"] == "int8"
    for b in built:
        config = read_config(repo / b.name / "config.pbtxt")
        assert all(g.kind == config.instance_group[0].KIND_CPU for g in config.instance_group)
        if b.variant in TARGET_VARIANTS["cpu"]:
            assert [w.batch_size for w in config.model_warmup] == [1, 4]
    ensemble = read_config(repo / "dlrm_ensemble" / "config.pbtxt")
    # the ensembles call INT8 only where it was timed faster than FP32 on this CPU, and say so
    assert built.ensemble_ranker in ("onnx_int8_python", "onnx_python")
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["dlrm_preprocess", f"dlrm_{built.ensemble_ranker}"]
    assert built.ensemble_ranker_reason.startswith(built.ensemble_ranker + ": INT8 is")
    assert "rows/s at batch 64 on this" in built.ensemble_ranker_reason


def test_tensorrt_is_skipped_with_the_reason_without_a_gpu(tmp_path: Path, artifacts: Artifacts) -> None:
    from toolkit.export.tensorrt import tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT can be built here; the GPU tests cover it")
    result = build_repository(tmp_path / "repo", checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=["onnx", "tensorrt"])
    assert [b.name for b in result.models] == ["dlrm_onnx"]
    assert [(s.variant, s.reason) for s in result.skipped] == [("tensorrt", reason)]
    assert not (tmp_path / "repo" / "dlrm_tensorrt").exists()


def test_an_ensemble_ranker_that_is_not_built_is_refused(tmp_path: Path, artifacts: Artifacts) -> None:
    with pytest.raises(RepositoryError, match="ensemble ranker onnx_fp16 is not among the variants built"):
        build_repository(
            tmp_path / "repo",
            checkpoint=artifacts.checkpoint,
            onnx_model=artifacts.onnx,
            variants=["onnx"],
            ensembles=True,
            ensemble_ranker="onnx_fp16",
        )
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("stop_at", ["building dlrm_onnx_python", "building the raw-feature ensembles", "validating the staged models"])
def test_an_interrupted_rebuild_leaves_the_repository_as_it_was(repository: Path, artifacts: Artifacts, stop_at: str) -> None:
    before = _snapshot(repository)

    def interrupt(line: str) -> None:
        if line.startswith(stop_at):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_repository(
            repository, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=BASIC, ensembles=True, progress=interrupt
        )
    assert _snapshot(repository) == before
    assert _leftovers(repository) == []


def test_a_rebuild_that_would_break_an_existing_ensemble_is_refused(tmp_path: Path, artifacts: Artifacts) -> None:
    repo = tmp_path / "repo"
    build_repository(repo, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=BASIC, ensembles=True)
    before = _snapshot(repo)

    with pytest.raises(RepositoryError, match=r"dlrm_ensemble.*max_batch_size 256.*'dlrm_onnx_python' only 16"):
        build_repository(
            repo,
            checkpoint=artifacts.checkpoint,
            onnx_model=artifacts.onnx,
            variants=["onnx_python"],
            options=BatchingOptions(max_batch_size=16),
        )
    assert _snapshot(repo) == before
    assert _leftovers(repo) == []


def test_a_broken_model_the_build_does_not_touch_does_not_block_it(repository: Path, artifacts: Artifacts) -> None:
    broken = repository / "someone_elses"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        'name: "someone_elses"\nbackend: "python"\nmax_batch_size: 8\ndynamic_batching { preferred_batch_size: 64 }\n'
    )

    built = build_repository(repository, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=["onnx_python"])
    assert [b.version for b in built] == [2]


@pytest.mark.parametrize("variants", [["pytorch"], ["onnx_python"]])
def test_max_batch_size_0_builds_with_a_whole_request_warmup(tmp_path: Path, artifacts: Artifacts, variants: list[str]) -> None:
    repo = tmp_path / "repo"
    options = BatchingOptions(max_batch_size=0, dynamic_batching=False, warmup_batch_sizes=[1])
    build_repository(repo, checkpoint=artifacts.checkpoint, onnx_model=artifacts.onnx, variants=variants, options=options)
    config = read_config(repo / f"dlrm_{variants[0]}" / "config.pbtxt")
    assert config.max_batch_size == 0
    assert [list(w.inputs["sparse_ids"].dims) for w in config.model_warmup] == [[1, config.input[1].dims[1]]]


def test_the_cpu_ranker_keeps_int8_only_when_it_is_timed_faster(tmp_path: Path, artifacts: Artifacts, synthetic_splits) -> None:
    from toolkit.optimize.onnx_quant import quantize_dynamic_int8
    from toolkit.repository.ranker_choice import ranker_verdict, time_onnx_files

    # the AMD EPYC (AVX2) measurement: INT8 at 0.93x FP32 -> FP32; the Intel VNNI one, 1.76x -> INT8
    variant, reason = ranker_verdict(930, 1000, "onnx_int8_python", "onnx_python", "avx2")
    assert variant == "onnx_python" and reason.startswith("onnx_python: INT8 is not faster than FP32 here by more than 5%")
    assert "930 vs 1,000 rows/s at batch 64 on this avx2 CPU (0.93x)" in reason
    assert ranker_verdict(1760, 1000, "onnx_int8_python", "onnx_python", "vnni")[0] == "onnx_int8_python"
    assert ranker_verdict(1040, 1000, "onnx_int8_python", "onnx_python", "vnni")[0] == "onnx_python"  # within noise
    rows = synthetic_splits.test.take(slice(0, 256)).inputs()
    int8 = quantize_dynamic_int8(artifacts.onnx, tmp_path / "int8" / "model.onnx")
    speeds = time_onnx_files({"int8": int8, "fp32": artifacts.onnx}, rows, rounds=2)
    assert set(speeds) == {"int8", "fp32"} and all(v > 0 for v in speeds.values())
