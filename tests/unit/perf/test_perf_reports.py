"""Parsing perf_analyzer's CSV report and profile export, from files of real runs (tests/fixtures/perf)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from toolkit.errors import PerfError
from toolkit.perf import parse_perf_csv, parse_profile_export

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "perf"


def test_concurrency_csv_converts_microseconds_to_milliseconds() -> None:
    points = parse_perf_csv(FIXTURES / "concurrency_grpc_b2.csv", batch_size=2)
    assert [p.concurrency for p in points] == [1, 2]
    assert all(p.request_rate is None and p.mode == "concurrency" and p.batch_size == 2 for p in points)
    first = points[0]
    # 1,4347.89,2,168,40,11,146,83,0,378,551,603,2904,454,2,443
    assert first.throughput_infer_per_s == pytest.approx(4347.89)
    assert first.throughput_requests_per_s == pytest.approx(4347.89 / 2)
    assert (first.p50_latency_ms, first.p90_latency_ms, first.p95_latency_ms, first.p99_latency_ms) == pytest.approx(
        (0.378, 0.551, 0.603, 2.904)
    )
    assert first.avg_latency_ms == pytest.approx(0.454)
    assert (first.client_send_ms, first.network_server_send_recv_ms, first.client_recv_ms) == pytest.approx((0.002, 0.168, 0.0))
    assert (first.server_queue_ms, first.server_compute_input_ms, first.server_compute_infer_ms, first.server_compute_output_ms) == (
        pytest.approx((0.040, 0.011, 0.146, 0.083))
    )
    assert first.server_compute_ms == pytest.approx(0.040 + 0.011 + 0.146 + 0.083)
    for p in points:
        assert p.throughput_infer_per_s > 0
        assert p.p50_latency_ms <= p.p90_latency_ms <= p.p95_latency_ms <= p.p99_latency_ms
    assert points[0].to_dict()["mode"] == "concurrency" and points[0].to_dict()["p99_latency_ms"] == pytest.approx(2.904)


def test_csv_without_verbose_columns_has_no_average() -> None:
    (point,) = parse_perf_csv(FIXTURES / "concurrency_grpc_b2_plain.csv", batch_size=2)
    assert point.concurrency == 1 and point.avg_latency_ms is None
    assert point.p99_latency_ms == pytest.approx(4.192)


def test_request_rate_csv() -> None:
    points = parse_perf_csv(FIXTURES / "request_rate_http.csv")
    assert [p.request_rate for p in points] == [5.0, 10.0]
    assert [p.load for p in points] == [5.0, 10.0]
    assert all(p.concurrency is None and p.mode == "request_rate" and p.batch_size == 1 for p in points)
    assert points[1].throughput_infer_per_s == pytest.approx(9.99115)
    assert points[1].p99_latency_ms == pytest.approx(5.355)


def test_profile_export_summarizes_each_level() -> None:
    experiments = parse_profile_export(FIXTURES / "request_rate_http_export.json")
    assert [(e.mode, e.value) for e in experiments] == [("request_rate", 5.0), ("request_rate", 10.0)]
    for e in experiments:
        assert e.request_count > 10 and e.window_count >= 3 and e.duration_s > 1
        assert 0 < e.p50_latency_ms <= e.p99_latency_ms
        assert e.avg_latency_ms > 0
        # the rate asked for, give or take the edges of the windows
        assert e.request_count / e.duration_s == pytest.approx(e.value, rel=0.5)


def test_profile_export_with_no_responses_gives_nan(tmp_path: Path) -> None:
    path = tmp_path / "export.json"
    path.write_text('{"experiments": [{"experiment": {"mode": "concurrency", "value": 1}, "requests": [], "window_boundaries": []}]}')
    (e,) = parse_profile_export(path)
    assert e.request_count == 0 and math.isnan(e.p99_latency_ms) and e.window_count == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("Batch,Inferences/Second\n1,2\n", "no 'Concurrency' or 'Request Rate' column"),
        ("Concurrency,Inferences/Second,p50 latency\n1,2,3\n", "missing column.*p90 latency"),
    ],
)
def test_malformed_csv_names_the_problem(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "report.csv"
    path.write_text(text)
    with pytest.raises(PerfError, match=match):
        parse_perf_csv(path)


def test_csv_with_a_non_number_names_the_line(tmp_path: Path) -> None:
    lines = (FIXTURES / "concurrency_grpc_b2.csv").read_text().splitlines()
    lines[2] = lines[2].replace("7457.4", "n/a")
    path = tmp_path / "report.csv"
    path.write_text("\n".join(lines))
    with pytest.raises(PerfError, match="line 3: not a number"):
        parse_perf_csv(path)


def test_csv_stops_at_the_blank_line_before_server_metrics(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    path.write_text((FIXTURES / "concurrency_grpc_b2.csv").read_text() + "\n\nConcurrency,Avg GPU Utilization\n1,gpu0:0.5;\n")
    assert len(parse_perf_csv(path)) == 2


def test_missing_files_raise_perf_error(tmp_path: Path) -> None:
    with pytest.raises(PerfError, match="cannot read the perf_analyzer report"):
        parse_perf_csv(tmp_path / "nope.csv")
    with pytest.raises(PerfError, match="cannot read the perf_analyzer profile export"):
        parse_profile_export(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"data": []}')
    with pytest.raises(PerfError, match="not a perf_analyzer profile export"):
        parse_profile_export(tmp_path / "bad.json")
