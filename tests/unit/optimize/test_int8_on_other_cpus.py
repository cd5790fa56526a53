"""INT8 models give the same answers on an AVX2-only CPU as on a VNNI one.

The AVX2-only CPU is QEMU's user-mode emulation of an AMD EPYC Rome (``qemu-x86_64 -cpu
EPYC-Rome``: AVX2, no VNNI), which makes ONNX Runtime's MLAS pick its AVX2 integer kernels
exactly as on the real machine, whatever CPU the test runs on. Debian's ``qemu-user`` provides
it (``make test`` installs it); without it the test is skipped with that reason.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from toolkit.compress.recipe import OnnxDynamicInt8Config, OnnxStaticInt8Config
from toolkit.export import export_onnx
from toolkit.models import dlrm_example_inputs
from toolkit.optimize.onnx_quant import quantize_dynamic_int8, quantize_static_int8
from toolkit.train import TrainConfig, train_dlrm

QEMU = shutil.which("qemu-x86_64")
pytestmark = pytest.mark.skipif(
    QEMU is None or platform.machine() != "x86_64",
    reason="needs qemu-x86_64 (Debian's qemu-user) on an x86-64 machine to emulate an AVX2-only CPU",
)

_RUN = """
import sys, numpy as np, onnxruntime as ort
inputs = dict(np.load(sys.argv[1]))
outs = {}
for i, path in enumerate(sys.argv[3:]):
    outs[str(i)] = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, inputs)[0]
np.savez(sys.argv[2], **outs)
"""


def _run_native(path: Path, inputs: dict) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def _run_on_avx2(paths: list[Path], inputs: dict, tmp: Path) -> list[np.ndarray]:
    np.savez(tmp / "inputs.npz", **inputs)
    script = tmp / "run.py"
    script.write_text(_RUN)
    cmd = [QEMU, "-cpu", "EPYC-Rome", sys.executable, str(script), str(tmp / "inputs.npz"), str(tmp / "out.npz"), *map(str, paths)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outs = np.load(tmp / "out.npz")
    return [outs[str(i)] for i in range(len(paths))]


@pytest.fixture(scope="module")
def fp32_onnx(synthetic_splits, tmp_path_factory) -> Path:
    model = train_dlrm(
        synthetic_splits.train, synthetic_splits.val, synthetic_splits.encoder, TrainConfig(max_epochs=2, learning_rate=1e-2)
    ).model
    return export_onnx(model, dlrm_example_inputs(model.config, 8), ["probability"], tmp_path_factory.mktemp("fp32") / "model.onnx")


def test_int8_built_for_avx2_answers_the_same_on_avx2_and_vnni_cpus(fp32_onnx, synthetic_splits, tmp_path: Path) -> None:
    test = synthetic_splits.test.inputs()
    dynamic = quantize_dynamic_int8(fp32_onnx, tmp_path / "dyn" / "model.onnx", OnnxDynamicInt8Config(per_channel=True), cpu="avx2")
    calibration = synthetic_splits.train.inputs()
    config = OnnxStaticInt8Config(calibration_rows=1024)
    static = quantize_static_int8(fp32_onnx, tmp_path / "static" / "model.onnx", config, calibration, cpu="avx2")
    ref, dyn_here, static_here = (_run_native(p, test) for p in (fp32_onnx, dynamic, static))
    ref_avx2, dyn_avx2, static_avx2 = _run_on_avx2([fp32_onnx, dynamic, static], test, tmp_path)
    # FP32 kernels differ between AVX-512 and AVX2 only in summation order: float32 rounding
    np.testing.assert_allclose(ref_avx2, ref, atol=1e-5)
    # 7-bit weights never saturate, and integer sums are exact: the same INT8 answers on both CPUs
    # (up to the float dequantization, 1e-6)
    np.testing.assert_allclose(dyn_avx2, dyn_here, atol=1e-6)
    np.testing.assert_allclose(static_avx2, static_here, atol=1e-6)
    # and close to FP32 there: measured max |Δp| 0.015 (dynamic) and 0.025 (static); a saturating
    # kernel gives 0.067 and 0.065
    assert np.abs(dyn_avx2 - ref_avx2).max() < 0.03
    assert np.abs(static_avx2 - ref_avx2).max() < 0.05 and np.abs(static_avx2 - ref_avx2).mean() < 0.005
