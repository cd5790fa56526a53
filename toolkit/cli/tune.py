"""``tritonrec tune``: search a served model's Triton config under a latency budget."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from toolkit._io import atomic_write_json
from toolkit.cli._common import DEFAULT_CHECKPOINT, DEFAULT_DATA_DIR, DEFAULT_REPOSITORY, CheckpointDir, DataDir, console

if TYPE_CHECKING:
    from toolkit.perf.tune import TuneResult


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{option} takes comma-separated whole numbers, got {text!r}") from exc


def _batchings(values: list[str]) -> tuple[tuple[int, tuple[int, ...]], ...]:
    out = []
    for v in values:
        max_batch, _, preferred = v.partition(":")
        try:
            out.append((int(max_batch), tuple(int(b) for b in preferred.split("+") if b.strip())))
        except ValueError as exc:
            raise typer.BadParameter(f"--batching takes MAX[:PREFERRED+PREFERRED...], e.g. 256:64+256, got {v!r}") from exc
    return tuple(sorted(out))


def _table(result: TuneResult) -> Table:
    objective = result.objective
    chosen = result.chosen.candidate if result.chosen else None
    table = Table(title=f"{result.strategy} search: {len(result.measurements)} measurements of {len(result.space)} candidates")
    for column in ("#", "candidate", "instances", "delay µs", "batching", "threads", "best infer/s", "p99 ms", "at c", "note"):
        table.add_column(column, justify="left" if column in ("candidate", "batching", "note") else "right", no_wrap=column == "candidate")
    for i, m in enumerate(result.measurements, start=1):
        c = m.candidate
        op = objective.operating_point(m)
        note = "chosen" if c == chosen else (m.error or ("infeasible" if op is None else ""))
        table.add_row(
            str(i),
            c.key,
            str(c.instance_count),
            str(c.max_queue_delay_us),
            f"{c.max_batch_size}/{'+'.join(map(str, c.preferred_batch_sizes)) or '-'}",
            f"{c.intra_op_threads}x{c.inter_op_threads}",
            "-" if op is None else f"{op.throughput_infer_per_s:,.0f}",
            "-" if op is None else f"{op.p99_latency_ms:.2f}",
            "-" if op is None else str(op.concurrency),
            note[:60],
        )
    return table


def _pareto_table(result: TuneResult) -> Table:
    table = Table(title="Pareto front (throughput vs p99, every measured level)")
    for column in ("candidate", "concurrency", "infer/s", "p99 ms"):
        table.add_column(column, justify="left" if column == "candidate" else "right", no_wrap=True)
    for p in result.pareto:
        table.add_row(p.candidate.key, str(p.concurrency), f"{p.throughput_infer_per_s:,.0f}", f"{p.p99_latency_ms:.2f}")
    return table


def tune_command(
    model_repository: Annotated[
        Path, typer.Argument(help="Repository to serve (or that the --url server serves); the chosen config becomes a new version.")
    ] = DEFAULT_REPOSITORY,
    model: Annotated[str, typer.Option(help="The served model to tune.")] = "dlrm_onnx_python",
    url: Annotated[
        str | None, typer.Option(help="Use a running server at host:port (gRPC port) started with --model-control-mode=explicit.")
    ] = None,
    checkpoint: CheckpointDir = DEFAULT_CHECKPOINT,
    data_dir: DataDir = DEFAULT_DATA_DIR,
    rows: Annotated[int, typer.Option(help="Test rows written as perf_analyzer --input-data.")] = 2048,
    p99_budget_ms: Annotated[float, typer.Option(help="p99 latency budget of every level that counts.")] = 10.0,
    throughput_floor: Annotated[
        float | None, typer.Option(help="Minimize p99 over levels with at least this many inferences/s, instead of maximizing throughput.")
    ] = None,
    brute_force: Annotated[bool, typer.Option("--brute-force", help="Measure every candidate instead of searching.")] = False,
    instance_counts: Annotated[str, typer.Option(help="instance_group counts to try, comma-separated.")] = "1,2",
    queue_delays_us: Annotated[str, typer.Option(help="max_queue_delay_microseconds values, comma-separated.")] = "0,100,500,2000",
    batching: Annotated[
        list[str], typer.Option(help="max_batch_size:preferred+preferred (repeatable), e.g. --batching 64:32 --batching 256:64+256.")
    ] = ["64:32", "256:64+256"],  # noqa: B006
    intra_op_threads: Annotated[str, typer.Option(help="ONNX Runtime intra-op thread counts, comma-separated.")] = "1,2",
    inter_op_threads: Annotated[str, typer.Option(help="ONNX Runtime inter-op thread counts, comma-separated.")] = "1",
    batch_size: Annotated[int, typer.Option(help="Rows per request sent by perf_analyzer (-b).")] = 16,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels of every measurement, comma-separated.")] = "1,4,8",
    measurement_interval_ms: Annotated[int, typer.Option(help="perf_analyzer --measurement-interval.")] = 500,
    write: Annotated[bool, typer.Option("--write/--no-write", help="Write the chosen config as a new version of the model.")] = True,
    out: Annotated[Path, typer.Option(help="Result JSON (every measurement, the Pareto front, the choice).")] = Path(
        "artifacts/perf/tune.json"
    ),
) -> None:
    """Search instance count, queue delay, batch sizes and ONNX Runtime threads of a served model under a p99 budget.

    Every candidate is loaded through Triton's model-control API (no restart) and measured by
    perf_analyzer at each concurrency level with real test rows. The search moves one knob at a
    time from the model's current config, skips candidates that measured ones already dominate,
    and stops when the best stops improving; --brute-force measures them all. The chosen config
    is written as version N+1 of the model (the old version's files are left as they were).
    """
    from toolkit.perf.analyzer import find_perf_analyzer
    from toolkit.perf.tune import MeasureSettings, Objective, SearchSpace, tune
    from toolkit.repository.rows import checkpoint_test_rows
    from toolkit.serving import TritonServer, free_ports

    space = SearchSpace(
        instance_counts=_ints(instance_counts, "--instance-counts"),
        max_queue_delays_us=_ints(queue_delays_us, "--queue-delays-us"),
        batchings=_batchings(batching),
        intra_op_threads=_ints(intra_op_threads, "--intra-op-threads"),
        inter_op_threads=_ints(inter_op_threads, "--inter-op-threads"),
    )
    objective = Objective(p99_budget_ms=p99_budget_ms, throughput_floor=throughput_floor)
    settings = MeasureSettings(
        concurrency=_ints(concurrency, "--concurrency"), batch_size=batch_size, measurement_interval_ms=measurement_interval_ms
    )
    analyzer = find_perf_analyzer()
    encoded, _raw = checkpoint_test_rows(checkpoint, data_dir, rows)
    server = None
    if url is None:
        ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
        server = TritonServer(model_repository, extra_args=["--model-control-mode=explicit", f"--load-model={model}"], **ports)
        with console.status("starting Triton (explicit model control)"):
            server.start()
        url = server.grpc_url
    try:
        with tempfile.TemporaryDirectory(prefix="tritonrec-tune-") as tmp:
            console.print(f"{'brute force over' if brute_force else 'searching'} {len(space)} candidates of '{model}'")
            result = tune(
                model,
                repository=model_repository,
                url=url,
                rows=encoded,
                out_dir=Path(tmp),
                space=space,
                objective=objective,
                settings=settings,
                brute_force=brute_force,
                write=write,
                analyzer=analyzer,
                on_log=lambda m: console.print(f"  {m}", highlight=False),
            )
    finally:
        if server is not None:
            server.stop()
    console.print(_table(result))
    console.print(_pareto_table(result))
    report = result.to_dict() | {
        "command": shlex.join(["tritonrec", *sys.argv[1:]]),
        "perf_analyzer_version": analyzer.version(),
        "data": f"{rows} test rows of {data_dir}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, report)
    if result.chosen is None:
        console.print(f"[red]no candidate met the objective[/red] ({objective.to_dict()}); nothing written")
        console.print(f"report: {out}")
        raise typer.Exit(code=1)
    op = objective.operating_point(result.chosen)
    assert op is not None
    console.print(
        f"chosen: {result.chosen.candidate.key}: {op.throughput_infer_per_s:,.0f} infer/s, p99 {op.p99_latency_ms:.2f} ms "
        f"at concurrency {op.concurrency}; stopped: {result.trace.stop_reason or 'every candidate measured'}"
    )
    if result.version_dir is not None:
        console.print(f"wrote {result.version_dir} and {result.version_dir.parent / 'config.pbtxt'}")
    console.print(f"report: {out}")
