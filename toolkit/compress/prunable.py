"""Which ``nn.Linear`` layers of *any* module may lose output neurons, found from Torch-Pruning's dependency graph.

For a user's module there is no config field naming its MLP blocks (as the toolkit's own
architectures have, :mod:`toolkit.compress.prune`). Instead, Torch-Pruning's
:class:`torch_pruning.DependencyGraph` (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023) is traced on the module with its example inputs, and every ``nn.Linear``
is a root: its group lists everything that must shrink with its output neurons. A layer is
prunable when its group holds only what removing neurons from a hidden layer touches (the
next ``nn.Linear``'s input columns, parameterless element-wise, concatenation or reshape
operations) and a trial cut of one neuron in a copy still runs with the same output shape.
It is kept intact, with the reason, when its group reaches

* the model's output (the output layer: its width is the served output's);
* an embedding table or another parameter that is not an ``nn.Linear`` (a layer whose width is
  shared with the embeddings by an interaction that needs equal widths, such as DLRM's or a
  user's pairwise dot products: cutting it would cut the tables' columns too);

so none of these is chosen by name.

Limits: the graph is searched from every ``nn.Linear`` with nothing ignored, which on the
toolkit's DLRM (its ``bmm`` + ``index_select`` interaction, which Torch-Pruning 1.6 maps as
element-wise) does not finish in minutes; the toolkit's own architectures name their blocks
instead (:mod:`toolkit.compress.prune`). Measured on the fixture
``tests/fixtures/models/user_bag_model.py`` only.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from toolkit.compress.errors import StepRefused
from toolkit.errors import CompressError

__all__ = ["PrunableLinears", "find_prunable_linears", "prune_linears", "require_linear_layers"]


@dataclass(frozen=True)
class PrunableLinears:
    """What :func:`find_prunable_linears` found.

    Attributes:
        prunable: qualified names of the ``nn.Linear`` layers whose output neurons may be removed.
        kept: ``{qualified name: why it keeps its width}`` for every other ``nn.Linear``.
    """

    prunable: list[str]
    kept: dict[str, str] = field(default_factory=dict)


def require_linear_layers(model: nn.Module) -> None:
    """Refuse a module without ``nn.Linear`` layers, naming what it has instead.

    Raises:
        StepRefused: ``model`` holds no ``nn.Linear`` (a :class:`~toolkit.errors.CompressError`).
    """
    if any(isinstance(m, nn.Linear) for m in model.modules()):
        return
    kinds = sorted({type(m).__name__ for m in model.modules() if m is not model and not list(m.children())})
    raise StepRefused(
        "prune",
        f"prune: {type(model).__name__} has no nn.Linear layers (it has {', '.join(kinds) or 'no layers'}); "
        "structured pruning removes output neurons of nn.Linear layers, so there is nothing to prune",
        hint="leave prune out of the recipe; int8_embeddings and the ONNX steps still apply",
    )


def _output_shape(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(model(**inputs).shape)


def find_prunable_linears(model: nn.Module, example_inputs: Mapping[str, torch.Tensor]) -> PrunableLinears:
    """The ``nn.Linear`` layers of ``model`` that structured pruning may narrow (see the module docstring).

    Args:
        model: any ``nn.Module`` whose ``forward`` takes ``example_inputs`` by name; it is not changed.
        example_inputs: ``{forward parameter: tensor}`` with at least 2 rows (the trace and the trial cut run on them).

    Raises:
        StepRefused: ``model`` has no ``nn.Linear`` (:func:`require_linear_layers`), or
            Torch-Pruning cannot trace it (its error chained).
    """
    import torch_pruning as tp  # heavy import, only needed here

    require_linear_layers(model)
    names = {m: n for n, m in model.named_modules()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owners = {id(p): n for n, m in model.named_modules() for p in m.parameters(recurse=False)}
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():  # it warns that it guesses the dimension of loose parameters: they are never pruned here
            warnings.simplefilter("ignore", UserWarning)
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=dict(example_inputs))
        expected = _output_shape(model, example_inputs)
        prunable, kept = [], {}
        for group in graph.get_all_groups(root_module_types=[nn.Linear]):
            root = group[0].dep.target.module
            if root not in names:
                continue
            name = names[root]
            why = _why_kept(group, root, names, owners)
            if why is None and root.out_features < 2:
                why = "has a single output neuron"
            if why is None:
                why = _trial_cut(tp, model, name, example_inputs, expected)
            if why is None:
                prunable.append(name)
            else:
                kept[name] = why
        for layer in linears:  # layers Torch-Pruning forms no group for are coupled to something it cannot map
            if names[layer] not in kept and names[layer] not in prunable:
                kept[names[layer]] = "Torch-Pruning forms no pruning group of its own for it"
    except CompressError:
        raise
    except Exception as exc:  # Torch-Pruning's tracer fails in many ways on unusual modules
        raise StepRefused("prune", f"prune: Torch-Pruning cannot trace {type(model).__name__}: {type(exc).__name__}: {exc}") from exc
    finally:
        model.train(was_training)
    order = {names[m]: i for i, m in enumerate(linears)}
    return PrunableLinears(sorted(prunable, key=order.get), dict(sorted(kept.items(), key=lambda kv: order[kv[0]])))


def _why_kept(group, root: nn.Module, names: dict[nn.Module, str], owners: dict[int, str]) -> str | None:
    """Why the group of ``root`` must not be cut, from what it reaches; None when it reaches only hidden-layer things.
    ``owners``: {id(parameter): the qualified name of the module holding it}."""
    tables, others = [], []
    for item in group:
        target = item.dep.target.module
        if target is root:
            continue
        kind = type(target).__name__
        if kind == "_OutputOp":
            return "its neurons are the model's output (the output layer)"
        if isinstance(target, nn.Embedding | nn.EmbeddingBag):
            tables.append(names.get(target, kind))
        elif isinstance(target, nn.Parameter):
            tables.append(owners.get(id(target), "a parameter outside any layer"))
        elif isinstance(target, nn.Module) and not isinstance(target, nn.Linear) and any(True for _ in target.parameters(recurse=False)):
            others.append(f"{names.get(target, kind)} ({kind})")
    if tables:
        return (
            f"its width is shared with {', '.join(sorted(set(tables)))} (an interaction that needs equal widths): "
            "cutting it would cut the tables' columns"
        )
    if others:
        return f"cutting it would also cut {', '.join(others)}, which is not an nn.Linear"
    return None


def _trial_cut(tp, model: nn.Module, name: str, inputs: Mapping[str, torch.Tensor], expected: tuple[int, ...]) -> str | None:
    """Cut one neuron of ``name`` in a copy; why not, when the copy fails or changes the output's shape."""
    trial = copy.deepcopy(model)
    layer = dict(trial.named_modules())[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        graph = tp.DependencyGraph().build_dependency(trial, example_inputs=dict(inputs))
    group = graph.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=[0])
    if not graph.check_pruning_group(group):
        return "Torch-Pruning refuses to cut it"
    group.prune()
    try:
        got = _output_shape(trial, inputs)
    except Exception as exc:  # a shape the graph does not see (a reshape, an interaction) breaks the forward
        return f"a model with one neuron fewer there fails to run ({type(exc).__name__})"
    return None if got == expected else f"a model with one neuron fewer there returns shape {got} instead of {expected}"


def prune_linears(model: nn.Module, example_inputs: Mapping[str, torch.Tensor], ratio: float) -> nn.Module:
    """A copy of ``model`` whose prunable ``nn.Linear`` layers (:func:`find_prunable_linears`) each keep
    ``round((1 - ratio) * width)`` (at least 1) of their output neurons, the largest by Torch-Pruning's
    :class:`~torch_pruning.importance.MagnitudeImportance` (p=2, over the layer's whole group). No
    fine-tuning: a user's model comes with no rows of its own here.

    A user's model (``config.linear_widths``, :class:`toolkit.models.user_model.UserModelConfig`) is
    rebuilt from its config with the new widths, so checkpoints, export and the Python backend's torch
    runner build the pruned shape; the rebuilt copy is checked to answer exactly what the pruned one does.

    Raises:
        CompressError: ``ratio`` outside (0, 1); nothing prunable (:class:`StepRefused`, naming why each layer is kept); the
            rebuilt model disagrees with the pruned one.
    """
    import dataclasses

    import torch_pruning as tp

    from toolkit.models.registry import architecture_of

    if not 0 < ratio < 1:
        raise CompressError(f"prune: ratio={ratio}, expected a number in (0, 1)")
    found = find_prunable_linears(model, example_inputs)
    if not found.prunable:
        kept = "; ".join(f"{k}: {v}" for k, v in found.kept.items())
        raise StepRefused("prune", f"prune: no nn.Linear of {type(model).__name__} may lose neurons ({kept})")
    pruned = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=dict(example_inputs))
    modules = dict(pruned.named_modules())
    importance = tp.importance.MagnitudeImportance(p=2)
    for name in found.prunable:
        layer = modules[name]
        width = layer.out_features
        keep = max(1, int((1.0 - ratio) * width + 0.5))
        scores = importance(graph.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=list(range(width))))
        order = sorted(range(width), key=lambda i: (-float(scores[i]), i))
        drop = sorted(order[keep:])
        if drop:
            graph.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=drop).prune()
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "linear_widths"):
        return pruned
    original = dict(model.named_modules())
    widths = {
        n: [m.in_features, m.out_features]
        for n, m in pruned.named_modules()
        if isinstance(m, nn.Linear) and (m.in_features, m.out_features) != (original[n].in_features, original[n].out_features)
    }
    new_config = dataclasses.replace(config, linear_widths={**config.linear_widths, **widths})
    with torch.random.fork_rng(devices=[]):
        rebuilt = architecture_of(new_config).build(new_config)
    rebuilt.load_state_dict(pruned.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        if not torch.equal(rebuilt(**example_inputs), pruned(**example_inputs)):
            raise CompressError(f"prune: {type(model).__name__} rebuilt from its config answers differently from the pruned copy")
    return rebuilt
