"""model_warmup from real rows: the raw file format Triton reads, atomic writes, and the bundled server running it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import RepositoryError
from toolkit.repository import BatchingOptions, build_model_config, config_to_text, parse_config
from toolkit.repository.validate import validate_repository
from toolkit.repository.warmup import tensor_bytes, warmup_byte_size, write_warmup
from toolkit.tensors import TensorSpec

ROWS = {
    "dense_features": np.array([[0.5, -1.0], [2.0, 3.0], [4.0, 5.0]], dtype=np.float32),
    "sparse_ids": np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.int64),
}


def test_fixed_size_tensors_are_raw_little_endian_row_major() -> None:
    ids = np.array([[1, 258], [3, 4]], dtype=np.int64)
    assert tensor_bytes(ids) == struct.pack("<4q", 1, 258, 3, 4)
    assert tensor_bytes(ids.T) == struct.pack("<4q", 1, 3, 258, 4)  # row-major whatever the memory layout
    assert tensor_bytes(np.array([1.5], dtype=">f4")) == struct.pack("<f", 1.5)
    assert warmup_byte_size("TYPE_INT64", [7]) == 56
    assert warmup_byte_size("TYPE_FP16", [2, 3]) == 12
    assert warmup_byte_size("TYPE_STRING", [1]) is None and warmup_byte_size("TYPE_FP32", [-1]) is None


def test_bytes_tensors_are_length_prefixed_elements() -> None:
    genres = np.array([["Action", b"Comedy", ""]], dtype=object)
    assert tensor_bytes(genres) == b"\x06\x00\x00\x00Action" + b"\x06\x00\x00\x00Comedy" + b"\x00\x00\x00\x00"
    assert tensor_bytes(np.array(["é"])) == b"\x02\x00\x00\x00\xc3\xa9"  # str arrays too, as UTF-8
    with pytest.raises(RepositoryError, match="BYTES warmup tensor holds int 5"):
        tensor_bytes(np.array([5, "x"], dtype=object))


def test_write_warmup_writes_one_row_per_batch_size_and_describes_it(tmp_path: Path) -> None:
    model_dir = tmp_path / "dlrm_onnx_python"
    entries = write_warmup(model_dir, ROWS, [1, 8, 32, 4], count=2)

    assert [(e["name"], e["batch_size"], e["count"]) for e in entries] == [
        ("batch_1_row_0", 1, 2),
        ("batch_8_row_1", 8, 2),
        ("batch_32_row_2", 32, 2),
        ("batch_4_row_0", 4, 2),
    ]
    assert entries[1]["inputs"] == {
        "dense_features": {"data_type": "TYPE_FP32", "dims": [2], "input_data_file": "row_1_dense_features.bin"},
        "sparse_ids": {"data_type": "TYPE_INT64", "dims": [3], "input_data_file": "row_1_sparse_ids.bin"},
    }
    files = sorted(p.name for p in (model_dir / "warmup").iterdir())
    assert files == [f"row_{r}_{n}.bin" for r in range(3) for n in ("dense_features", "sparse_ids")]
    assert (model_dir / "warmup" / "row_2_sparse_ids.bin").read_bytes() == struct.pack("<3q", 7, 8, 9)
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]

    specs = [TensorSpec("dense_features", "float32", (None, 2)), TensorSpec("sparse_ids", "int64", (None, 3))]
    config = build_model_config(model_dir.name, specs, specs[:1], BatchingOptions(), backend="python", warmup=entries)
    assert parse_config(config_to_text(config)) == config and len(config.model_warmup) == 4


def test_write_warmup_without_batching_writes_whole_tensors(tmp_path: Path) -> None:
    entries = write_warmup(tmp_path / "m", {"x": np.zeros((16, 4), np.float32)}, [1], batched=False)
    assert entries[0]["inputs"]["x"]["dims"] == [16, 4]
    assert (tmp_path / "m" / "warmup" / "row_0_x.bin").stat().st_size == 16 * 4 * 4
    with pytest.raises(RepositoryError, match=r"batch sizes must be \[1\], got \[2\]"):
        write_warmup(tmp_path / "m", {"x": np.zeros((16, 4), np.float32)}, [2], batched=False)


def test_a_failed_write_leaves_the_previous_warmup_data(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    write_warmup(model_dir, ROWS, [1])
    before = {p.name: p.read_bytes() for p in (model_dir / "warmup").iterdir()}

    bad = {"raw": np.array([["a"], [7]], dtype=object)}
    with pytest.raises(RepositoryError, match="BYTES warmup tensor holds int"):
        write_warmup(model_dir, bad, [1, 2])

    assert {p.name: p.read_bytes() for p in (model_dir / "warmup").iterdir()} == before
    assert sorted(p.name for p in model_dir.iterdir()) == ["warmup"]


@pytest.mark.parametrize(
    ("samples", "batch_sizes", "kwargs", "message"),
    [
        ({}, [1], {}, "needs sample rows for every input"),
        (ROWS, [0], {}, r"warmup batch sizes must be >= 1, got \[0\]"),
        (ROWS, [1], {"count": 0}, "warmup count must be >= 1"),
        ({"x": np.zeros((0, 2))}, [1], {}, r"shape \(0, 2\); expected \[N, \.\.\.\] with N >= 1"),
        ({"x": np.zeros((2, 2)), "y": np.zeros((3, 1))}, [1], {}, "different row counts"),
    ],
)
def test_write_warmup_refuses_bad_arguments(tmp_path: Path, samples: dict, batch_sizes: list, kwargs: dict, message: str) -> None:
    with pytest.raises(RepositoryError, match=message):
        write_warmup(tmp_path / "m", samples, batch_sizes, **kwargs)
    assert write_warmup(tmp_path / "n", ROWS, []) == [] and not (tmp_path / "n").exists()


# -- the bundled Triton runs the warmup ---------------------------------------------------------


@pytest.mark.integration
def test_the_bundled_triton_runs_the_warmup_and_refuses_a_short_file(
    tmp_path: Path, trained_movielens, movielens_dir, triton_ports
) -> None:
    from importlib import resources

    from toolkit.data import load_splits
    from toolkit.export.onnx_info import copy_onnx_model, read_io_specs
    from toolkit.repository.metadata import ModelMetadata, write_metadata
    from toolkit.serving import InferenceClient, TritonServer
    from toolkit.train import load_checkpoint

    # Two copies of the ONNX-in-Python ranker, written here rather than by the builder so that this
    # test only depends on the config and warmup modules.
    repo = tmp_path / "model_repository"
    rows = load_splits(movielens_dir, encoder=load_checkpoint(trained_movielens.checkpoint).encoder).test.take(slice(0, 3))
    inputs, outputs = read_io_specs(trained_movielens.onnx)
    runner = resources.files("toolkit.repository").joinpath("python_models", "onnx_runner.py").read_bytes()
    options = BatchingOptions(max_batch_size=64)
    for name in ("warm_onnx_python", "broken_onnx_python"):
        model_dir = repo / name
        copy_onnx_model(trained_movielens.onnx, model_dir / "1")
        (model_dir / "1" / "model.py").write_bytes(runner)
        entries = write_warmup(model_dir, rows.inputs(), [1, 8])
        params = options.thread_parameters(backend="python")
        config = build_model_config(name, inputs, outputs, options, backend="python", parameters=params, warmup=entries)
        (model_dir / "config.pbtxt").write_text(config_to_text(config))
        write_metadata(model_dir, ModelMetadata(role="ranker", variant="onnx_python"))
    short = repo / "broken_onnx_python" / "warmup" / "row_1_sparse_ids.bin"
    short.write_bytes(short.read_bytes()[:-8])  # one id short

    findings = validate_repository(repo)
    assert [(f.model, f.severity) for f in findings] == [("broken_onnx_python", "error")]
    assert "warmup/row_1_sparse_ids.bin has 48 bytes" in findings[0].message

    with TritonServer(repo, extra_args=["--log-verbose=1"], **triton_ports) as server:
        states = {s.name: s for s in server.model_states()}
        log = server.log_path.read_text(errors="replace")
        assert states["warm_onnx_python"].state == "READY"
        assert "model 'warm_onnx_python' instance" in log and "is running warmup sample 'batch_8_row_1'" in log
        assert states["broken_onnx_python"].state == "UNAVAILABLE"
        assert "warmup setting expects 56 bytes" in states["broken_onnx_python"].reason
        with InferenceClient(server.http_url, protocol="http", model_name="warm_onnx_python") as client:
            probability = client.infer(rows.inputs())["probability"]
        assert probability.shape == (3, 1) and np.all((probability > 0) & (probability < 1))
