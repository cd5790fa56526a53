"""The model protocol and registry: every registered architecture round-trips its config, matches
its signature, lists its tables and blocks, ships self-contained source files and exports with
parity; inputs go by name, so a forward with its arguments in another order is fed correctly."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.errors import CheckpointError, TrainError
from toolkit.models import architecture_names, architecture_of, call_by_name, config_from_dict, get_architecture
from toolkit.models.protocol import check_input_names

BUILT_IN = ["dcnv2", "deepfm", "dlrm"]
SIZES = dict(num_dense=2, sparse_cardinalities=[11, 13, 5], multi_hot_cardinalities=[9], multi_hot_lengths=[4])


def _model(name: str, **options) -> nn.Module:
    arch = get_architecture(name)
    torch.manual_seed(0)
    return arch.build(arch.config_class(**SIZES, embedding_dim=8, **options)).eval()


def test_the_toolkit_registers_dlrm_dcnv2_and_deepfm() -> None:
    assert set(BUILT_IN) <= set(architecture_names())


def test_an_unknown_architecture_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'wide_and_deep'; registered: dcnv2, deepfm, dlrm"):
        get_architecture("wide_and_deep")
    with pytest.raises(ValueError, match="no 'architecture' key; registered: dcnv2, deepfm, dlrm"):
        config_from_dict({"format_version": 1, "num_dense": 2})


@pytest.mark.parametrize("name", BUILT_IN)
def test_config_round_trips_through_json_by_its_architecture_key(name: str) -> None:
    config = _model(name).config
    d = json.loads(json.dumps(config.to_dict()))

    assert d["architecture"] == name and d["format_version"] == 1
    assert config_from_dict(d) == config
    assert architecture_of(config).name == name


@pytest.mark.parametrize("name", BUILT_IN)
def test_signature_example_inputs_and_forward_agree(name: str) -> None:
    model = _model(name)
    arch = architecture_of(model)
    inputs, outputs = arch.signature(model.config)
    example = arch.example_inputs(model.config, 5, seed=1)

    assert [s.name for s in inputs] == list(example) == ["dense_features", "sparse_ids", "multi_hot_ids"]
    for spec in inputs:
        assert str(example[spec.name].dtype).removeprefix("torch.") == spec.dtype
        assert example[spec.name].shape[1:] == spec.shape[1:] and spec.has_dynamic_batch
    check_input_names(model, example)  # the input names are forward's parameter names
    with torch.no_grad():
        out = call_by_name(model, example)
        torch.testing.assert_close(out, torch.sigmoid(call_by_name(model.logits, example)))
    assert [s.name for s in outputs] == ["probability"] and out.shape == (5, 1) and out.dtype == torch.float32
    assert bool(((out > 0) & (out < 1)).all())


@pytest.mark.parametrize(
    ("name", "tables", "blocks"),
    [
        ("dlrm", 4, ["bottom_mlp", "top_mlp"]),
        ("dcnv2", 4, ["deep_mlp"]),
        ("deepfm", 8, ["deep_mlp"]),  # E-wide field tables and 1-wide first-order tables
    ],
)
def test_embedding_tables_and_prunable_blocks_are_the_model_s_own_modules(name: str, tables: int, blocks: list[str]) -> None:
    model = _model(name)
    arch = architecture_of(model)
    modules = dict(model.named_modules())
    found = arch.embedding_tables(model)
    pruned = arch.prunable_blocks(model)

    assert len(found) == tables and all(modules[q] is m and isinstance(m, nn.Embedding) for q, m in found.items())
    rows_per_set = sum(SIZES["sparse_cardinalities"] + SIZES["multi_hot_cardinalities"])
    assert sum(m.num_embeddings for m in found.values()) == (tables // 4) * rows_per_set
    assert list(pruned) == blocks
    assert all(modules[q] is m and any(isinstance(layer, nn.Linear) for layer in m) for q, m in pruned.items())


@pytest.mark.parametrize("name", BUILT_IN)
def test_source_files_import_only_torch_and_the_standard_library(name: str, tmp_path: Path) -> None:
    arch = get_architecture(name)
    assert arch.source_files[0].stem == arch.runner_manifest()["module"]
    shipped = {Path(source).stem for source in arch.source_files}
    for source in arch.source_files:
        tree = ast.parse(Path(source).read_text())
        # the package import of a sibling source file sits under `if __package__:`; the Python backend takes the else branch
        branches = [n for n in ast.walk(tree) if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "__package__"]
        in_package = {id(m) for b in branches for stmt in b.body for m in ast.walk(stmt)}
        nodes = [n for n in ast.walk(tree) if id(n) not in in_package]
        imported = {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= {"torch", "__future__", *shipped, *sys.stdlib_module_names}, (source, imported)
    # copied alone into one folder and imported from it under its own module name, as the Python
    # backend imports it from the version folder (torch_runner.py puts that folder on sys.path)
    for source in arch.source_files:
        (tmp_path / Path(source).name).write_bytes(Path(source).read_bytes())
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(arch.module_name)
        assert Path(module.__file__).parent == tmp_path
        assert module.__package__ == ""
        # the shipped copy loads the package model's state dict (same keys) and computes the same output
        model = _model(name)
        shipped_model = getattr(module, arch.runner_manifest()["model_class"])(
            getattr(module, arch.runner_manifest()["config_class"]).from_dict(model.config.to_dict())
        ).eval()
        shipped_model.load_state_dict(model.state_dict())
        inputs = arch.example_inputs(model.config, 16, seed=3)
        with torch.no_grad():
            torch.testing.assert_close(shipped_model(**inputs), model(**inputs), rtol=0, atol=0)  # same ops, same order
    finally:
        sys.path.remove(str(tmp_path))
        for stem in shipped:
            sys.modules.pop(stem, None)
    namespace = vars(module)
    manifest = arch.runner_manifest()
    assert namespace[manifest["config_class"]].__name__ == arch.config_class.__name__
    assert namespace[manifest["model_class"]].__name__ == arch.model_class.__name__


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_architecture_exports_to_onnx_with_parity_within_1e_5(name: str, tmp_path: Path) -> None:
    from toolkit.export import check_parity, export_onnx

    model = _model(name)
    arch = architecture_of(model)
    path = export_onnx(model, arch.example_inputs(model.config, 8), ["probability"], tmp_path / "model.onnx")
    rows = {k: v.numpy() for k, v in arch.example_inputs(model.config, 512, seed=7).items()}
    # 1e-5 in probability: FP32 kernels of ONNX Runtime and PyTorch differ by a few ulps per op
    report = check_parity(model, path, rows, atol=1e-5)
    assert report.passed and report.n_rows == 512


def test_a_checkpoint_of_an_unknown_architecture_lists_the_registered_ones(tmp_path: Path, synthetic_splits) -> None:
    from toolkit.train import TrainConfig, load_checkpoint, model_config_for, save_checkpoint

    model = get_architecture("dcnv2").build(model_config_for(synthetic_splits.encoder, TrainConfig(architecture="dcnv2")))
    checkpoint = save_checkpoint(tmp_path / "ckpt", model, synthetic_splits.encoder, {})
    assert isinstance(load_checkpoint(checkpoint).model, type(model))
    d = json.loads((checkpoint / "model_config.json").read_text())
    (checkpoint / "model_config.json").write_text(json.dumps({**d, "architecture": "autoint"}))

    with pytest.raises(CheckpointError, match=r"model_config.json: unknown architecture 'autoint'; registered: dcnv2, deepfm, dlrm"):
        load_checkpoint(checkpoint)


def test_a_module_that_is_no_registered_architecture_is_not_saved_as_a_checkpoint(tmp_path: Path) -> None:
    from toolkit.train import save_checkpoint

    with pytest.raises(CheckpointError, match=r"cannot save Linear .*not a registered architecture"):
        save_checkpoint(tmp_path / "ckpt", nn.Linear(2, 1), None, {})
    assert not (tmp_path / "ckpt").exists()


def test_call_by_name_names_the_inputs_a_forward_cannot_take() -> None:
    model = _model("dlrm")
    example = get_architecture("dlrm").example_inputs(model.config, 2)

    with pytest.raises(TypeError, match=r"no parameter for \['dense'\]"):
        call_by_name(model, {**example, "dense": example["dense_features"]})
    with pytest.raises(TypeError, match=r"nothing for \['sparse_ids'\]"):
        call_by_name(model, {"dense_features": example["dense_features"]})


@pytest.mark.parametrize("name", ["dcnv2", "deepfm"])
def test_training_builds_the_configured_architecture_with_its_options(name: str, synthetic_splits) -> None:
    from toolkit.train import TrainConfig, train_model

    s = synthetic_splits
    options = {"cross_rank": 4, "structure": "parallel"} if name == "dcnv2" else {"deep_mlp": [16]}
    config = TrainConfig(architecture=name, embedding_dim=4, max_epochs=1, model_options=options)
    result = train_model(s.train, s.val, s.encoder, config)

    assert architecture_of(result.model).name == name and result.model.config.embedding_dim == 4
    assert all(getattr(result.model.config, k) == v for k, v in options.items())
    assert "top_mlp" not in result.model.config.to_dict()  # the DLRM-only fields of TrainConfig do not leak in


def test_training_refuses_an_unknown_architecture_or_option(synthetic_splits) -> None:
    from toolkit.train import TrainConfig, model_config_for

    with pytest.raises(TrainError, match="unknown architecture 'fm'; registered: dcnv2, deepfm, dlrm"):
        model_config_for(synthetic_splits.encoder, TrainConfig(architecture="fm"))
    with pytest.raises(TrainError, match=r"DCNv2Config has no option\(s\) \['cross_layers'\]; it takes .*'num_cross_layers'"):
        model_config_for(synthetic_splits.encoder, TrainConfig(architecture="dcnv2", model_options={"cross_layers": 2}))
    with pytest.raises(TrainError, match="structure must be one of"):
        model_config_for(synthetic_splits.encoder, TrainConfig(architecture="dcnv2", model_options={"structure": "mixed"}))


# -- a forward whose arguments are in another order than the signature's --------------------------


def test_a_reordered_forward_is_trained_predicted_exported_and_benchmarked_by_name(reordered_toy, synthetic_splits, tmp_path: Path) -> None:
    from toolkit.export import check_parity, export_onnx, read_io_specs
    from toolkit.optimize.bench import Variant
    from toolkit.train import TrainConfig, fit_model, load_checkpoint, predict, save_checkpoint

    s = synthetic_splits
    arch = reordered_toy.architecture
    torch.manual_seed(0)
    model = arch.build(arch.config_for(_sizes(s.encoder), {}))
    # positional, in the signature's order, this model cannot even run (floats reach its id tables)
    with pytest.raises((IndexError, RuntimeError)):
        model(*(torch.from_numpy(v) for v in s.test.take(slice(0, 4)).inputs().values()))

    fit_model(model, s.train, s.val, TrainConfig(max_epochs=1))
    rows = s.test.inputs()
    want = model(**{k: torch.from_numpy(v) for k, v in rows.items()}).detach().numpy().reshape(-1)
    np.testing.assert_array_equal(predict(model, s.test), want)

    path = export_onnx(model, arch.example_inputs(model.config, 8), ["probability"], tmp_path / "model.onnx")
    assert {spec.name for spec in read_io_specs(path)[0]} == set(rows)
    assert check_parity(model, path, rows, atol=1e-5).passed  # 1e-5: FP32 kernels differ by ulps
    for variant in (Variant("torch", 0, 0, 0, model=model), Variant("onnx", 0, 0, 0, onnx_path=path)):
        np.testing.assert_allclose(variant.runner()(rows), want, atol=1e-5)

    loaded = load_checkpoint(save_checkpoint(tmp_path / "ckpt", model, s.encoder, {}))
    np.testing.assert_array_equal(predict(loaded.model, s.test), want)
    assert loaded.architecture is arch


def _sizes(encoder):
    from toolkit.train import feature_sizes

    return feature_sizes(encoder)


def test_a_toy_architecture_defined_only_in_the_tests_is_compressed_by_the_recipe_runner(
    reordered_toy, synthetic_splits, tmp_path: Path
) -> None:
    """The test-only toy (not in toolkit/) through ``compress``: its tables become row-wise INT8 and the
    dynamic INT8 ONNX file it ends with answers like the compressed PyTorch model, by input name and
    with no change to toolkit/. Pruning a *registered* architecture rewrites the widths its config
    lists, which the toy's config does not: refused, naming the block and the missing field."""
    from toolkit.compress.recipe import Recipe
    from toolkit.errors import CompressError
    from toolkit.optimize.bench import Variant
    from toolkit.optimize.pipeline import CompressionData, compress
    from toolkit.train import TrainConfig, fit_model

    s = synthetic_splits
    arch = reordered_toy.architecture
    torch.manual_seed(0)
    model = arch.build(arch.config_for(_sizes(s.encoder), {}))
    fit_model(model, s.train, s.val, TrainConfig(max_epochs=1))
    data = CompressionData("synthetic", s.train, s.val, s.test, s.encoder)

    def recipe(*steps: dict) -> Recipe:
        return Recipe.model_validate({"name": "toy", "select": "as_written", "steps": list(steps)})

    result = compress(
        model,
        recipe({"kind": "quantize_embeddings"}, {"kind": "onnx_dynamic_int8"}),
        data,
        tmp_path / "w",
        measure_accuracy=False,
        cpu_target="avx2",
    )
    assert [st.kind for st in result.recipe.steps] == ["quantize_embeddings", "onnx_dynamic_int8"]
    assert not any(isinstance(m, torch.nn.Embedding) for m in result.model.modules())  # tables are int8 now
    # the toy declares no MACs count: it gets its Linear layers' in x out, a lower bound
    from toolkit.compress.stats import macs_per_sample

    assert macs_per_sample(result.model) == sum(
        m.in_features * m.out_features for m in result.model.modules() if isinstance(m, torch.nn.Linear)
    )
    rows = s.test.inputs()
    torch_probs = Variant("torch", 0, 0, 0, model=result.model).runner()(rows)
    onnx_probs = Variant("onnx", 0, 0, 0, onnx_path=result.onnx_path).runner()(rows)
    # dynamic INT8 quantizes the head's activations per batch, with the INT8 settings of an AVX2-only CPU
    # (cpu_target="avx2": 7-bit weights) on every machine, so the same integer arithmetic runs on both CPU
    # kinds: the probabilities moved by at most 8.0e-3 (4.7e-3 with VNNI's 8-bit weights) on an EPYC;
    # 0.02 leaves room for float rounding and is far below what a wrong input order gives
    assert np.abs(onnx_probs - torch_probs).max() < 0.02
    assert torch_probs.std() > 1e-3
    with pytest.raises(CompressError, match="reordered_toy's prunable block 'head' has no config field 'head'"):
        compress(model, recipe({"kind": "prune", "ratio": 0.5, "finetune_epochs": 1}), data, tmp_path / "p", measure_accuracy=False)


def _compressed_toy(arch, s, workdir: Path):
    """The toy trained 1 epoch, then ``compress``'s INT8 tables and dynamic INT8 ONNX (AVX2-only settings)."""
    from toolkit.compress.recipe import Recipe
    from toolkit.optimize.pipeline import CompressionData, compress
    from toolkit.train import TrainConfig, fit_model

    torch.manual_seed(0)
    model = arch.build(arch.config_for(_sizes(s.encoder), {}))
    fit_model(model, s.train, s.val, TrainConfig(max_epochs=1))
    recipe = Recipe.model_validate(
        {"name": "toy", "select": "as_written", "steps": [{"kind": "quantize_embeddings"}, {"kind": "onnx_dynamic_int8"}]}
    )
    data = CompressionData("synthetic", s.train, s.val, s.test, s.encoder)
    return compress(model, recipe, data, workdir, measure_accuracy=False, cpu_target="avx2")


def test_the_compressed_toy_s_checkpoint_records_its_int8_tables_and_loads_back_answering_the_same(
    reordered_toy, synthetic_splits, tmp_path: Path
) -> None:
    """Its config builds float32 tables; ``structure.json`` records which became row-wise INT8 after the
    build, and ``load_checkpoint`` re-applies that, so the folder holds a checkpoint (no ``skipped.json``)."""
    from toolkit.models.layers import RowwiseInt8Embedding
    from toolkit.optimize.pipeline import save_compressed
    from toolkit.train import load_checkpoint, predict

    s = synthetic_splits
    arch = reordered_toy.architecture
    result = _compressed_toy(arch, s, tmp_path / "w")
    out = save_compressed(result, tmp_path / "out", s.encoder, {})
    assert not (out / "skipped.json").exists()
    structure = json.loads((out / "checkpoint" / "structure.json").read_text())
    config = result.model.config
    tables = [("sparse_embeddings", config.sparse_cardinalities), ("multi_hot_embeddings", config.multi_hot_cardinalities)]
    assert structure["replaced_modules"] == [
        {"path": f"{attr}.{i}", "type": "RowwiseInt8Embedding", "num_embeddings": n, "embedding_dim": config.embedding_dim}
        for attr, sizes in tables
        for i, n in enumerate(sizes)
    ]
    assert len(structure["replaced_modules"]) == len(s.encoder.cardinalities)

    loaded = load_checkpoint(out / "checkpoint")
    assert loaded.architecture is arch
    assert not any(isinstance(m, nn.Embedding) for m in loaded.model.modules())
    assert isinstance(loaded.model.sparse_embeddings[0], RowwiseInt8Embedding)
    want = result.model.state_dict()
    assert set(loaded.model.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in loaded.model.state_dict().items())
    # the same modules, the same int8 buffers, the same kernels: the answers are equal, not close
    inputs = arch.example_inputs(loaded.config, 64, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded.model(**inputs), result.model(**inputs))
    np.testing.assert_array_equal(predict(loaded.model, s.test), predict(result.model, s.test))


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"format_version": 2, "replaced_modules": []}, "format_version 1"),
        ({"format_version": 1, "replaced_modules": [{"path": "towers.0", "type": "RowwiseInt8Embedding"}]}, "num_embeddings"),
        (
            {
                "format_version": 1,
                "replaced_modules": [{"path": "towers.0", "type": "RowwiseInt8Embedding", "num_embeddings": 3, "embedding_dim": 4}],
            },
            "module towers.0: not in the ReorderedToy",
        ),
        (
            {
                "format_version": 1,
                "replaced_modules": [{"path": "dense", "type": "RowwiseInt8Embedding", "num_embeddings": 3, "embedding_dim": 4}],
            },
            "module dense: is a Linear",
        ),
        (
            {
                "format_version": 1,
                "replaced_modules": [{"path": "sparse_embeddings.0", "type": "Int4Embedding", "num_embeddings": 3, "embedding_dim": 4}],
            },
            "module sparse_embeddings.0: unknown type 'Int4Embedding'",
        ),
        (
            {
                "format_version": 1,
                "replaced_modules": [
                    {"path": "sparse_embeddings.0", "type": "RowwiseInt8Embedding", "num_embeddings": 3, "embedding_dim": 4}
                ],
            },
            r"module sparse_embeddings.0: recorded as 3 x 4, but the config builds \d+ x 4",
        ),
    ],
)
def test_a_structure_json_that_does_not_fit_the_config_s_model_is_refused_naming_the_file_and_the_module(
    reordered_toy, synthetic_splits, tmp_path: Path, structure, message: str
) -> None:
    from toolkit.train import load_checkpoint, save_checkpoint

    arch = reordered_toy.architecture
    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "ckpt", arch.build(arch.config_for(_sizes(synthetic_splits.encoder), {})), synthetic_splits.encoder, {}
    )
    assert not (path / "structure.json").exists()  # float32 tables as its config builds them: nothing to record
    (path / "structure.json").write_text(structure if isinstance(structure, str) else json.dumps(structure))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path / "structure.json") in str(info.value)
