"""run_perf_analyzer and find_perf_analyzer without the real binary: a stand-in script that answers
like perf_analyzer 2.50 did in real runs (its CSV header, its unstable and unreachable messages)."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.errors import PerfError
from toolkit.perf import PerfAnalyzer, find_perf_analyzer, parse_perf_csv, parse_profile_export, run_perf_analyzer
from toolkit.tensors import TensorSpec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "perf"
IDS = TensorSpec("sparse_ids", "int64", (None, 7))
DENSE = TensorSpec("dense_features", "float32", (None, 2))

FAKE = """#!{python}
import json, sys
from pathlib import Path

here = Path(__file__).parent
mode = (here / "mode").read_text().strip()
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as f:
    f.write(json.dumps(args) + "\\n")
if args == ["--version"]:
    print("Perf Analyzer Version  (commit unknown)")
    sys.exit(0)
if mode == "unreachable":
    print("error: failed to get model metadata: failed to connect to all addresses; last error: UNKNOWN: "
          "ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused", file=sys.stderr)
    sys.exit(99)
if mode == "crash":
    print("error: Failed to init manager inputs: something else", file=sys.stderr)
    sys.exit(99)

def opt(flag):
    return args[args.index(flag) + 1] if flag in args else None

rate = opt("--request-rate-range")
parts = [float(x) for x in (rate or opt("--concurrency-range")).split(":")]
start, end, step = parts[0], parts[1] if len(parts) > 1 else parts[0], parts[2] if len(parts) > 2 else 1.0
levels = []
while start <= end + 1e-9:
    levels.append(start)
    start += step
if mode == "unstable_always" or (mode == "unstable_once" and int(opt("--measurement-interval")) < 2000):
    print(Path({unstable!r}).read_text())
    levels = levels[:1]
header, row = Path({csv!r}).read_text().splitlines()[:2]
if rate:
    header = header.replace("Concurrency", "Request Rate", 1)
rows = [",".join(["%g" % level] + row.split(",")[1:]) for level in levels]
if mode == "reversed":  # the real one once wrote a concurrency 1:2 sweep as 2, 1 (CI, 2 cores)
    rows.reverse()
Path(opt("-f")).write_text("\\n".join([header] + rows))
if opt("--profile-export-file"):
    experiments = [{{"experiment": {{"mode": "request_rate" if rate else "concurrency", "value": level}},
                    "requests": [{{"timestamp": 0, "response_timestamps": [1000000]}}], "window_boundaries": [0, 1, 2, 3]}}
                   for level in levels]
    Path(opt("--profile-export-file")).write_text(json.dumps({{"experiments": experiments, "version": ""}}))
"""


class Fake:
    def __init__(self, folder: Path, mode: str = "ok") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.path = folder / "perf_analyzer"
        self.path.write_text(
            FAKE.format(
                python=sys.executable, unstable=str(FIXTURES / "unstable_output.txt"), csv=str(FIXTURES / "concurrency_grpc_b2.csv")
            )
        )
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.mode = mode

    @property
    def mode(self) -> str:
        return (self.folder / "mode").read_text()

    @mode.setter
    def mode(self, value: str) -> None:
        (self.folder / "mode").write_text(value)

    @property
    def calls(self) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    @property
    def analyzer(self) -> PerfAnalyzer:
        return PerfAnalyzer(executable=self.path)


def _opt(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


@pytest.fixture
def input_data(tmp_path: Path) -> Path:
    path = tmp_path / "input_data.json"
    path.write_text('{"data": []}')
    return path


# -- refusing random ids -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int64", "int32"])
def test_random_data_for_id_inputs_is_refused_before_running(tmp_path: Path, dtype: str) -> None:
    ids = TensorSpec("sparse_ids", dtype, (None, 7))
    never = PerfAnalyzer(executable=tmp_path / "never-run")
    with pytest.raises(PerfError, match=rf"sparse_ids {dtype}\[B, 7\] hold integer ids.*random data.*embedding tables") as info:
        run_perf_analyzer(
            "dlrm", "127.0.0.1:1", protocol="grpc", input_data=None, input_specs=[DENSE, ids], out_dir=tmp_path / "out", analyzer=never
        )
    assert "real rows" in (info.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_float_only_model_may_use_random_data(tmp_path: Path) -> None:
    fake = Fake(tmp_path / "bin")
    points = run_perf_analyzer(
        "mlp", "127.0.0.1:1", protocol="http", input_data=None, input_specs=[DENSE], out_dir=tmp_path / "out", analyzer=fake.analyzer
    )
    assert [p.concurrency for p in points] == [1]
    assert "--input-data" not in fake.calls[0]


# -- the command line, retries and errors -------------------------------------------------------


def test_flags_of_a_concurrency_sweep(tmp_path: Path, input_data: Path) -> None:
    fake = Fake(tmp_path / "bin")
    out = tmp_path / "out"
    points = run_perf_analyzer(
        "dlrm", "127.0.0.1:8001", protocol="grpc", input_data=input_data, input_specs=[DENSE, IDS], batch_size=2,
        concurrency=[1, 2], measurement_interval_ms=1500, stability_percentage=25, max_trials=4, out_dir=out, analyzer=fake.analyzer,
    )  # fmt: skip
    (args,) = fake.calls
    expected = {
        "-m": "dlrm", "-u": "127.0.0.1:8001", "-i": "grpc", "-b": "2", "--input-data": str(input_data),
        "--concurrency-range": "1:2:1", "--measurement-interval": "1500", "-s": "25", "-r": "4",
    }  # fmt: skip
    assert {flag: _opt(args, flag) for flag in expected} == expected
    assert "--verbose-csv" in args and "--request-distribution" not in args
    assert [p.concurrency for p in points] == [1, 2] and all(p.batch_size == 2 for p in points)
    assert sorted(p.name for p in out.iterdir()) == ["perf_analyzer.csv", "perf_analyzer.log", "profile_export.json"]
    assert parse_perf_csv(out / "perf_analyzer.csv", batch_size=2) == points
    assert [e.value for e in parse_profile_export(out / "profile_export.json")] == [1.0, 2.0]


def test_flags_of_a_request_rate_sweep(tmp_path: Path, input_data: Path) -> None:
    fake = Fake(tmp_path / "bin")
    points = run_perf_analyzer(
        "dlrm", "127.0.0.1:8000", protocol="http", input_data=input_data, input_specs=[IDS], request_rate=[50, 100, 150],
        request_distribution="poisson", profile_export=False, out_dir=tmp_path / "out", analyzer=fake.analyzer,
    )  # fmt: skip
    (args,) = fake.calls
    assert _opt(args, "--request-rate-range") == "50:150:50" and _opt(args, "--request-distribution") == "poisson"
    assert "--profile-export-file" not in args and "--concurrency-range" not in args
    assert [p.request_rate for p in points] == [50.0, 100.0, 150.0]
    assert not (tmp_path / "out" / "profile_export.json").exists()


def test_points_come_back_in_ascending_load_whatever_order_the_csv_has(tmp_path: Path, input_data: Path) -> None:
    fake = Fake(tmp_path / "bin", mode="reversed")
    out = tmp_path / "out"
    points = run_perf_analyzer(
        "dlrm", "h:1", protocol="grpc", input_data=input_data, input_specs=[IDS], concurrency=[1, 2, 3], out_dir=out, analyzer=fake.analyzer
    )
    assert [p.concurrency for p in parse_perf_csv(out / "perf_analyzer.csv")] == [3, 2, 1]  # the file stays as written
    assert [p.concurrency for p in points] == [1, 2, 3]


def test_uneven_levels_run_one_perf_analyzer_each_and_merge(tmp_path: Path, input_data: Path) -> None:
    fake = Fake(tmp_path / "bin")
    out = tmp_path / "out"
    points = run_perf_analyzer(
        "dlrm", "h:1", protocol="grpc", input_data=input_data, input_specs=[IDS], concurrency=[1, 2, 4], out_dir=out, analyzer=fake.analyzer
    )
    assert [_opt(a, "--concurrency-range") for a in fake.calls] == ["1", "2", "4"]
    assert [p.concurrency for p in points] == [1, 2, 4]
    assert [p.concurrency for p in parse_perf_csv(out / "perf_analyzer.csv")] == [1, 2, 4]
    assert [e.value for e in parse_profile_export(out / "profile_export.json")] == [1.0, 2.0, 4.0]


def test_unstable_measurement_is_retried_once_with_doubled_interval(
    tmp_path: Path, input_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = Fake(tmp_path / "bin", mode="unstable_once")  # exit code 0, as the real one: only the text tells
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="toolkit.perf"):
        points = run_perf_analyzer(
            "dlrm", "h:1", protocol="grpc", input_data=input_data, input_specs=[IDS], concurrency=[1, 2],
            measurement_interval_ms=1000, out_dir=out, analyzer=fake.analyzer,
        )  # fmt: skip
    assert [_opt(a, "--measurement-interval") for a in fake.calls] == ["1000", "2000"]
    assert [p.concurrency for p in points] == [1, 2]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "did not stabilize" in record.getMessage() and "retrying once with --measurement-interval 2000 ms" in record.getMessage()
    log = (out / "perf_analyzer.log").read_text()
    assert "--measurement-interval 1000" in log and "--measurement-interval 2000" in log
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no work folder left


def test_still_unstable_after_the_retry_raises(tmp_path: Path, input_data: Path) -> None:
    fake = Fake(tmp_path / "bin", mode="unstable_always")
    out = tmp_path / "out"
    with pytest.raises(PerfError, match=r"did not stabilize at concurrency 1:2:1 .*--measurement-interval 4000 ms") as info:
        run_perf_analyzer(
            "dlrm", "h:1", protocol="grpc", input_data=input_data, input_specs=[IDS], concurrency=[1, 2],
            measurement_interval_ms=2000, out_dir=out, analyzer=fake.analyzer,
        )  # fmt: skip
    assert "stability_percentage" in (info.value.hint or "")
    assert len(fake.calls) == 2
    assert sorted(p.name for p in out.iterdir()) == ["perf_analyzer.log"]


def test_other_failure_is_retried_then_reported(tmp_path: Path, input_data: Path) -> None:
    fake = Fake(tmp_path / "bin", mode="crash")
    with pytest.raises(PerfError, match="exited with code 99 .*Failed to init manager inputs"):
        run_perf_analyzer(
            "dlrm", "h:1", protocol="grpc", input_data=input_data, input_specs=[IDS], out_dir=tmp_path / "out", analyzer=fake.analyzer
        )
    assert len(fake.calls) == 2


def test_unreachable_server_names_the_url_and_is_not_retried(tmp_path: Path, input_data: Path) -> None:
    fake = Fake(tmp_path / "bin", mode="unreachable")
    with pytest.raises(PerfError, match=r"cannot reach the Triton server at 127\.0\.0\.1:1 over grpc"):
        run_perf_analyzer(
            "dlrm",
            "127.0.0.1:1",
            protocol="grpc",
            input_data=input_data,
            input_specs=[IDS],
            out_dir=tmp_path / "out",
            analyzer=fake.analyzer,
        )
    assert len(fake.calls) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": [1], "request_rate": [5.0]}, "not both"),
        ({"concurrency": [4, 2]}, "must increase"),
        ({"concurrency": [0, 1]}, "whole numbers >= 1"),
        ({"concurrency": [1.5]}, "whole numbers >= 1"),
        ({"request_rate": []}, "not empty"),
        ({"protocol": "grpcs"}, "protocol must be"),
        ({"batch_size": 0}, "must be positive"),
        ({"input_data": Path("/nonexistent/data.json")}, "does not exist"),
    ],
)
def test_bad_arguments(tmp_path: Path, input_data: Path, kwargs: dict, match: str) -> None:
    args = {"protocol": "grpc", "input_data": input_data, "input_specs": [IDS], "out_dir": tmp_path / "out"} | kwargs
    with pytest.raises(PerfError, match=match):
        run_perf_analyzer("dlrm", "h:1", analyzer=PerfAnalyzer(executable=tmp_path / "never-run"), **args)


# -- finding the binary -------------------------------------------------------------------------


def test_missing_perf_analyzer_gives_the_install_hint(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PerfError, match="not on PATH and .*perf_analyzer/bin/perf_analyzer does not exist") as info:
        find_perf_analyzer(search_path=str(empty), prefix=empty)
    assert "make perf-tools" in (info.value.hint or "")


def test_perf_analyzer_on_path_is_used_as_is(tmp_path: Path) -> None:
    fake = Fake(tmp_path / "sdk" / "bin")
    found = find_perf_analyzer(search_path=str(fake.folder), prefix=tmp_path / "no-venv")
    assert found.executable == fake.path and found.source == "path" and found.env == {}


def test_virtualenv_binary_gets_the_cuda_runtime_on_ld_library_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/elsewhere")
    venv = tmp_path / "venv"
    fake = Fake(venv / "perf_analyzer" / "bin")
    (venv / "perf_analyzer" / ".installed-tritonclient-2.50.0").write_text("tritonclient==2.50.0\n")
    cudart = venv / "lib" / "python3.11" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"
    cudart.mkdir(parents=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    found = find_perf_analyzer(search_path=str(empty), prefix=venv)
    assert found.executable == fake.path
    assert found.env["LD_LIBRARY_PATH"].split(os.pathsep) == [str(cudart), "/opt/elsewhere"]
    assert found.source == "tritonclient==2.50.0"
    assert found.version() == "2.50.0"  # the 2.50 binary prints "Perf Analyzer Version  (commit unknown)"


def test_perf_never_imports_torch() -> None:
    code = "import sys, toolkit.perf; bad = [m for m in ('torch', 'toolkit.train', 'toolkit.export') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
