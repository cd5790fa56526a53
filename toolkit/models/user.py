"""A user's own model through the model protocol: ``--model-file my_model.py:build``.

The file is a self-contained Python file (it imports torch and the standard library, not
files next to it: its text travels in the model's config, see
:mod:`toolkit.models.user_model`) with a factory taking no arguments and returning
``(module, signature)``:

* ``module``: any ``nn.Module`` whose ``forward`` takes the inputs by name and returns the
  probability, float32 (B, 1);
* ``signature``: the inputs, ``{name: (dtype, shape)}`` (``shape`` with ``None`` first for the
  batch dimension B, e.g. ``("int64", (None, 3))``), ``{name: {"dtype", "shape", "high"}}``
  (``high``: integer inputs' ids lie in ``[0, high)``), or a list of
  :class:`~toolkit.tensors.TensorSpec`. The names must be the parameters of ``forward``; their
  order is the served order and may differ from forward's. Integer inputs without ``high``
  get the size of the module's smallest ``nn.Embedding``/``nn.EmbeddingBag`` (in range for every table).

The factory's weights are the model's (load them inside it, or return a fresh module). It is
registered as the ``user`` architecture, so export, build and the Python backend's torch
runner take it like any other.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.errors import ModelFileError
from toolkit.models.protocol import PROBABILITY_OUTPUT, Architecture, Signature, check_input_names
from toolkit.models.registry import register
from toolkit.models.user_model import ARCHITECTURE, UserModel, UserModelConfig, run_source
from toolkit.tensors import TensorSpec

__all__ = ["USER_ARCHITECTURE", "load_model_file", "parse_model_file_spec", "random_inputs", "signature_inputs", "user_model_config"]

_HINT = "--model-file takes PATH.py:FACTORY, a function of no arguments returning (module, {input name: (dtype, shape)})"


def parse_model_file_spec(spec: str) -> tuple[Path, str]:
    """``"path/my_model.py:build"`` -> ``(Path("path/my_model.py"), "build")``.

    Raises:
        ModelFileError: no ``:FACTORY`` part, a factory name that is not an identifier, or a path
            that is not an existing file (naming it).
    """
    path_text, sep, factory = str(spec).rpartition(":")
    if not sep or not path_text or not factory.isidentifier():
        raise ModelFileError(f"--model-file {spec!r}: expected PATH.py:FACTORY, e.g. my_model.py:build", hint=_HINT)
    path = Path(path_text)
    if not path.is_file():
        what = "is a folder, not a Python file" if path.is_dir() else "does not exist"
        raise ModelFileError(f"--model-file {spec!r}: {path} {what}", hint=_HINT)
    return path, factory


def _user_frame(exc: BaseException, filename: str) -> str:
    """``file:line in function: source line`` of the innermost traceback frame in the user's file."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno} in {f.name}: {(f.line or '').strip()}"


def _integer_high(module: nn.Module) -> int | None:
    sizes = [m.num_embeddings for m in module.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    return min(sizes) if sizes else None


def _parse_signature(signature: Any, module: nn.Module, where: str) -> list[dict]:
    """The factory's signature as :attr:`UserModelConfig.inputs` dicts (see the module docstring)."""
    if isinstance(signature, Mapping):
        items = list(signature.items())
    elif isinstance(signature, Sequence) and all(isinstance(s, TensorSpec) for s in signature):
        items = [(s.name, s) for s in signature]
    else:
        raise ModelFileError(
            f"{where} returned a signature of type {type(signature).__name__}, "
            "expected {input name: (dtype, shape)} or a list of TensorSpec",
            hint=_HINT,
        )
    if not items:
        raise ModelFileError(f"{where} returned an empty signature: name at least one input", hint=_HINT)
    inputs = []
    for name, spec in items:
        high = None
        if isinstance(spec, TensorSpec):
            dtype, shape = spec.dtype, spec.shape
        elif isinstance(spec, Mapping) and {"dtype", "shape"} <= set(spec) and set(spec) <= {"dtype", "shape", "high"}:
            dtype, shape, high = spec["dtype"], spec["shape"], spec.get("high")
        elif isinstance(spec, tuple | list) and len(spec) == 2:
            dtype, shape = spec
        else:
            raise ModelFileError(
                f"{where}: input {name!r} is {spec!r}, expected (dtype, shape) or {{'dtype', 'shape', 'high'}}", hint=_HINT
            )
        try:
            kind = np.dtype(dtype).kind
        except TypeError:
            kind = ""
        if kind not in "fiu" or not kind:
            raise ModelFileError(f"{where}: input {name!r} has dtype {dtype!r}, expected a float or integer numpy dtype name", hint=_HINT)
        shape = list(shape) if isinstance(shape, tuple | list) else None
        if not shape or shape[0] not in (None, -1) or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            raise ModelFileError(
                f"{where}: input {name!r} has shape {shape!r}, expected None (the batch dimension) then positive sizes, e.g. (None, 3)",
                hint=_HINT,
            )
        if kind in "iu":
            high = high if high is not None else _integer_high(module)
            if not isinstance(high, int) or high < 1:
                raise ModelFileError(
                    f"{where}: integer input {name!r} needs 'high' (ids lie in [0, high)) since the module has no embedding table",
                    hint=_HINT,
                )
        inputs.append({"name": str(name), "dtype": np.dtype(dtype).name, "shape": [None, *shape[1:]], **({"high": high} if high else {})})
    return inputs


def _signature(config: UserModelConfig) -> Signature:
    inputs = [TensorSpec(i["name"], i["dtype"], tuple(i["shape"])) for i in config.inputs]
    return inputs, [TensorSpec(PROBABILITY_OUTPUT, "float32", (None, 1))]


def _example_inputs(config: UserModelConfig, batch_size: int = 4, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random rows by input name: floats standard normal, integers uniform in ``[0, high)``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for spec in config.inputs:
        shape = (batch_size, *spec["shape"][1:])
        dtype = getattr(torch, spec["dtype"])
        if "high" in spec:
            out[spec["name"]] = torch.randint(0, spec["high"], shape, generator=g, dtype=dtype)
        else:
            out[spec["name"]] = torch.randn(shape, generator=g).to(dtype)
    return out


def signature_inputs(module: nn.Module, signature: Any, where: str = "signature") -> list[dict]:
    """A factory's ``signature`` (the forms the module docstring lists) as :attr:`UserModelConfig.inputs`
    dicts (``name``, ``dtype``, ``shape``, and ``high`` for integer inputs), for a module given from
    Python rather than a file; ``where`` names it in errors.

    Raises:
        ModelFileError: a malformed signature (naming the input and what was expected).
    """
    return _parse_signature(signature, module, where)


def random_inputs(inputs: Sequence[Mapping], batch_size: int = 4, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random rows of :func:`signature_inputs`' specs by input name (floats standard normal, integers in ``[0, high)``)."""
    return _example_inputs(SimpleNamespace(inputs=list(inputs)), batch_size, seed=seed)


def user_model_config(source_file: Path, factory: str, module: nn.Module, signature: Any) -> UserModelConfig:
    """The config of ``module`` made by ``factory`` in ``source_file`` with ``signature`` (checked).

    Raises:
        ModelFileError: the signature is malformed, its names are not forward's parameters, or the
            module does not return float (B, 1) on the signature's example inputs.
    """
    where = f"{source_file}:{factory}()"
    config = UserModelConfig(str(source_file), Path(source_file).read_text(), factory, _parse_signature(signature, module, where))
    names = [i["name"] for i in config.inputs]
    try:
        check_input_names(module, names)
    except TypeError as exc:
        raise ModelFileError(f"{where}: {exc}", hint=_HINT) from exc
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(**_example_inputs(config, 4))
    except Exception as exc:
        raise ModelFileError(
            f"{where}: the module's forward fails on example inputs of the signature{_user_frame(exc, str(source_file))}: "
            f"{type(exc).__name__}: {exc}",
            hint="check the signature's shapes and the integer inputs' 'high'",
        ) from exc
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (4, 1) or not out.is_floating_point():
        got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelFileError(f"{where}: forward must return one float tensor (B, 1), got {got} for B = 4", hint=_HINT)
    return config


def load_model_file(spec: str | Path, factory: str | None = None) -> nn.Module:
    """Run the user's model file and its factory; the module, with its :class:`UserModelConfig` as ``config``.

    Args:
        spec: ``"my_model.py:build"``, or the file's path when ``factory`` is given.
        factory: the factory's name (default: from ``spec``).

    Returns:
        The factory's ``nn.Module`` (the user's own class, in eval mode), whose ``config`` makes it
        the ``user`` architecture for every stage.

    Raises:
        ModelFileError: the file does not exist; running it or the factory raises (the message shows
            the innermost line of the user's file in the traceback, the error is chained); no such
            factory; its result is not ``(nn.Module, signature)`` or does not fit (see :func:`user_model_config`).
    """
    path, factory = (Path(spec), factory) if factory else parse_model_file_spec(str(spec))
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist", hint=_HINT)
    path = path.resolve()
    filename = str(path)
    try:
        source = path.read_text()
        module = run_source(source, filename)
    except Exception as exc:
        raise ModelFileError(f"running {path} failed{_user_frame(exc, filename)}: {type(exc).__name__}: {exc}", hint=_HINT) from exc
    fn = getattr(module, factory, None)
    if not callable(fn):
        defined = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__)
        raise ModelFileError(f"{path} defines no function {factory!r} (its functions: {defined})", hint=_HINT)
    where = f"{path}:{factory}()"
    try:
        result = fn()
    except Exception as exc:
        raise ModelFileError(f"{where} raised{_user_frame(exc, filename)}: {type(exc).__name__}: {exc}", hint=_HINT) from exc
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module)):
        raise ModelFileError(f"{where} returned {type(result).__name__}, expected (nn.Module, signature)", hint=_HINT)
    model, signature = result
    model.config = user_model_config(path, factory, model, signature)
    return model.eval()


def _embedding_tables(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)}


def _config_for(_sizes: Any, _options: Mapping[str, Any]) -> Any:
    raise ValueError("a user's model is built by its own factory (--model-file PATH.py:FACTORY), not from data sizes")


USER_ARCHITECTURE = register(
    Architecture(
        name=ARCHITECTURE,
        config_class=UserModelConfig,
        model_class=UserModel,  # a function: the module is the user's own class
        signature=_signature,
        example_inputs=_example_inputs,
        embedding_tables=_embedding_tables,
        prunable_blocks=lambda _model: {},
        cardinalities=lambda _config: [],
        config_for=_config_for,
        source_files=(Path(__file__).with_name("user_model.py"),),
    )
)
