"""The CPU a model will be served on: its features, and the INT8 settings that keep accuracy there.

ONNX Runtime's x86-64 integer GEMM (MLAS) multiplies uint8 activations by int8 weights. On
CPUs with a VNNI dot-product instruction (``avx512_vnni``, ``avx_vnni``, AMX) the products
are summed in 32 bits. On AVX2/AVX-512 CPUs without VNNI it uses ``vpmaddubsw``, which sums
each pair of u8×s8 products into a *saturating* int16: 2 × 255 × 127 = 64,770 does not fit
in 32,767, so large activations meeting large weights clip (ONNX Runtime's quantization docs,
"When and why do I need to try U8U8?" / ``reduce_range``; MLAS's
``onnxruntime/core/mlas/lib/qgemm_kernel_avx2.cpp``). Static S8S8 models take the same path
there (the activations are shifted to uint8 first).

The fix used here is ``reduce_range``: 7-bit weights ([-64, 63]), so 2 × 255 × 64 = 32,640
fits int16 and nothing saturates. Measured on the test DLRM (tests/unit/compress), with the
AVX2-only CPU emulated by ``qemu-x86_64 -cpu EPYC-Rome``: dynamic INT8 max |Δp| 0.067 with
8-bit per-channel weights, 0.015 with ``reduce_range`` (equal to the VNNI machine's answer
to the last bit); static QDQ mean |Δp| 0.0061 → 0.0023.

A target is one of :data:`CPU_TARGETS`:

* ``auto``: the CPU this process runs on (read from ``/proc/cpuinfo``);
* ``vnni``: x86-64 with AVX-512 VNNI or AVX-VNNI (Intel Cascade Lake and later, AMD Zen 4
  and later): full 8-bit weights;
* ``avx2``: x86-64 with AVX2 but no VNNI (AMD Zen 2/3, Intel Haswell–Skylake): 7-bit weights;
* ``arm64``: Arm (ONNX Runtime's docs name no saturation there): full 8-bit weights.

A model quantized for ``avx2`` gives the same answers on every target (it never saturates);
one quantized for ``vnni`` loses accuracy when served on an ``avx2`` CPU.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from toolkit.errors import ToolkitError

__all__ = ["CPU_TARGETS", "CpuTarget", "CpuInfo", "Int8Settings", "detect_cpu", "machine_info", "resolve_cpu_target", "int8_settings"]

CpuTarget = Literal["auto", "vnni", "avx2", "arm64"]
CPU_TARGETS: tuple[str, ...] = ("auto", "vnni", "avx2", "arm64")

#: /proc/cpuinfo flags of an int8 dot-product instruction that sums in 32 bits.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni"})
#: The SIMD flags worth reporting (what MLAS dispatches on).
REPORTED_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimddp")


@dataclass(frozen=True)
class CpuInfo:
    """What :func:`detect_cpu` read: ``model_name``, ``arch`` (``uname -m``) and the feature ``flags``."""

    model_name: str
    arch: str
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def has_vnni(self) -> bool:
        """True when the CPU has an int8 dot product that sums in 32 bits (no int16 saturation)."""
        return bool(self.flags & VNNI_FLAGS)

    @property
    def target(self) -> str:
        """The :data:`CPU_TARGETS` entry this CPU is (never ``auto``)."""
        if self.arch in ("aarch64", "arm64"):
            return "arm64"
        return "vnni" if self.has_vnni else "avx2"

    def as_dict(self) -> dict:
        """JSON-safe: model name, arch, target and the reported SIMD flags it has."""
        return {
            "cpu": self.model_name,
            "arch": self.arch,
            "cpu_target": self.target,
            "simd_flags": [f for f in REPORTED_FLAGS if f in self.flags],
        }


def detect_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Read the CPU's model name and flags (Linux ``/proc/cpuinfo``; elsewhere no flags).

    ``flags`` come from the first processor's ``flags`` (x86) or ``Features`` (Arm) line.
    """
    name, flags = None, None
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and name is None:
            name = value.strip()
        elif key in ("flags", "features") and flags is None:
            flags = frozenset(value.split())
    name = name or platform.processor() or "unknown"
    return CpuInfo(name, platform.machine(), flags or frozenset())


def machine_info(**versions: str) -> dict:
    """The machine a benchmark ran on, recorded with every committed result: CPU model name, core
    count, OS and Python version, plus the library ``versions`` the caller names (``torch="2.13.0"``).
    """
    return {
        "cpu": detect_cpu().model_name,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **versions,
    }


def resolve_cpu_target(target: str = "auto", *, cpu: CpuInfo | None = None) -> str:
    """``target`` itself, or for ``auto`` the target of ``cpu`` (default: this machine).

    Raises:
        ToolkitError: ``target`` is not one of :data:`CPU_TARGETS`.
    """
    if target not in CPU_TARGETS:
        raise ToolkitError(
            f"unknown CPU target {target!r}; expected one of {', '.join(CPU_TARGETS)}",
            hint="avx2 for x86-64 without VNNI (AMD Zen 2/3, Intel before Cascade Lake), vnni for AVX-512 VNNI/AVX-VNNI, "
            "auto for the CPU of this machine",
        )
    return (cpu or detect_cpu()).target if target == "auto" else target


@dataclass(frozen=True)
class Int8Settings:
    """ONNX Runtime quantizer settings for one CPU target (``reduce_range``) and why."""

    cpu_target: str
    reduce_range: bool
    reason: str


def int8_settings(target: str = "auto", *, cpu: CpuInfo | None = None) -> Int8Settings:
    """The INT8 settings that keep accuracy on ``target`` (see the module docstring for the why).

    Raises:
        ToolkitError: ``target`` is not one of :data:`CPU_TARGETS`.
    """
    resolved = resolve_cpu_target(target, cpu=cpu)
    if resolved == "avx2":
        return Int8Settings(
            resolved, True, "x86-64 without VNNI: u8×s8 pairs sum in saturating int16 (vpmaddubsw), so weights use 7 bits (reduce_range)"
        )
    return Int8Settings(resolved, False, f"{resolved}: int8 products sum in 32 bits, full 8-bit weights")
