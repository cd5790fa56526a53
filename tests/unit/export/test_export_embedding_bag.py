"""nn.EmbeddingBag through the dynamo exporter (torch 2.13).

Finding: mode="sum" EmbeddingBag exports with exact numerics in ONNX Runtime, for 2-D ids
(dynamic batch) and for flat ids + offsets (including empty bags), but as an ONNX Loop over
the bags (sequence ops): slow in ONNX Runtime and not parseable by TensorRT. export_onnx
supports it and logs a warning; flat ids + offsets cannot share one batch dimension (Triton
batching would concatenate offsets wrongly) and are rejected with dynamic_batch=True.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from toolkit.errors import ExportError
from toolkit.export import check_parity, export_onnx, find_embedding_bags, read_io_specs
from toolkit.tensors import TensorSpec


class BagModel(nn.Module):
    """ids int64 [B, L] -> score float32 [B, 1] through a sum EmbeddingBag."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bag = nn.EmbeddingBag(100, 8, mode="sum")
        self.head = nn.Linear(8, 1)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.bag(ids, offsets))


@pytest.fixture(scope="module")
def bag_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[BagModel, Path, list[logging.LogRecord]]:
    model = BagModel().eval()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logger = logging.getLogger("toolkit.export.torch2onnx")
    logger.addHandler(handler)
    try:
        path = export_onnx(model, {"ids": torch.randint(0, 100, (4, 5))}, ["score"], tmp_path_factory.mktemp("bag") / "bag.onnx")
    finally:
        logger.removeHandler(handler)
    return model, path, records


def test_find_embedding_bags() -> None:
    assert find_embedding_bags(BagModel()) == ["bag"]
    assert find_embedding_bags(nn.EmbeddingBag(3, 2)) == [""]
    assert find_embedding_bags(nn.Embedding(3, 2)) == []


def test_2d_embedding_bag_exports_with_dynamic_batch_and_parity(bag_onnx) -> None:
    model, path, _ = bag_onnx
    assert read_io_specs(path) == ([TensorSpec("ids", "int64", (None, 5))], [TensorSpec("score", "float32", (None, 1))])
    ids = np.random.default_rng(0).integers(0, 100, (300, 5), dtype=np.int64)
    for batch_size in (1, 37):
        report = check_parity(model, path, {"ids": ids}, batch_size=batch_size)
        assert report.passed and report.max_abs_diff <= 1e-5


def test_embedding_bag_export_is_a_loop_and_is_logged(bag_onnx) -> None:
    # The reason for the warning: the bag becomes an ONNX Loop with sequence ops (no TensorRT).
    _, path, records = bag_onnx
    ops = {node.op_type for node in onnx.load_model(str(path), load_external_data=False).graph.node}
    assert "Loop" in ops
    assert any("nn.EmbeddingBag (bag)" in r.getMessage() and "TensorRT" in r.getMessage() for r in records)


def test_offsets_input_cannot_share_the_batch_dimension(tmp_path: Path) -> None:
    ids = torch.randint(0, 100, (10,))
    offsets = torch.tensor([0, 3, 5, 9])
    with pytest.raises(ExportError, match=r"'ids' \(10 rows\), 'offsets' \(4 rows\) differ") as err:
        export_onnx(BagModel(), {"ids": ids, "offsets": offsets}, ["score"], tmp_path / "bag.onnx")
    assert "2-D padded ids" in err.value.hint
