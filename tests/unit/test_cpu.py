"""The serving CPU: feature detection and the INT8 settings that keep accuracy there (toolkit.cpu)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from toolkit.cpu import detect_cpu, int8_settings, resolve_cpu_target
from toolkit.errors import ToolkitError

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8375C\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni\n"
ROME = "processor\t: 0\nmodel name\t: AMD EPYC 7R32\nflags\t\t: fpu sse4_2 avx avx2 fma\n"


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the fixtures are x86-64 /proc/cpuinfo files")
def test_a_vnni_cpu_gets_full_8_bit_weights(tmp_path: Path) -> None:
    cpu = detect_cpu(_cpuinfo(tmp_path, XEON))
    assert cpu.model_name == "Intel(R) Xeon(R) Platinum 8375C" and cpu.has_vnni and cpu.target == "vnni"
    assert cpu.as_dict()["simd_flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    settings = int8_settings("auto", cpu=cpu)
    assert settings.cpu_target == "vnni" and settings.reduce_range is False


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the fixtures are x86-64 /proc/cpuinfo files")
def test_an_avx2_cpu_without_vnni_gets_7_bit_weights_so_nothing_saturates(tmp_path: Path) -> None:
    cpu = detect_cpu(_cpuinfo(tmp_path, ROME))
    assert not cpu.has_vnni and cpu.target == "avx2"
    settings = int8_settings("auto", cpu=cpu)
    assert settings.reduce_range is True and "saturating int16" in settings.reason


def test_a_declared_target_wins_over_this_machine(tmp_path: Path) -> None:
    here = detect_cpu()
    assert int8_settings("avx2", cpu=here).reduce_range is True
    assert int8_settings("vnni", cpu=here).reduce_range is False
    assert resolve_cpu_target("auto") == here.target


def test_an_unknown_cpu_target_names_the_choices() -> None:
    with pytest.raises(ToolkitError, match=r"unknown CPU target 'avx512'; expected one of auto, vnni, avx2, arm64"):
        int8_settings("avx512")


def test_a_missing_cpuinfo_file_is_no_flags(tmp_path: Path) -> None:
    cpu = detect_cpu(tmp_path / "absent")
    assert cpu.flags == frozenset() and not cpu.has_vnni
