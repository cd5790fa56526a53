"""The headline comparison and the report files, on load points parsed from a real perf_analyzer CSV."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from toolkit.perf.analyzer import parse_perf_csv
from toolkit.perf.report import headline, write_perf_report
from toolkit.perf.sweep import Sweep, SweepPoint

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "perf"


def _real_points():
    csv = next(p for p in sorted(FIXTURES.glob("*.csv")) if "concurrency" in p.name or "grpc" in p.name)
    points = [p for p in parse_perf_csv(csv) if p.concurrency is not None]
    assert points, csv
    return points


def _sweep(name, points, *, latency_scale=1.0, throughput_scale=1.0):
    scaled = [
        dataclasses.replace(
            p, p99_latency_ms=p.p99_latency_ms * latency_scale, throughput_infer_per_s=p.throughput_infer_per_s * throughput_scale
        )
        for p in points
    ]
    return Sweep(name, "grpc", points[0].batch_size, [SweepPoint(p, 1.0, 50.0) for p in scaled])


def test_headline_ratios_and_claims_from_two_sweeps():
    points = _real_points()
    base = _sweep("baseline", points)
    opt = _sweep("optimized", points, latency_scale=0.25, throughput_scale=3.0)
    h = headline(base, opt, p99_budget_ms=1e9, baseline_auc=0.80, optimized_auc=0.796)
    assert h["p99_ratio"] == pytest.approx(0.25)
    assert h["p99_ratio_at_concurrency"] == max(p.concurrency for p in points)
    assert h["throughput_ratio_at_budget"] == pytest.approx(3.0)
    assert h["auc_ratio"] == pytest.approx(0.995)
    assert h["paper_claims_hold"] == {"p99_ratio < 0.30": True, "throughput_ratio > 2": True, "auc_ratio >= 0.99": True}


def test_throughput_within_budget_ignores_points_above_the_p99_budget():
    points = _real_points()
    base = _sweep("baseline", points)
    slowest = max(p.point.p99_latency_ms for p in base.points)
    assert base.best_within(slowest / 1e6) is None
    h = headline(base, _sweep("optimized", points), p99_budget_ms=slowest / 1e6, baseline_auc=None, optimized_auc=None)
    assert h["throughput_ratio_at_budget"] is None and h["paper_claims_hold"]["throughput_ratio > 2"] is None


def test_report_writes_json_markdown_html_and_plots(tmp_path):
    points = _real_points()
    sweeps = [_sweep("baseline", points), _sweep("optimized", points, latency_scale=0.5, throughput_scale=2.0)]
    report = {"data": "fixture", "sweeps": [s.to_dict() for s in sweeps]}
    report["headline"] = headline(sweeps[0], sweeps[1], p99_budget_ms=10.0, baseline_auc=None, optimized_auc=None)
    written = write_perf_report(report, sweeps, tmp_path / "triton.json")
    names = {p.name for p in written}
    assert {"triton.json", "triton.md", "triton.html", "triton_throughput_p99.png", "triton_breakdown.png"} <= names
    assert json.loads((tmp_path / "triton.json").read_text())["headline"]["p99_ratio"] == pytest.approx(0.5)
    assert (tmp_path / "triton_throughput_p99.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p99 ratio" in (tmp_path / "triton.md").read_text()
    assert "data:image/png;base64," in (tmp_path / "triton.html").read_text()
