"""DLRM, DCN-v2 and DeepFM on MovieLens-100K next to logistic regression and item popularity.

Every model sees the same features (the feature encoder's dense, single- and multi-valued
ids) and, for each seed, the same random 80/10/10 split (split seed = training seed), trained
with the same loop (Adam, early stopping on validation AUC, best epoch restored). Reports test
AUC and log loss, mean and spread (sample standard deviation, min, max) over the seeds:

    .venv/bin/python perf/models_movielens.py --data-dir .cache/ml-100k --seeds 0 1 2

writes ``perf/results/models_movielens.{json,md}``. One torch thread (``--threads``) keeps it
from crowding a shared machine; MovieLens-100K trains in about a minute per model and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from toolkit._io import atomic_write_json, atomic_write_text
from toolkit.cpu import detect_cpu
from toolkit.data import load_splits
from toolkit.metrics import evaluate
from toolkit.train import TrainConfig, item_popularity, logistic_regression, predict, train_model

RESULTS = Path(__file__).resolve().parent / "results"

#: The architectures and their settings: the training loop and E=16 are shared, the widths are each
#: architecture's own defaults (DLRM: TrainConfig's bottom [64] / top [64, 32]).
MODELS: dict[str, dict] = {
    "dlrm": {"architecture": "dlrm"},
    "dcnv2": {"architecture": "dcnv2"},
    "deepfm": {"architecture": "deepfm"},
}


def _spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def run(data_dir: Path, seeds: list[int], models: list[str], threads: int, max_epochs: int) -> dict:
    torch.set_num_threads(threads)
    runs: list[dict] = []
    for seed in seeds:
        splits = load_splits(data_dir, seed=seed)
        for baseline in (
            item_popularity(splits.train, splits.test),
            logistic_regression(splits.train, splits.val, splits.test, splits.encoder.cardinalities),
        ):
            runs.append(
                {
                    "model": baseline.name,
                    "seed": seed,
                    "test_auc": baseline.test_auc,
                    "test_log_loss": baseline.test_log_loss,
                    "detail": baseline.detail,
                }
            )
            print(f"seed {seed} {baseline.name}: AUC {baseline.test_auc:.4f}, log loss {baseline.test_log_loss:.4f}", flush=True)
        for name in models:
            config = TrainConfig(seed=seed, max_epochs=max_epochs, **MODELS[name])
            start = time.perf_counter()
            result = train_model(splits.train, splits.val, splits.encoder, config)
            seconds = time.perf_counter() - start
            test = evaluate(splits.test.labels, predict(result.model, splits.test))
            params = sum(p.numel() for p in result.model.parameters())
            runs.append(
                {
                    "model": name,
                    "seed": seed,
                    "test_auc": test["auc"],
                    "test_log_loss": test["log_loss"],
                    "best_epoch": result.best_epoch,
                    "epochs": len(result.history),
                    "train_seconds": seconds,
                    "params": params,
                    "model_config": result.model.config.to_dict(),
                    "train_config": asdict(config),
                }
            )
            done = f"best epoch {result.best_epoch}, {seconds:.0f} s"
            print(f"seed {seed} {name}: AUC {test['auc']:.4f}, log loss {test['log_loss']:.4f} ({done})", flush=True)
    names = [*models, "logistic regression", "item popularity"]
    summary = {}
    for name in names:
        rows = [r for r in runs if r["model"] == name]
        summary[name] = {"test_auc": _spread([r["test_auc"] for r in rows]), "test_log_loss": _spread([r["test_log_loss"] for r in rows])}
    lr_auc = summary["logistic regression"]["test_auc"]["mean"]
    for name in models:
        per_seed_lr = {r["seed"]: r["test_auc"] for r in runs if r["model"] == "logistic regression"}
        wins = [r["test_auc"] > per_seed_lr[r["seed"]] for r in runs if r["model"] == name]
        summary[name]["beats_logistic_regression"] = {"mean": summary[name]["test_auc"]["mean"] > lr_auc, "every_seed": all(wins)}
    cpu = detect_cpu()
    return {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "machine": {"cpu": cpu.model_name, "cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__},
        "data": "MovieLens-100K, label rating >= 4; random 80/10/10 split with split seed = training seed",
        "seeds": seeds,
        "summary": summary,
        "runs": runs,
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Architectures on MovieLens-100K (random 80/10/10)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; {m['torch_threads']} torch thread(s); torch {m['torch']}",
        "",
        f"Seeds: {', '.join(map(str, report['seeds']))} (each seed is both the split seed and the training seed; "
        "the baselines are refitted on each split). Spread: sample standard deviation over the seeds, and min/max.",
        "",
        "| model | test AUC mean | ± std | min | max | test log loss mean | ± std | beats logistic regression |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in report["summary"].items():
        a, ll = s["test_auc"], s["test_log_loss"]
        beats = s.get("beats_logistic_regression")
        verdict = "—" if beats is None else ("yes, on every seed" if beats["every_seed"] else ("on the mean" if beats["mean"] else "no"))
        auc_cells = f"{a['mean']:.4f} | {a['std']:.4f} | {a['min']:.4f} | {a['max']:.4f}"
        lines.append(f"| {name} | {auc_cells} | {ll['mean']:.4f} | {ll['std']:.4f} | {verdict} |")
    lines += [
        "",
        "## Per run",
        "",
        "| model | seed | test AUC | test log loss | best epoch | train s | params |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["runs"]:
        extra = (f"{r['best_epoch']} | {r['train_seconds']:.0f} | {r['params']:,}") if "params" in r else "— | — | —"
        lines.append(f"| {r['model']} | {r['seed']} | {r['test_auc']:.4f} | {r['test_log_loss']:.4f} | {extra} |")
    lines += [
        "",
        "## Settings",
        "",
        "- Training (all three): Adam lr 1e-3, batch 256, BCE on logits, early stopping on validation AUC "
        "(patience 2, best epoch restored), E = 16.",
        "- DLRM: bottom MLP [64] → 16, top MLP [64, 32] → 1, dot interaction (toolkit/models/dlrm.py).",
        "- DCN-v2: 3 full-rank cross layers, stacked with a deep network [128, 64] (toolkit/models/dcnv2.py).",
        "- DeepFM: first-order weights + FM over the 10 fields (7 categorical, genres as one masked-sum field, "
        "the 2 dense features as value-scaled vectors) + deep network [128, 64] (toolkit/models/deepfm.py).",
        "- Logistic regression: one-hot ids, multi-hot genres and the dense features, L2 with C in {0.1, 0.3, 1} chosen "
        "on validation; item popularity: the item's smoothed training positive rate (toolkit/train/baselines.py).",
        "- The architectures were not tuned: the first run of each with these defaults is the one reported.",
        "- train s: wall seconds on a 2-core machine shared with other jobs (load average 6-10 during the run): "
        "a note of cost, not a speed measurement.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(".cache/ml-100k"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "models_movielens")
    parser.add_argument("--render", action="store_true", help="only rewrite <out>.md from <out>.json")
    args = parser.parse_args()
    if args.render:  # the Markdown again from the JSON a run wrote (no training)
        atomic_write_text(args.out.with_suffix(".md"), markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return
    report = run(args.data_dir, args.seeds, args.models, args.threads, args.max_epochs)
    atomic_write_json(args.out.with_suffix(".json"), report)
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
