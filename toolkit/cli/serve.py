"""``tritonrec serve``: run a Triton server on a model repository until Ctrl-C."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolkit.errors import ServingError

if TYPE_CHECKING:
    from toolkit.serving import ModelState

__all__ = ["serve"]

_STATE_STYLE = {"READY": "green", "UNAVAILABLE": "red"}


def _model_table(states: list[ModelState]) -> Table:
    from toolkit.serving import explain_load_failure

    table = Table(title="Models")
    for column in ("Model", "Version", "State", "Reason"):
        table.add_column(column, overflow="fold")
    for s in sorted(states, key=lambda s: (s.name, s.version)):
        state = s.state or "NOT LOADED"  # Triton gives no state to a model refused while its config is read
        style = _STATE_STYLE.get(s.state or "UNAVAILABLE", "yellow")
        reason = explain_load_failure(s.reason) if s.state != "READY" else ""
        table.add_row(s.name, s.version or "-", f"[{style}]{state}[/{style}]", escape(reason))
    return table


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(
    model_repository: Annotated[
        Path, typer.Argument(help="Triton model repository to serve: one folder per model with config.pbtxt and version folders.")
    ] = Path("model_repository"),
    host: Annotated[str, typer.Option(help="Address to listen on. Use 0.0.0.0 to accept connections from other machines.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="Port of the HTTP/REST endpoint (KServe v2 protocol).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="Port of the gRPC endpoint.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Port of the Prometheus metrics endpoint (/metrics).")] = 8002,
    log_file: Annotated[
        Path | None, typer.Option(help="Write the server's log here (default: a new temporary file, printed at start).")
    ] = None,
    startup_timeout_s: Annotated[float, typer.Option(help="Seconds to wait for the server and all its models to load.")] = 180.0,
    response_cache_mb: Annotated[
        int | None,
        typer.Option(help="Local response cache (MiB) for models with response_cache enabled; 0: none. [default: 256 when a model asks]"),
    ] = None,
    triton_arg: Annotated[
        list[str] | None,
        typer.Option("--triton-arg", help="Extra tritonserver flag, repeatable, e.g. --triton-arg=--log-verbose=1."),
    ] = None,
) -> None:
    """Serve a model repository on a real Triton Inference Server until Ctrl-C (or SIGTERM).

    Uses `tritonserver` from PATH (the stock container), else the server bundled in the nvidia-pytriton wheel (CPU, Python backend only).

    Prints every model with its state; models that fail to load are listed with the reason while the others keep serving.
    """
    from toolkit.serving import TritonServer

    console = Console()
    server = TritonServer(
        model_repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_path=log_file,
        startup_timeout_s=startup_timeout_s,
        extra_args=triton_arg or (),
        response_cache_bytes=None if response_cache_mb is None else response_cache_mb * 1024 * 1024,
    )
    on_main_thread = threading.current_thread() is threading.main_thread()
    # `docker stop` / Kubernetes send SIGTERM: stop like Ctrl-C. SIGINT is set explicitly too: a process started
    # in the background of a non-interactive shell (`tritonrec serve &`, CI scripts) inherits it ignored, and
    # Python then never raises KeyboardInterrupt for it.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)} if on_main_thread else {}
    try:
        with console.status(f"starting Triton on {model_repository} ..."):
            server.start()
        console.print(_model_table(server.model_states()))
        console.print(f"HTTP     {server.http_url}\ngRPC     {server.grpc_url}\nmetrics  {server.metrics_url}\nlog      {server.log_path}")
        console.print("Serving; press Ctrl-C to stop.")
        assert server.process is not None
        while (code := server.process.poll()) is None:
            time.sleep(0.5)
        raise ServingError(f"tritonserver exited unexpectedly with code {code}; last lines of {server.log_path}:\n{server.log_tail(30)}")
    except KeyboardInterrupt:
        console.print("stopping Triton ...")
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
