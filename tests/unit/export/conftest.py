"""Shared fixtures for the export tests: small models and their ONNX exports.

The dynamo exporter takes seconds per model, so each export used by several tests is made
once per session; tests that modify files work on copies.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from toolkit.export import export_onnx

N_FEATURES = 4
N_IDS = 3
VOCAB = 50


class TwoInputMLP(nn.Module):
    """float32 x [B, 4] and int64 ids [B, 3] -> probability float32 [B, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 8)
        self.mlp = nn.Sequential(nn.Linear(N_FEATURES + N_IDS * 8, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        e = self.emb(ids).flatten(1)
        return torch.sigmoid(self.mlp(torch.cat([x, e], dim=1)))


def _make_mlp(seed: int) -> TwoInputMLP:
    torch.manual_seed(seed)
    return TwoInputMLP().eval()


@pytest.fixture(scope="session")
def make_mlp() -> Callable[[int], TwoInputMLP]:
    """Factory: a TwoInputMLP with weights drawn from ``seed``."""
    return _make_mlp


@pytest.fixture(scope="session")
def mlp() -> TwoInputMLP:
    return _make_mlp(0)


def example_inputs(batch: int) -> dict[str, torch.Tensor]:
    """Example tensors with ``batch`` rows: x float32 [batch, 4], ids int64 [batch, 3]."""
    g = torch.Generator().manual_seed(batch)
    return {
        "x": torch.randn(batch, N_FEATURES, generator=g),
        "ids": torch.randint(0, VOCAB, (batch, N_IDS), generator=g),
    }


@pytest.fixture(scope="session")
def make_inputs() -> Callable[[int], dict[str, torch.Tensor]]:
    """Factory: example tensors with the given number of rows (see :func:`example_inputs`)."""
    return example_inputs


@pytest.fixture(scope="session")
def mlp_onnx(mlp: TwoInputMLP, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mlp`` exported with a dynamic batch to ``<tmp>/mlp/mlp.onnx`` (read-only for tests)."""
    return export_onnx(mlp, example_inputs(8), ["probability"], tmp_path_factory.mktemp("mlp") / "mlp.onnx")


@pytest.fixture(scope="session")
def fixed16_onnx(mlp: TwoInputMLP, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``mlp`` exported with a fixed batch of 16 rows (``dynamic_batch=False``)."""
    path = tmp_path_factory.mktemp("fixed16") / "model.onnx"
    return export_onnx(mlp, example_inputs(16), ["probability"], path, dynamic_batch=False)


@pytest.fixture(scope="session")
def rows() -> dict[str, np.ndarray]:
    """500 parity rows: x float32 [500, 4], ids int64 [500, 3]."""
    rng = np.random.default_rng(123)
    return {
        "x": rng.standard_normal((500, N_FEATURES)).astype(np.float32),
        "ids": rng.integers(0, VOCAB, (500, N_IDS), dtype=np.int64),
    }
