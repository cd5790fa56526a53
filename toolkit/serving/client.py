"""Send inference requests to a Triton model over HTTP or gRPC, with inputs checked first.

:func:`prepare_inputs` checks names, dtypes and shapes against the model's metadata on the
client side (pure numpy, no server), so that a malformed request fails with a message that
names the tensor and what was expected rather than with the server's generic error.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

from toolkit.errors import InferenceError, ServingError
from toolkit.tensors import TensorSpec

__all__ = ["InferenceClient", "LatencyStats", "prepare_inputs", "measure_latency", "model_metadata", "request_tensors"]

_UNREACHABLE = (OSError, http.client.HTTPException)


def _format_shape(spec: TensorSpec, max_batch_size: int) -> str:
    dims = ["B" if (i == 0 and d is None and max_batch_size > 0) else ("?" if d is None else str(d)) for i, d in enumerate(spec.shape)]
    bound = f" (B <= {max_batch_size})" if max_batch_size > 0 else ""
    return f"[{', '.join(dims)}]{bound}"


def _convert_dtype(name: str, array: np.ndarray, target: np.dtype) -> np.ndarray:
    if array.dtype == target:
        return array
    if target.kind == "O":  # Triton BYTES
        if array.dtype.kind in "OSU":
            return array.astype(object)
        if array.dtype.kind in "iu":  # integer ids: their decimal strings, exact for any width
            strings = np.empty(array.shape, dtype=object)
            strings.reshape(-1)[:] = [str(v).encode() for v in array.reshape(-1).tolist()]
            return strings
    elif np.can_cast(array.dtype, target, casting="safe"):
        return array.astype(target)
    elif array.dtype.kind in "iub" and target.kind in "iu":
        info = np.iinfo(target)
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if lo < info.min or hi > info.max:
            raise InferenceError(
                f"input '{name}': {array.dtype} values in [{lo}, {hi}] do not fit the model's {target} (range [{info.min}, {info.max}])",
                hint=f"the ids exceed what the model accepts; check the vocabulary sizes of '{name}'",
            )
        return array.astype(target)
    raise InferenceError(
        f"input '{name}': expected {target}, got {array.dtype}, which does not convert to {target} without loss",
        hint=f"convert it yourself if the loss is intended, e.g. `x.astype(np.{target})`",
    )


def prepare_inputs(inputs: Mapping[str, Any], input_specs: Sequence[TensorSpec], max_batch_size: int) -> dict[str, np.ndarray]:
    """Check a request against the model's inputs and convert dtypes where that loses nothing.

    Args:
        inputs: tensor name -> array (anything ``np.asarray`` accepts).
        input_specs: the model's inputs; ``shape`` includes the batch dimension as ``None``
            when ``max_batch_size > 0``.
        max_batch_size: the model's ``max_batch_size`` (0: the model does not batch and the
            first dimension is an ordinary one).

    Returns:
        name -> array with exactly the spec's dtype, in the specs' order. Integers are widened
        (int32 -> int64) or narrowed (int64 -> int32) when every value fits; other conversions
        follow numpy's "safe" casting rules (float32 -> float64 yes, float64 -> float32 no).
        A BYTES input (Triton ``TYPE_STRING``, e.g. an ensemble's raw ``user_id``) takes
        ``bytes``/``str`` arrays as they are and integer arrays as their decimal strings
        (``196`` -> ``b"196"``, exact for any integer width).

    Raises:
        InferenceError: an expected input is missing or an unknown one given (lists the
            expected names); a value does not fit a narrower integer dtype (names the tensor,
            both dtypes and the offending range); a lossy dtype conversion (names both dtypes);
            a shape mismatch, e.g. ``input 'sparse_ids': expected shape [B, 7] (B <= 256), got (3, 5)``;
            inputs with different batch sizes.
    """
    expected = [s.name for s in input_specs]
    missing = [n for n in expected if n not in inputs]
    unknown = sorted(n for n in inputs if n not in expected)
    if missing or unknown:
        problems = "; ".join(p for p in (f"missing {missing}" if missing else "", f"unknown {unknown}" if unknown else "") if p)
        raise InferenceError(
            f"request inputs do not match the model: {problems}; expected {', '.join(s.describe() for s in input_specs)}",
            hint="pass exactly one array per model input, keyed by the input's name",
        )
    prepared: dict[str, np.ndarray] = {}
    for spec in input_specs:
        array = _convert_dtype(spec.name, np.asarray(inputs[spec.name]), spec.numpy_dtype)
        batched = max_batch_size > 0
        fits = array.ndim == len(spec.shape) and all(d is None or d == a for d, a in zip(spec.shape, array.shape, strict=True))
        if not fits or (batched and array.shape[0] > max_batch_size):
            raise InferenceError(
                f"input '{spec.name}': expected shape {_format_shape(spec, max_batch_size)}, got {tuple(array.shape)}",
                hint="split large batches with infer_batched()" if fits else None,
            )
        prepared[spec.name] = array
    if max_batch_size > 0:
        batches = {name: a.shape[0] for name, a in prepared.items()}
        if len(set(batches.values())) > 1:
            raise InferenceError(f"inputs have different batch sizes {batches}; every input needs the same number of rows")
    return prepared


def _spec(meta: Mapping[str, Any], max_batch_size: int) -> TensorSpec:
    dims = [int(d) for d in meta["shape"]]  # gRPC's JSON gives int64 as strings
    shape = tuple(None if d < 0 else d for d in dims)
    if max_batch_size > 0:
        shape = (None, *shape[1:])
    return TensorSpec(meta["name"], np.dtype(triton_to_np_dtype(meta["datatype"])).name, shape)


def model_metadata(
    client: Any, url: str, protocol: Literal["http", "grpc"], model_name: str, model_version: str = ""
) -> tuple[int, list[TensorSpec], list[TensorSpec]]:
    """Read a model's ``max_batch_size``, inputs and outputs through a tritonclient client.

    Args:
        client: a ``tritonclient.http`` or ``tritonclient.grpc`` ``InferenceServerClient`` (``protocol`` says which).
        url: the server's address, for messages.

    Returns:
        ``(max_batch_size, input_specs, output_specs)``; the specs' batch dimension is ``None`` when it batches.

    Raises:
        ServingError: the server is not live or unreachable, or the model is unknown or not ready
            (names the URL and the model).
    """
    what = f"model '{model_name}'" + (f" version {model_version}" if model_version else "")
    try:
        if not client.is_server_live():
            raise ServingError(f"the Triton server at {url} ({protocol}) is not live")
        if protocol == "http":
            metadata = client.get_model_metadata(model_name, model_version)
            config = client.get_model_config(model_name, model_version)
        else:
            metadata = client.get_model_metadata(model_name, model_version, as_json=True)
            config = client.get_model_config(model_name, model_version, as_json=True)["config"]
    except (InferenceServerException, *_UNREACHABLE) as e:
        raise ServingError(
            f"cannot read {what} from the Triton server at {url} ({protocol}): {e}",
            hint="check that the server runs, that the port matches the protocol, and the model name (see `tritonrec serve`'s model table)",
        ) from e
    max_batch_size = int(config.get("max_batch_size", 0))
    inputs = [_spec(m, max_batch_size) for m in metadata.get("inputs", [])]
    outputs = [_spec(m, max_batch_size) for m in metadata.get("outputs", [])]
    return max_batch_size, inputs, outputs


def request_tensors(module: Any, prepared: Mapping[str, np.ndarray], output_specs: Sequence[TensorSpec]) -> tuple[list[Any], list[Any]]:
    """tritonclient ``InferInput``s holding ``prepared`` (from :func:`prepare_inputs`) and the ``InferRequestedOutput``s.

    Args:
        module: ``tritonclient.http`` or ``tritonclient.grpc``.
    """
    request = []
    for name, array in prepared.items():
        tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(np.ascontiguousarray(array))
        request.append(tensor)
    return request, [module.InferRequestedOutput(s.name) for s in output_specs]


class InferenceClient:
    """A client bound to one model on a Triton server, reading its inputs and outputs once.

    Args:
        url: ``host:port`` of the server's HTTP or gRPC endpoint (a leading ``http://`` is dropped).
        protocol: ``"http"`` or ``"grpc"``; must match the port.
        model_name: the model to call.
        model_version: version to call; ``""`` lets the server choose (its version policy).

    Attributes:
        input_specs, output_specs: the model's tensors (batch dimension ``None`` when it batches).
        max_batch_size: the model's ``max_batch_size`` (0: no batch dimension).

    Raises:
        ServingError: the server is unreachable, or the model is unknown or not ready
            (names the URL and the model).
    """

    def __init__(self, url: str, *, protocol: Literal["http", "grpc"], model_name: str, model_version: str = "") -> None:
        if protocol not in ("http", "grpc"):
            raise ServingError(f"unknown protocol {protocol!r} for {url}", hint="use 'http' or 'grpc'")
        self.url = url.split("://", 1)[-1]
        self.protocol = protocol
        self.model_name = model_name
        self.model_version = model_version
        self._module: Any = httpclient if protocol == "http" else grpcclient
        self._client: Any = self._module.InferenceServerClient(self.url)
        try:
            self.max_batch_size, self.input_specs, self.output_specs = model_metadata(
                self._client, self.url, protocol, model_name, model_version
            )
        except BaseException:
            self.close()
            raise

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run one request.

        Args:
            inputs: input name -> array; checked and converted by :func:`prepare_inputs`.

        Returns:
            output name -> array, for every output of the model.

        Raises:
            InferenceError: the request does not match the model (see :func:`prepare_inputs`),
                or the server rejected it (the server's message; tritonclient's error as ``__cause__``).
            ServingError: the server cannot be reached.
        """
        prepared = prepare_inputs(inputs, self.input_specs, self.max_batch_size)
        request, outputs = request_tensors(self._module, prepared, self.output_specs)
        try:
            result = self._client.infer(self.model_name, request, model_version=self.model_version, outputs=outputs)
        except InferenceServerException as e:
            raise InferenceError(f"model '{self.model_name}' at {self.url} rejected the request: {e.message()}") from e
        except _UNREACHABLE as e:
            raise ServingError(f"lost the Triton server at {self.url} ({self.protocol}) while calling '{self.model_name}': {e}") from e
        return {s.name: result.as_numpy(s.name) for s in self.output_specs}

    def infer_batched(
        self, inputs: Mapping[str, Any], batch_size: int, progress: Callable[[int], None] | None = None
    ) -> dict[str, np.ndarray]:
        """Run ``inputs`` in chunks of at most ``min(batch_size, max_batch_size)`` rows; concatenate the outputs.

        Args:
            inputs: input name -> array, all with the same number of rows N along axis 0.
            batch_size: rows per request (>= 1).
            progress: called after each request with the number of rows it completed
                (suits ``rich.progress.Progress.advance``).

        Returns:
            output name -> array with N rows. A model with ``max_batch_size == 0`` gets one request.

        Raises:
            InferenceError: ``batch_size < 1``, inputs with different row counts, or any error of :meth:`infer`.
        """
        if batch_size < 1:
            raise InferenceError(f"batch_size must be >= 1, got {batch_size}")
        if self.max_batch_size == 0:
            result = self.infer(inputs)
            if progress is not None:
                progress(len(next(iter(inputs.values()))) if inputs else 0)
            return result
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        rows = {k: a.shape[0] if a.ndim else 0 for k, a in arrays.items()}
        if len(set(rows.values())) > 1:
            raise InferenceError(f"inputs have different numbers of rows {rows}; every input needs the same number of rows")
        n = next(iter(rows.values()), 0)
        step = min(batch_size, self.max_batch_size)
        chunks: list[dict[str, np.ndarray]] = []
        for start in range(0, n, step):
            chunks.append(self.infer({k: a[start : start + step] for k, a in arrays.items()}))
            if progress is not None:
                progress(min(step, n - start))
        if not chunks:
            raise InferenceError("inputs have no rows; nothing to infer")
        return {s.name: np.concatenate([c[s.name] for c in chunks], axis=0) for s in self.output_specs}

    def close(self) -> None:
        """Close the connection (also done by ``with InferenceClient(...)``)."""
        self._client.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass(frozen=True)
class LatencyStats:
    """Client-side latency of single-row requests, in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    n_requests: int


def measure_latency(client: InferenceClient, inputs: Mapping[str, Any], n_requests: int = 1000, warmup_requests: int = 10) -> LatencyStats:
    """Send ``n_requests`` sequential single-row requests and report their latency percentiles.

    Request ``i`` carries row ``i % N`` of ``inputs`` (N rows); each is timed end to end
    (``time.perf_counter``, input checks and (de)serialization included). A model with
    ``max_batch_size == 0`` gets the whole ``inputs`` each time. ``warmup_requests`` untimed
    requests go first.

    Raises:
        InferenceError: ``n_requests < 1``, empty inputs, or any error of :meth:`InferenceClient.infer`.
    """
    if n_requests < 1:
        raise InferenceError(f"n_requests must be >= 1, got {n_requests}")
    arrays = {k: np.asarray(v) for k, v in inputs.items()}
    n = min((a.shape[0] for a in arrays.values() if a.ndim), default=0)
    if client.max_batch_size > 0 and n == 0:
        raise InferenceError("inputs have no rows to send")
    requests = [
        {k: a[i % n : i % n + 1] for k, a in arrays.items()} if client.max_batch_size > 0 else arrays
        for i in range(min(n_requests, n) if client.max_batch_size > 0 else 1)
    ]
    for i in range(warmup_requests):
        client.infer(requests[i % len(requests)])
    times_ms = np.empty(n_requests)
    for i in range(n_requests):
        t0 = time.perf_counter()
        client.infer(requests[i % len(requests)])
        times_ms[i] = (time.perf_counter() - t0) * 1e3
    p50, p90, p99 = np.percentile(times_ms, [50, 90, 99])
    return LatencyStats(float(p50), float(p90), float(p99), float(times_ms.mean()), n_requests)
