"""Structured pruning of a registered architecture's MLP blocks: whole hidden neurons are removed, so layers shrink.

Which blocks: the architecture's ``prunable_blocks`` (:class:`toolkit.models.protocol.Architecture`):
the DLRM's ``bottom_mlp`` and ``top_mlp``, DCN-v2's and DeepFM's ``deep_mlp``. Each block is
named after the config field that lists its hidden widths, and its first ``len(config.<block>)``
``nn.Linear`` layers are the hidden ones; every other ``nn.Linear`` of the model (a block's
output layer, the cross layers, the output layer) keeps its width. The DLRM is the case the
notes below describe.

The pruning graph comes from Torch-Pruning (Fang et al., "DepGraph: Towards Any Structural
Pruning", CVPR 2023): its :class:`torch_pruning.DependencyGraph` is traced on the full
DLRM, and each hidden ``nn.Linear`` yields one pruning group (its output rows, the ReLU
after it and the matching input columns of the next ``nn.Linear``). Neurons are ranked
with Torch-Pruning's importance estimators:

* ``magnitude``: :class:`torch_pruning.importance.MagnitudeImportance` with ``p=2``, the
  squared L2 norm of each neuron's weights in every layer of its group (averaged over the
  group's layers, then divided by the group's mean so that layers are comparable);
* ``taylor``: :class:`torch_pruning.importance.TaylorImportance`, the first-order Taylor
  estimate ``sum |w * dL/dw|`` of the loss change when a neuron is removed (Molchanov et
  al., "Importance Estimation for Neural Network Pruning", CVPR 2019), with the gradient
  of the training loss (binary cross-entropy on logits) accumulated over a few batches.

How Torch-Pruning sees this model: it traces the ModuleList of embeddings, the masked
sums, ``torch.bmm``, ``index_select`` and ``cat`` without error, but treats ``bmm``,
``stack`` and ``index_select`` as element-wise operations. Pruning the bottom MLP's last
``nn.Linear`` would therefore also cut the embedding tables' columns and the wrong input
columns of the top MLP (the number of pairwise interactions does not depend on E). That
layer (width E, shared with the embeddings by the dot interaction) and the top MLP's last
layer (width 1) are passed as ``ignored_layers``; the embeddings are never pruned, and the
top MLP's input width stays what the interaction fixes. Only hidden layers shrink, which
:func:`prune` checks on the rebuilt model.

The selection of neurons is done here rather than by ``tp.pruner.MetaPruner``, on the same
groups and importance scores, for exact and safe widths: ``MetaPruner`` keeps
``int((1 - ratio) * width)`` neurons (a floor, which floating-point error can push one
lower), and its global threshold ``importance <= threshold`` can remove more than asked on
ties or empty a layer entirely.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from toolkit.compress.prunable import require_linear_layers
from toolkit.compress.recipe import PruneConfig
from toolkit.data.features import EncodedRows
from toolkit.errors import CompressError, TrainError
from toolkit.models.registry import architecture_of
from toolkit.train.loop import EpochStats, train_epochs

__all__ = ["prune", "hidden_widths", "kept_width"]

Log = Callable[[str], None] | None


def kept_width(width: int, ratio: float) -> int:
    """Neurons a layer of ``width`` keeps when ``ratio`` of them are removed: ``(1 - ratio) * width``
    rounded half up (``kept_width(10, 0.3) == 7``, ``kept_width(5, 0.5) == 3``). May be 0."""
    return max(0, math.floor((1.0 - ratio) * width + 0.5))


def hidden_widths(model: nn.Module) -> tuple[list[int], ...]:
    """The hidden widths of each prunable block, in the architecture's order, read off the model's
    ``nn.Linear`` layers (``out_features``) whatever its config says: ``(bottom, top)`` for a DLRM,
    ``(deep,)`` for DCN-v2 and DeepFM.

    Raises:
        CompressError: ``model`` is not a registered architecture's, or a block has no config field of its name.
    """
    return tuple([lin.out_features for lin in layers] for layers in _hidden_by_block(model).values())


def prune(
    model: nn.Module,
    config: PruneConfig,
    train: EncodedRows,
    val: EncodedRows,
    *,
    seed: int = 42,
    batch_size: int = 256,
    taylor_batches: int = 8,
    on_log: Log = None,
) -> nn.Module:
    """Remove ``config.ratio`` of the hidden neurons of ``model``'s MLP blocks (the DLRM's two MLPs,
    DCN-v2's or DeepFM's deep network), in ``config.iterations`` steps.

    Step k of K (k = 1..K) prunes to the ratio ``r_k = config.ratio * k / K`` of the
    *original* widths, then fine-tunes for ``config.finetune_epochs`` epochs on ``train``
    (Adam at ``config.learning_rate``, binary cross-entropy on logits, shuffled batches of
    ``batch_size`` rows) and keeps the weights with the best validation AUC among the
    pruned-but-not-yet-fine-tuned model and each fine-tuning epoch. Magnitude or Taylor
    importance is recomputed before each step (see the module docstring).

    Scope (``config.scope``):

    * ``per_layer``: every hidden layer of width w keeps :func:`kept_width` ``(w, r_k)``
      neurons, its own most important ones.
    * ``global``: the hidden layers together keep ``kept_width(total, r_k)`` neurons,
      ranked across layers by the (group-mean-normalized) importance; every layer keeps at
      least its most important neuron, so no layer is emptied.

    The bottom MLP's output layer (width E, shared with the embeddings by the dot
    interaction), the top MLP's output layer (width 1), the top MLP's input width and the
    embedding tables are never pruned (float32 tables are fine-tuned with the MLPs; int8
    row-wise tables are buffers and stay as they are). ``model`` itself is left untouched.
    A hidden layer that Torch-Pruning couples to layers which must keep their width (parallel
    DCN-v2's last deep layer, concatenated with the cross network's output) is kept intact,
    found from the dependency graph rather than by name, and logged.

    Args:
        model: a trained model of a registered architecture (float32, CPU; a DLRM, DCN-v2 or DeepFM),
            possibly pruned before.
        config: ratio in (0, 1), importance, scope, iterations, fine-tuning epochs and
            learning rate (validated by :class:`~toolkit.compress.recipe.PruneConfig`).
        train: rows for fine-tuning and for Taylor gradients; their widths must match the
            model (dense (N, D) float32, sparse (N, S) int64, multi-hot (N, sum L) int64,
            labels (N,) float32 in {0, 1}).
        val: rows for choosing the best fine-tuning epoch (needs both labels).
        seed: seeds the batch order and dropout (torch's global generator is left as it was).
        batch_size: rows per fine-tuning step and per Taylor batch.
        taylor_batches: training batches whose loss gradients are accumulated (summed)
            before each Taylor step.
        on_log: called with one line per pruning step and fine-tuning epoch.

    Returns:
        A new model of the same architecture in eval mode whose config holds the pruned hidden widths (so
        :func:`~toolkit.train.save_checkpoint` and ONNX export work unchanged), with the
        surviving (fine-tuned) weights. Its outputs are checked to equal the pruned module's.

    Raises:
        CompressError: ``model`` has no ``nn.Linear`` at all (said so), is not a registered architecture's or
            has no hidden layer; a layer would keep 0
            neurons (names the layer, its width and the largest ratio that keeps one); the
            global budget is smaller than the number of hidden layers; the splits are empty,
            of the wrong widths or (``val``) single-class; ``batch_size``/``taylor_batches``
            below 1; fine-tuning produced NaN/Inf outputs; the rebuilt model disagrees with
            the pruned one.
    """
    import torch_pruning as tp  # heavy import, only needed here

    require_linear_layers(model)
    hidden0 = _hidden_by_block(model)
    for name, value in (("batch_size", batch_size), ("taylor_batches", taylor_batches)):
        if value < 1:
            raise CompressError(f"prune: {name}={value}, expected an integer >= 1")
    _check_rows(model, train, "train")
    _check_rows(model, val, "val")
    _check_labels(val, "val")
    log = on_log or (lambda _msg: None)

    names = [f"{block} hidden layer {i + 1}" for block, layers in hidden0.items() for i in range(len(layers))]
    widths0 = [lin.out_features for layers in hidden0.values() for lin in layers]
    if not widths0:
        empty = " and ".join(f"{block}=[]" for block in hidden0)
        raise CompressError(f"prune: the model has no hidden MLP layer ({empty}); nothing to prune")
    _check_final_widths(config, names, widths0)

    pruned = copy.deepcopy(model)
    xs, y = _tensors(train), torch.from_numpy(np.ascontiguousarray(train.labels, dtype=np.float32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(1, config.iterations + 1):
            ratio = config.ratio * step / config.iterations
            if config.importance == "taylor":
                _accumulate_gradients(pruned, xs, y, batch_size=batch_size, n_batches=taylor_batches)
                importance = tp.importance.TaylorImportance()
            else:
                importance = tp.importance.MagnitudeImportance(p=2)
            before = hidden_widths(pruned)
            fixed = _prune_step(tp, pruned, importance, config.scope, ratio, widths0)
            if step == 1 and fixed:
                log(f"prune: kept intact (coupled to layers that must keep their width): {', '.join(names[i] for i in fixed)}")
            pruned.zero_grad(set_to_none=True)
            after = hidden_widths(pruned)
            changes = ", ".join(f"{block} {b} -> {a}" for block, b, a in zip(hidden0, before, after, strict=True))
            log(f"prune step {step}/{config.iterations} ({config.importance}, {config.scope}, ratio {ratio:.3g}): {changes}")
            _finetune(pruned, xs, y, val, config, batch_size=batch_size, log=log, step=step)
    return _rebuild(model, pruned, val)


# --- checks ------------------------------------------------------------------------------


def _check_rows(model: nn.Module, rows: EncodedRows, split: str) -> None:
    """Refuse empty splits and splits whose input widths do not fit ``model``'s config."""
    if len(rows) == 0:
        raise CompressError(f"the {split} split is empty; expected at least one row")
    cfg = model.config
    expected = {
        "dense_features": cfg.num_dense,
        "sparse_ids": len(cfg.sparse_cardinalities),
        "multi_hot_ids": sum(cfg.multi_hot_lengths),
    }
    for name, width in expected.items():
        got = getattr(rows, name).shape[1]
        if got != width:
            raise CompressError(f"{split} split: {name} has {got} columns, but the model expects {width}")


def _check_labels(rows: EncodedRows, split: str) -> None:
    if len(np.unique(rows.labels)) < 2:
        raise CompressError(f"the {split} split has only one label value; validation AUC needs both 0 and 1")


def _check_final_widths(config: PruneConfig, names: list[str], widths: list[int]) -> None:
    if config.scope == "per_layer":
        for name, width in zip(names, widths, strict=True):
            if kept_width(width, config.ratio) < 1:
                raise CompressError(
                    f"prune: ratio={config.ratio} would leave 0 of the {width} neurons of the {name}; "
                    f"expected a ratio <= {1 - 0.5 / width:.3f} for this layer (or a wider model)"
                )
    else:
        keep = kept_width(sum(widths), config.ratio)
        if keep < len(widths):
            raise CompressError(
                f"prune: ratio={config.ratio} with scope='global' keeps {keep} of {sum(widths)} hidden neurons, "
                f"fewer than the {len(widths)} hidden layers (each needs >= 1); expected a ratio <= "
                f"{1 - (len(widths) - 0.5) / sum(widths):.3f}"
            )


# --- pruning -----------------------------------------------------------------------------


def _linears(mlp: nn.Sequential) -> list[nn.Linear]:
    return [m for m in mlp if isinstance(m, nn.Linear)]


def _hidden_by_block(model: nn.Module) -> dict[str, list[nn.Linear]]:
    """{block name: its hidden ``nn.Linear`` layers}: the first ``len(config.<block>)`` of each prunable block.

    Raises:
        CompressError: ``model`` is not a registered architecture's model, or a block has no
            config field of its name listing its hidden widths.
    """
    try:
        arch = architecture_of(model)
    except ValueError as exc:
        raise CompressError(f"prune: expected a registered architecture's model, got {type(model).__name__}: {exc}") from exc
    out = {}
    for block, module in arch.prunable_blocks(model).items():
        widths = getattr(model.config, block, None)
        if not isinstance(widths, list):
            raise CompressError(
                f"prune: {arch.name}'s prunable block {block!r} has no config field {block!r} listing its hidden widths",
                hint="name each prunable block after the config field of its hidden widths (as bottom_mlp, deep_mlp)",
            )
        out[block] = _linears(module)[: len(widths)]
    return out


def _hidden_layers(model: nn.Module) -> list[nn.Linear]:
    return [lin for layers in _hidden_by_block(model).values() for lin in layers]


def _prune_step(tp, model: nn.Module, importance, scope: str, ratio: float, widths0: list[int]) -> list[int]:
    """Prune ``model`` in place so that its hidden layers reach ``ratio`` of ``widths0``.

    A hidden layer for which Torch-Pruning forms no group of its own is coupled through the
    graph to layers that must keep their width (e.g. a concatenation whose channel offsets it
    cannot infer, which would also cut the cross layers and embeddings): it is kept intact.

    Returns:
        The indices (into the hidden layers) of the layers kept intact that way.
    """
    was_training = model.training
    example = architecture_of(model).example_inputs(model.config, 4)
    # parameters held by a module with children (DeepFM's dense_vectors) are no layer Torch-Pruning knows:
    # named to it (it would warn and guess) and never pruned
    loose = [p for m in model.modules() if any(True for _ in m.children()) for p in m.parameters(recurse=False)]
    graph = tp.DependencyGraph().build_dependency(  # traces in eval mode
        model, example_inputs=example, unwrapped_parameters=[(p, p.dim() - 1) for p in loose], ignored_params=loose
    )
    model.train(was_training)
    hidden = _hidden_layers(model)
    ignored = [m for m in model.modules() if isinstance(m, nn.Linear) and not any(m is h for h in hidden)]
    groups = {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Linear]):
        groups[group[0].dep.target.module] = group
    if any(not any(g is h for h in hidden) for g in groups):
        raise CompressError(
            "prune: Torch-Pruning found pruning groups rooted at layers other than the hidden MLP layers; "
            "the model's layout is not the one its architecture's prunable_blocks describe"
        )
    fixed = [i for i, layer in enumerate(hidden) if layer not in groups]
    if len(fixed) == len(hidden):
        raise CompressError(
            "prune: every hidden layer is coupled to layers that must keep their width (Torch-Pruning forms no group "
            "of its own for any of them); nothing can be pruned"
        )
    free = [i for i in range(len(hidden)) if i not in fixed]
    hidden, widths0 = [hidden[i] for i in free], [widths0[i] for i in free]
    scores = []
    for layer in hidden:
        imp = importance(groups[layer])
        if imp is None or imp.shape != (layer.out_features,):
            raise CompressError(f"prune: importance of a layer of width {layer.out_features} could not be estimated")
        # a group whose scores are all 0 (e.g. dead ReLUs, no gradient) is normalized to NaN: rank it last
        scores.append(torch.nan_to_num(imp.detach().double().cpu(), nan=0.0, posinf=0.0, neginf=0.0))

    if scope == "per_layer":
        keep_sets = [_top_k(s, kept_width(w0, ratio)) for s, w0 in zip(scores, widths0, strict=True)]
    else:
        keep_sets = _global_keep(scores, kept_width(sum(widths0), ratio))

    for layer, score, keep in zip(hidden, scores, keep_sets, strict=True):
        drop = sorted(set(range(len(score))) - set(keep))
        if drop:
            group = graph.get_pruning_group(layer, tp.prune_linear_out_channels, idxs=drop)
            if not graph.check_pruning_group(group):
                raise CompressError(f"prune: Torch-Pruning refused to remove {len(drop)} of the {len(score)} neurons of a hidden layer")
            group.prune()
    return fixed


def _top_k(score: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest scores (ties: the lower index wins), at least 1 and at most all."""
    k = min(max(k, 1), len(score))
    order = sorted(range(len(score)), key=lambda i: (-float(score[i]), i))
    return sorted(order[:k])


def _global_keep(scores: list[torch.Tensor], total: int) -> list[list[int]]:
    """Keep ``total`` neurons across layers by score, with every layer's best neuron kept."""
    keep = [{_top_k(s, 1)[0]} for s in scores]
    rest = [(-float(s[i]), layer, i) for layer, s in enumerate(scores) for i in range(len(s)) if i not in keep[layer]]
    rest.sort()
    for _, layer, i in rest[: max(0, total - len(scores))]:
        keep[layer].add(i)
    return [sorted(k) for k in keep]


# --- training ----------------------------------------------------------------------------


def _tensors(rows: EncodedRows) -> dict[str, torch.Tensor]:
    """The model inputs of ``rows`` by name (the model is called with them as keyword arguments)."""
    return {name: torch.from_numpy(np.ascontiguousarray(x)) for name, x in rows.inputs().items()}


def _accumulate_gradients(model: nn.Module, xs: dict[str, torch.Tensor], y: torch.Tensor, *, batch_size: int, n_batches: int) -> None:
    """Sum the gradients of the BCE-on-logits loss over ``n_batches`` random training batches into ``.grad``."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss_fn = nn.BCEWithLogitsLoss()
    order = torch.randperm(len(y))
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        if len(idx) == 0:
            break
        loss_fn(model.logits(**{n: x[idx] for n, x in xs.items()}).squeeze(1), y[idx]).backward()


def _finetune(model: nn.Module, xs, y, val: EncodedRows, config: PruneConfig, *, batch_size: int, log, step: int) -> None:
    """Fine-tune in place with the one training loop (:func:`toolkit.train.loop.train_epochs`); leave the
    weights of the best validation AUC, where epoch 0 (no fine-tuning at all) competes too."""

    def on_epoch(stats: EpochStats) -> None:
        loss = "" if stats.epoch == 0 else f"train loss {stats.train_loss:.4f}, "
        log(f"  fine-tune epoch {stats.epoch}/{config.finetune_epochs}: {loss}val AUC {stats.val_auc:.4f}")

    try:
        train_epochs(
            model,
            xs,
            y,
            val,
            max_epochs=config.finetune_epochs,
            patience=None,
            learning_rate=config.learning_rate,
            batch_size=batch_size,
            score_before=True,
            on_epoch=on_epoch,
        )
    except TrainError as exc:
        raise CompressError(f"prune: fine-tuning after step {step}: {exc}; try a lower learning_rate") from exc


# --- rebuild -----------------------------------------------------------------------------


def _rebuild(original: nn.Module, pruned: nn.Module, val: EncodedRows) -> nn.Module:
    """A fresh model of the same architecture with the pruned widths and weights, checked to compute exactly what ``pruned`` does."""
    arch = architecture_of(original)
    widths = dict(zip(_hidden_by_block(pruned), hidden_widths(pruned), strict=True))
    config = dataclasses.replace(original.config, **widths)
    with torch.random.fork_rng(devices=[]):
        rebuilt = arch.build(config)
    try:
        rebuilt.load_state_dict(pruned.state_dict())
    except RuntimeError as exc:
        shown = ", ".join(f"{k}={v}" for k, v in widths.items())
        raise CompressError(f"prune: the pruned weights do not fit a {arch.model_class.__name__} with {shown}: {exc}") from exc
    rebuilt.eval()
    pruned.eval()
    inputs = [arch.example_inputs(config, 8), {n: x[:256] for n, x in _tensors(val).items()}]
    with torch.no_grad():
        for xs in inputs:
            if not torch.equal(rebuilt(**xs), pruned(**xs)):
                raise CompressError(f"prune: the rebuilt {arch.model_class.__name__}'s outputs differ from the pruned model's")
    return rebuilt
