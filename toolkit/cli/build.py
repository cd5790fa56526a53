"""``tritonrec build``: write a Triton model repository with every serving variant."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from toolkit.cli._common import DEFAULT_CHECKPOINT, DEFAULT_ONNX, DEFAULT_REPOSITORY, CheckpointDir, OnnxPath, RepositoryDir, console
from toolkit.repository import VARIANTS, BatchingOptions, build_repository


def build(
    checkpoint: CheckpointDir = DEFAULT_CHECKPOINT,
    onnx: OnnxPath = DEFAULT_ONNX,
    repository: RepositoryDir = DEFAULT_REPOSITORY,
    model_name: Annotated[str, typer.Option(help="Prefix of the model folders: <model-name>_<variant>.")] = "dlrm",
    variant: Annotated[list[str] | None, typer.Option(help=f"Variants to build (repeatable): {', '.join(VARIANTS)}. Default: all.")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size; 0 turns batching off.")] = 256,
    dynamic_batching: Annotated[bool, typer.Option(help="Let Triton's dynamic batcher merge concurrent requests.")] = True,
    max_queue_delay_us: Annotated[int, typer.Option(help="dynamic_batching.max_queue_delay_microseconds.")] = 100,
    instance_count: Annotated[int, typer.Option(help="instance_group count (model instances per server).")] = 1,
) -> None:
    """Build the Triton model repository: PyTorch baseline, ONNX (onnxruntime_onnx) and ONNX-in-Python-backend.

    Every config.pbtxt is generated from Triton's protobuf schema, parsed back and
    checked against the model's tensors before anything is written; the models are
    staged and swapped in atomically, so a failed build leaves the repository as it was.
    """
    options = BatchingOptions(
        max_batch_size=max_batch_size,
        dynamic_batching=dynamic_batching,
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
    )
    built = build_repository(
        repository, checkpoint=checkpoint, onnx_model=onnx, model_name=model_name, options=options, variants=variant or VARIANTS
    )
    table = Table(title=f"Triton model repository {repository}")
    for column in ("model", "runtime", "path"):
        table.add_column(column)
    for b in built:
        table.add_row(b.name, b.runtime, str(b.path))
    console.print(table)
