"""Benchmark served models with NVIDIA's perf_analyzer: real input rows, load sweeps, parsed reports.

::

    from toolkit.perf import run_perf_analyzer, write_input_data
    from toolkit.serving import InferenceClient

    with InferenceClient(server.grpc_url, protocol="grpc", model_name="dlrm") as client:
        specs = client.input_specs
    data = write_input_data(out / "input_data.json", test_rows.take(slice(0, 1024)).inputs(), batch_size=32)
    points = run_perf_analyzer("dlrm", server.grpc_url, protocol="grpc", input_data=data, input_specs=specs,
                               batch_size=32, concurrency=[1, 2, 4], out_dir=out)
    for p in points:
        print(p.concurrency, p.throughput_infer_per_s, p.p99_latency_ms)

Never imports torch (``.importlinter``): it runs next to a server, in the SDK container.
"""

from toolkit.perf.analyzer import (
    LoadPoint,
    PerfAnalyzer,
    ProfileExperiment,
    find_perf_analyzer,
    parse_perf_csv,
    parse_profile_export,
    read_input_data,
    run_perf_analyzer,
    write_input_data,
)

__all__ = [
    "PerfAnalyzer",
    "LoadPoint",
    "ProfileExperiment",
    "find_perf_analyzer",
    "write_input_data",
    "read_input_data",
    "run_perf_analyzer",
    "parse_perf_csv",
    "parse_profile_export",
]
