"""`tritonrec tune`'s search against a brute-force sweep of the same space, on one server in one run.

Writes perf/results/tune_comparison.{json,md} and the recorded curves the unit tests replay
(tests/fixtures/perf/tune_movielens_curves.json). Run from the repository root:

    .venv/bin/python perf/tune_comparison.py

Trains a small DLRM on MovieLens-100K (1 epoch on 20,000 rows), exports it to ONNX and builds
the ``onnx_python`` variant (ONNX Runtime in a Python-backend model: the bundled Triton 2.51 has
no onnxruntime backend). One explicit-mode server serves it; every candidate of the search space
is loaded through Triton's model-control API (``load_model`` with a config override) and
measured by perf_analyzer at the same concurrency levels with real test rows. The search
(CoordinateSearch, starting from the built config) and the brute force (every candidate, in a
seeded random order) run interleaved -- one search measurement, then three brute-force ones --
so that a change of the machine's load during the run affects both alike. The claim checked:
the search's best throughput within the p99 budget is within 5% of the brute force's best,
using at most a third of its measurements.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from toolkit._io import atomic_write_json, atomic_write_text
from toolkit.data import load_splits
from toolkit.export.checkpoint import export_checkpoint
from toolkit.optimize.bench import machine_info
from toolkit.perf.analyzer import find_perf_analyzer
from toolkit.perf.tune import (
    CoordinateSearch,
    GridSearch,
    Measurement,
    MeasureSettings,
    Objective,
    SearchSpace,
    TritonEvaluator,
    TuneResult,
    candidate_config,
    candidate_from_config,
    replay,
    run_search,
    summarize,
    write_version,
)
from toolkit.repository import BatchingOptions, build_repository, read_config
from toolkit.serving import TritonServer, free_ports
from toolkit.train import TrainConfig, load_checkpoint, train_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".cache" / "ml-100k"
MODEL = "dlrm_onnx_python"
FIXTURE = ROOT / "tests" / "fixtures" / "perf" / "tune_movielens_curves.json"


def _build(root: Path) -> tuple[Path, Path]:
    checkpoint, onnx_path, repo = root / "checkpoint", root / "onnx" / "model.onnx", root / "model_repository"
    train_checkpoint(DATA_DIR, checkpoint, TrainConfig(max_epochs=1, max_train_rows=20_000), baselines=False)
    export_checkpoint(checkpoint, onnx_path, DATA_DIR)
    # The starting point: the builder's defaults with the preferred sizes of the space's large batching.
    options = BatchingOptions(max_batch_size=256, dynamic_batching=True, max_queue_delay_us=100, preferred_batch_sizes=[64, 256])
    build_repository(repo, checkpoint=checkpoint, onnx_model=onnx_path, variants=["onnx_python"], options=options)
    return checkpoint, repo


def _row(r: TuneResult) -> dict:
    d = r.to_dict()
    keep = ("strategy", "n_measurements", "chosen", "best_throughput_infer_per_s", "best_p99_latency_ms", "elapsed_s", "trace")
    return {k: d[k] for k in keep} | {
        "order": [m.candidate.key for m in r.measurements],
        "pareto_front": d["pareto_front"],
        "measurements": d["measurements"],
    }


def _interleaved(
    evaluator: TritonEvaluator,
    space: SearchSpace,
    objective: Objective,
    settings: MeasureSettings,
    base,
    interleave: int,
    seed: int,
) -> tuple[TuneResult, TuneResult]:
    """The search and the brute force on one server, one search measurement then ``interleave`` brute-force
    ones, until both are done: a change of the machine's load during the run hits both alike."""
    search_strategy = CoordinateSearch(space, objective, start=candidate_from_config(base))
    grid = GridSearch(space, seed=seed)
    found: dict[str, list[Measurement]] = {"search": [], "brute": []}

    def measure(name: str, strategy) -> bool:
        c = strategy.next_candidate(found[name])
        if c is None:
            return False
        m = evaluator(c)
        found[name].append(m)
        op = objective.operating_point(m)
        best = "infeasible" if op is None else f"c{op.concurrency} {op.throughput_infer_per_s:,.0f}/s p99 {op.p99_latency_ms:.2f} ms"
        print(f"  {name} #{len(found[name])} {c.key}: {best}{' (' + m.error + ')' if m.error else ''}", flush=True)
        return True

    while True:
        progressed = measure("search", search_strategy)
        for _ in range(interleave):
            progressed = measure("brute", grid) or progressed
        if not progressed:
            break
    results = []
    for name, strategy in (("search", search_strategy), ("brute", grid)):
        r = summarize(MODEL, strategy, found[name], objective, space, settings)
        r.elapsed_s = sum(m.load_s + m.measure_s for m in found[name])
        results.append(r)
    return results[0], results[1]


def _head_to_head(evaluator: TritonEvaluator, objective: Objective, candidates: list, rounds: int) -> dict:
    """Re-measure the chosen configs alternately, ``rounds`` times each: the median score of each."""
    scores: dict[str, list] = {c.key: [] for c in candidates}
    for _ in range(rounds):
        for c in candidates:
            scores[c.key].append(objective.score(evaluator(c)))
    return {k: {"scores": v, "median": statistics.median([x or 0.0 for x in v])} for k, v in scores.items()}


def _replay_from_every_start(space: SearchSpace, objective: Objective, recorded: list) -> dict:
    """The search replayed on the brute force's measurements from each candidate as the start."""
    best = max(objective.score(m) or 0.0 for m in recorded)
    runs = []
    for start in space.candidates():
        found = run_search(CoordinateSearch(space, objective, start=start), replay(recorded))
        got = max(objective.score(m) or 0.0 for m in found)
        runs.append({"start": start.key, "measurements": len(found), "ratio": got / best})
    ok = [r for r in runs if r["ratio"] >= 0.95 and 3 * r["measurements"] <= len(space)]
    return {
        "starts": len(runs),
        "claim_holds_from": len(ok),
        "median_measurements": statistics.median(r["measurements"] for r in runs),
        "max_measurements": max(r["measurements"] for r in runs),
        "median_ratio": statistics.median(r["ratio"] for r in runs),
        "runs": runs,
    }


def _markdown(report: dict) -> str:
    c, s, b = report["comparison"], report["search"], report["brute_force"]
    lines = [
        "# `tritonrec tune`: search vs brute force",
        "",
        f"- command: `{report['command']}`",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; perf_analyzer {report['perf_analyzer_version']}",
        f"- model: `{report['model']}` ({report['data']})",
        f"- objective: max throughput with p99 <= {report['objective']['p99_budget_ms']:g} ms; "
        f"client batch {report['settings']['batch_size']}, concurrency {report['settings']['concurrency']}, "
        f"{report['settings']['measurement_interval_ms']} ms windows over {report['settings']['protocol']}",
        f"- space: {report['space']['size']} candidates: instances {report['space']['instance_counts']}, "
        f"queue delay us {report['space']['max_queue_delays_us']}, batching "
        + ", ".join(f"{x['max_batch_size']}/{x['preferred_batch_sizes']}" for x in report["space"]["batchings"])
        + f", intra-op threads {report['space']['intra_op_threads']}",
        "",
        "## Result",
        "",
        "| | measurements | best config | best infer/s within budget | its p99 ms | wall s |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, r in (("search", s), ("brute force", b)):
        key = r["chosen"]["key"] if r["chosen"] else "none"
        lines.append(
            f"| {name} | {r['n_measurements']} | `{key}` | {_f(r['best_throughput_infer_per_s'], ',.0f')} | "
            f"{_f(r['best_p99_latency_ms'], '.2f')} | {r['elapsed_s']:.0f} |"
        )
    lines += [
        "",
        f"- search best / brute-force best: **{_f(c['throughput_ratio'], '.3f')}** (claim: >= 0.95) -> "
        f"{'holds' if c['within_5_percent'] else 'does not hold'}",
        f"- measurements search / brute force: **{c['search_measurements']} / {c['brute_force_measurements']} = "
        f"{c['measurement_ratio']:.3f}** (claim: <= 1/3) -> {'holds' if c['at_most_a_third'] else 'does not hold'}",
        f"- the search's choice as the brute force measured it: {_f(c['chosen_in_brute_force_ratio'], '.3f')} of the brute-force best",
        f"- head to head (each chosen config re-measured {report['head_to_head']['rounds']} times, alternately): median "
        f"{_f(c['head_to_head_ratio'], '.3f')} of the brute force's choice",
        f"- replayed on the brute force's curves from each of the {report['replay']['starts']} candidates as the start: the claim holds "
        f"from {report['replay']['claim_holds_from']}; median {report['replay']['median_measurements']:g} measurements "
        f"(max {report['replay']['max_measurements']}), median ratio {report['replay']['median_ratio']:.3f}",
        f"- search stopped: {s['trace']['stop_reason']}",
        "",
        "## Head to head (after both searches)",
        "",
        "| config | chosen by | its score in the search / brute force | re-measured | median |",
        "|---|---|---:|---:|---:|",
        *_head_to_head_rows(report),
        "",
        "## Search order",
        "",
        "| # | candidate | best infer/s within budget |",
        "|---:|---|---:|",
    ]
    lines += [f"| {m['order']} | `{m['key']}` | {_f(m['score'], ',.0f')} |" for m in s["measurements"]]
    lines += ["", "Pruned before measuring:", ""]
    lines += [f"- `{k}`: {v}" for k, v in s["trace"]["pruned"].items()] or ["- none"]
    lines += [
        "",
        "## Brute force (every candidate)",
        "",
        "| candidate | " + " | ".join(f"c{c} infer/s, p99 ms" for c in report["settings"]["concurrency"]) + " | best within budget |",
        "|---|" + "---:|" * (len(report["settings"]["concurrency"]) + 1),
    ]
    for m in sorted(b["measurements"], key=lambda m: -(m["score"] or 0)):
        cells = {p["concurrency"]: f"{p['throughput_infer_per_s']:,.0f}, {p['p99_latency_ms']:.2f}" for p in m["points"]}
        row = " | ".join(cells.get(c, "-") for c in report["settings"]["concurrency"])
        lines.append(f"| `{m['key']}` | {row} | {_f(m['score'], ',.0f')} |")
    lines += [
        "",
        "## Pareto front (brute force, throughput vs p99)",
        "",
        "| candidate | concurrency | infer/s | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| `{p['key']}` | {p['concurrency']} | {p['throughput_infer_per_s']:,.0f} | {p['p99_latency_ms']:.2f} |" for p in b["pareto_front"]
    ]
    lines += ["", "## Notes", "", *(f"- {n}" for n in report["notes"])]
    return "\n".join(lines) + "\n"


def _head_to_head_rows(report: dict) -> list[str]:
    scores = {
        name: {m["key"]: m["score"] for m in report[part]["measurements"]}
        for name, part in (("search", "search"), ("brute", "brute_force"))
    }
    chosen = {part: (report[part]["chosen"] or {}).get("key") for part in ("search", "brute_force")}
    rows = []
    for key, h in report["head_to_head"]["scores"].items():
        by = " and ".join(n.replace("_", " ") for n, k in chosen.items() if k == key)
        main = f"{_f(scores['search'].get(key), ',.0f')} / {_f(scores['brute'].get(key), ',.0f')}"
        again = ", ".join(_f(x, ",.0f") for x in h["scores"])
        rows.append(f"| `{key}` | {by} | {main} | {again} | {_f(h['median'], ',.0f')} |")
    return rows


def _f(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p99-budget-ms", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--measurement-interval-ms", type=int, default=500)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--head-to-head-rounds", type=int, default=3)
    parser.add_argument("--interleave", type=int, default=3, help="brute-force measurements after each search measurement")
    parser.add_argument("--seed", type=int, default=0, help="the brute force's random order")
    parser.add_argument("--out", type=Path, default=ROOT / "perf" / "results" / "tune_comparison.json")
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    parser.add_argument("--markdown-only", action="store_true", help="re-render the .md from the existing --out JSON")
    args = parser.parse_args()
    if args.markdown_only:
        atomic_write_text(args.out.with_suffix(".md"), _markdown(json.loads(args.out.read_text())))
        return
    started = time.perf_counter()
    torch.manual_seed(0)
    space = SearchSpace()
    objective = Objective(p99_budget_ms=args.p99_budget_ms)
    settings = MeasureSettings(
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        batch_size=args.batch_size,
        measurement_interval_ms=args.measurement_interval_ms,
    )
    analyzer = find_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="tune-comparison-") as tmp:
        root = Path(tmp)
        checkpoint, repo = _build(root)
        rows = load_splits(DATA_DIR, encoder=load_checkpoint(checkpoint).encoder).test.take(slice(0, args.rows)).inputs()
        ports = dict(zip(("http_port", "grpc_port", "metrics_port"), free_ports(3), strict=True))
        explicit = ["--model-control-mode=explicit", f"--load-model={MODEL}"]
        with TritonServer(repo, extra_args=explicit, log_path=root / "tritonserver.log", **ports) as server:
            base = read_config(repo / MODEL / "config.pbtxt")
            evaluator = TritonEvaluator(
                MODEL, server.grpc_url, base_config=base, rows=rows, settings=settings, out_dir=root / "pa", analyzer=analyzer
            )
            try:
                search, brute = _interleaved(evaluator, space, objective, settings, base, args.interleave, args.seed)
                pair = list(dict.fromkeys(r.chosen.candidate for r in (search, brute) if r.chosen is not None))
                print(f"head to head: {', '.join(c.key for c in pair)}", flush=True)
                h2h = _head_to_head(evaluator, objective, pair, args.head_to_head_rounds)
                # the search's choice becomes version 2, loaded from the repository
                search.version_dir = write_version(repo, MODEL, candidate_config(base, search.chosen.candidate)) if search.chosen else None
                evaluator.load(None)
            finally:
                evaluator.close()
            written = search.version_dir.name if search.version_dir else None
            served = [s for s in server.model_states() if s.name == MODEL and s.state == "READY"]

    best_s, best_b = search.best_score, brute.best_score
    brute_by_key = {m.candidate.key: objective.score(m) for m in brute.measurements}
    chosen_in_brute = brute_by_key.get(search.chosen.candidate.key) if search.chosen else None
    ratio = best_s / best_b if best_s is not None and best_b else None
    m_ratio = len(search.measurements) / len(brute.measurements)
    comparison = {
        "search_measurements": len(search.measurements),
        "brute_force_measurements": len(brute.measurements),
        "measurement_ratio": m_ratio,
        "at_most_a_third": len(search.measurements) * 3 <= len(brute.measurements),
        "search_best_throughput": best_s,
        "brute_force_best_throughput": best_b,
        "throughput_ratio": ratio,
        "within_5_percent": ratio is not None and ratio >= 0.95,
        "same_config": bool(search.chosen and brute.chosen and search.chosen.candidate == brute.chosen.candidate),
        "chosen_in_brute_force_throughput": chosen_in_brute,
        "chosen_in_brute_force_ratio": chosen_in_brute / best_b if chosen_in_brute is not None and best_b else None,
    }
    comparison["claim_holds"] = comparison["within_5_percent"] and comparison["at_most_a_third"]
    if search.chosen and brute.chosen:
        s_med, b_med = h2h[search.chosen.candidate.key]["median"], h2h[brute.chosen.candidate.key]["median"]
        comparison["head_to_head_ratio"] = s_med / b_med if b_med else None
    else:
        comparison["head_to_head_ratio"] = None
    report = {
        "command": shlex.join(["python", "perf/tune_comparison.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "perf_analyzer_version": analyzer.version(),
        "perf_analyzer_source": analyzer.source,
        "data": "MovieLens-100K test rows (random 80/10/10, seed 42); DLRM trained 1 epoch on 20,000 rows",
        "model": MODEL,
        "objective": objective.to_dict(),
        "settings": settings.to_dict(),
        "space": space.to_dict(),
        "schedule": {"interleave": args.interleave, "brute_force_seed": args.seed},
        "comparison": comparison,
        "search": _row(search),
        "brute_force": _row(brute),
        "head_to_head": {"rounds": args.head_to_head_rounds, "scores": h2h},
        "replay": _replay_from_every_start(space, objective, brute.measurements),
        "written_version": written,
        "served_after_write": [{"version": s.version, "state": s.state} for s in served],
        "elapsed_s": round(time.perf_counter() - started, 1),
        "notes": [
            "One server (Triton 2.51 from the nvidia-pytriton wheel, --model-control-mode=explicit) on the same 2-core machine "
            "as perf_analyzer; each candidate is loaded with load_model(config=...) and measured at every concurrency level.",
            "A measurement's score is the highest throughput among its levels with p99 within the budget. The search and the "
            "brute force (in a seeded random order) ran interleaved, one search measurement then three brute-force ones, with "
            "the same settings (perf_analyzer: 3 windows within 30%, up to 5 trials, retried once at twice the window); "
            "wall s in the tables is the time spent loading and measuring each one's candidates.",
            "Throughput is noisy at this scale (other processes may share the machine): the search's best and the brute force's "
            "best are each the maximum of their own noisy measurements, so the two chosen configs are also re-measured head to "
            "head, alternately, after both searches (not counted as search measurements).",
            "The replay runs the same search on the brute force's recorded curves from every candidate as the start (the live "
            "search starts from the built config), without a server.",
        ],
    }
    atomic_write_json(args.out, report)
    atomic_write_text(args.out.with_suffix(".md"), _markdown(report))
    fixture = {
        "source": f"brute force of {report['command']} ({time.strftime('%Y-%m-%d')})",
        "machine": report["machine"],
        "objective": objective.to_dict(),
        "settings": settings.to_dict(),
        "space": space.to_dict(),
        "start": search.measurements[0].candidate.to_dict(),
        "measurements": [m.to_dict() for m in brute.measurements],
    }
    atomic_write_json(args.fixture, fixture)
    print(json.dumps(comparison, indent=2))
    print(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.fixture}")


if __name__ == "__main__":
    main()
