"""Structured pruning of a DLRM's MLPs: whole hidden neurons are removed, so layers shrink.

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

from toolkit.compress.recipe import PruneConfig
from toolkit.data.features import EncodedRows
from toolkit.errors import CompressError, TrainError
from toolkit.models.dlrm import DLRM
from toolkit.models.signature import dlrm_example_inputs
from toolkit.train.loop import EpochStats, train_epochs

__all__ = ["prune", "hidden_widths", "kept_width"]

Log = Callable[[str], None] | None


def kept_width(width: int, ratio: float) -> int:
    """Neurons a layer of ``width`` keeps when ``ratio`` of them are removed: ``(1 - ratio) * width``
    rounded half up (``kept_width(10, 0.3) == 7``, ``kept_width(5, 0.5) == 3``). May be 0."""
    return max(0, math.floor((1.0 - ratio) * width + 0.5))


def hidden_widths(model: DLRM) -> tuple[list[int], list[int]]:
    """The hidden widths ``(bottom, top)`` read off the model's ``nn.Linear`` layers
    (every layer's ``out_features`` except each MLP's last), whatever its config says."""
    bottom = [lin.out_features for lin in _linears(model.bottom_mlp)[:-1]]
    top = [lin.out_features for lin in _linears(model.top_mlp)[:-1]]
    return bottom, top


def prune(
    model: DLRM,
    config: PruneConfig,
    train: EncodedRows,
    val: EncodedRows,
    *,
    seed: int = 42,
    batch_size: int = 256,
    taylor_batches: int = 8,
    on_log: Log = None,
) -> DLRM:
    """Remove ``config.ratio`` of the hidden neurons of ``model``'s two MLPs, in ``config.iterations`` steps.

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

    Args:
        model: a trained :class:`~toolkit.models.dlrm.DLRM` (float32, CPU), possibly pruned before.
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
        A new DLRM in eval mode whose config holds the pruned hidden widths (so
        :func:`~toolkit.train.save_checkpoint` and ONNX export work unchanged), with the
        surviving (fine-tuned) weights. Its outputs are checked to equal the pruned module's.

    Raises:
        CompressError: ``model`` is not a DLRM or has no hidden layer; a layer would keep 0
            neurons (names the layer, its width and the largest ratio that keeps one); the
            global budget is smaller than the number of hidden layers; the splits are empty,
            of the wrong widths or (``val``) single-class; ``batch_size``/``taylor_batches``
            below 1; fine-tuning produced NaN/Inf outputs; the rebuilt model disagrees with
            the pruned one.
    """
    import torch_pruning as tp  # heavy import, only needed here

    _check_model(model)
    for name, value in (("batch_size", batch_size), ("taylor_batches", taylor_batches)):
        if value < 1:
            raise CompressError(f"prune: {name}={value}, expected an integer >= 1")
    _check_rows(model, train, "train")
    _check_rows(model, val, "val")
    _check_labels(val, "val")
    log = on_log or (lambda _msg: None)

    bottom0, top0 = hidden_widths(model)
    names = [f"bottom_mlp hidden layer {i + 1}" for i in range(len(bottom0))] + [f"top_mlp hidden layer {i + 1}" for i in range(len(top0))]
    widths0 = [*bottom0, *top0]
    if not widths0:
        raise CompressError("prune: the model has no hidden MLP layer (bottom_mlp=[] and top_mlp=[]); nothing to prune")
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
            _prune_step(tp, pruned, importance, config.scope, ratio, widths0)
            pruned.zero_grad(set_to_none=True)
            after = hidden_widths(pruned)
            log(
                f"prune step {step}/{config.iterations} ({config.importance}, {config.scope}, ratio {ratio:.3g}): "
                f"bottom_mlp {before[0]} -> {after[0]}, top_mlp {before[1]} -> {after[1]}"
            )
            _finetune(pruned, xs, y, val, config, batch_size=batch_size, log=log, step=step)
    return _rebuild(model, pruned, val)


# --- checks ------------------------------------------------------------------------------


def _check_model(model: object) -> None:
    if not isinstance(model, DLRM):
        raise CompressError(f"expected a toolkit.models.DLRM, got {type(model).__name__}")


def _check_rows(model: DLRM, rows: EncodedRows, split: str) -> None:
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


def _hidden_layers(model: DLRM) -> list[nn.Linear]:
    return [*_linears(model.bottom_mlp)[:-1], *_linears(model.top_mlp)[:-1]]


def _prune_step(tp, model: DLRM, importance, scope: str, ratio: float, widths0: list[int]) -> None:
    """Prune ``model`` in place so that its hidden layers reach ``ratio`` of ``widths0``."""
    was_training = model.training
    example = dlrm_example_inputs(model.config, 4)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)  # traces in eval mode
    model.train(was_training)
    ignored = [_linears(model.bottom_mlp)[-1], _linears(model.top_mlp)[-1]]
    hidden = _hidden_layers(model)
    groups = {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Linear]):
        groups[group[0].dep.target.module] = group
    if set(groups) != set(hidden):
        raise CompressError(
            "prune: Torch-Pruning found pruning groups rooted at layers other than the hidden MLP layers; "
            "the DLRM layout is not the one this function expects"
        )
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


def _accumulate_gradients(model: DLRM, xs: dict[str, torch.Tensor], y: torch.Tensor, *, batch_size: int, n_batches: int) -> None:
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


def _finetune(model: DLRM, xs, y, val: EncodedRows, config: PruneConfig, *, batch_size: int, log, step: int) -> None:
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


def _rebuild(original: DLRM, pruned: DLRM, val: EncodedRows) -> DLRM:
    """A fresh DLRM with the pruned widths and weights, checked to compute exactly what ``pruned`` does."""
    bottom, top = hidden_widths(pruned)
    config = dataclasses.replace(original.config, bottom_mlp=bottom, top_mlp=top)
    with torch.random.fork_rng(devices=[]):
        rebuilt = DLRM(config)
    try:
        rebuilt.load_state_dict(pruned.state_dict())
    except RuntimeError as exc:
        raise CompressError(f"prune: the pruned weights do not fit a DLRM with bottom_mlp={bottom}, top_mlp={top}: {exc}") from exc
    rebuilt.eval()
    pruned.eval()
    inputs = [dlrm_example_inputs(config, 8), {n: x[:256] for n, x in _tensors(val).items()}]
    with torch.no_grad():
        for xs in inputs:
            if not torch.equal(rebuilt(**xs), pruned(**xs)):
                raise CompressError("prune: the rebuilt DLRM's outputs differ from the pruned model's")
    return rebuilt
