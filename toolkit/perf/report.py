"""Served-performance reports: the headline comparison, tables, and plots (JSON, Markdown, HTML).

The headline compares an optimized variant with the baseline measured side by side on the
same server in one run (the paper's claims: p99 latency under 30% of the baseline's and more
than twice its throughput, with test AUC at least 99% of the baseline's).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from toolkit._io import atomic_write_json, atomic_write_text  # noqa: E402
from toolkit.perf.sweep import Sweep  # noqa: E402

__all__ = ["headline", "write_perf_report", "PAPER_CLAIMS"]

#: The paper's claims, as ratios optimized / baseline.
PAPER_CLAIMS = {"p99_ratio_below": 0.30, "throughput_ratio_above": 2.0, "auc_ratio_at_least": 0.99}


def headline(baseline: Sweep, optimized: Sweep, *, p99_budget_ms: float, baseline_auc: float | None, optimized_auc: float | None) -> dict:
    """Ratios optimized / baseline from two sweeps of the same protocol and client batch size.

    ``p99_ratio`` is taken at the highest load level (concurrency, or request rate) both sweeps
    measured (also listed per level); ``throughput_ratio_at_budget`` compares the highest throughput each reaches with
    p99 <= ``p99_budget_ms`` (None when the baseline never meets the budget).
    """
    common = sorted({p.point.load for p in baseline.points} & {p.point.load for p in optimized.points})
    per_level = {}
    for c in common:
        b, o = baseline.at(c), optimized.at(c)
        per_level[f"{c:g}"] = {
            "baseline_p99_ms": b.point.p99_latency_ms,
            "optimized_p99_ms": o.point.p99_latency_ms,
            "p99_ratio": o.point.p99_latency_ms / b.point.p99_latency_ms,
            "throughput_ratio": o.point.throughput_infer_per_s / b.point.throughput_infer_per_s,
        }
    at = common[-1] if common else None
    best_b, best_o = baseline.best_within(p99_budget_ms), optimized.best_within(p99_budget_ms)
    throughput_ratio = (
        best_o.point.throughput_infer_per_s / best_b.point.throughput_infer_per_s if best_b is not None and best_o is not None else None
    )
    auc_ratio = optimized_auc / baseline_auc if optimized_auc is not None and baseline_auc else None
    p99_ratio = per_level[f"{at:g}"]["p99_ratio"] if at else None
    claims = {
        "p99_ratio < 0.30": None if p99_ratio is None else p99_ratio < PAPER_CLAIMS["p99_ratio_below"],
        "throughput_ratio > 2": None if throughput_ratio is None else throughput_ratio > PAPER_CLAIMS["throughput_ratio_above"],
        "auc_ratio >= 0.99": None if auc_ratio is None else auc_ratio >= PAPER_CLAIMS["auc_ratio_at_least"],
    }
    return {
        "baseline": baseline.model,
        "optimized": optimized.model,
        "protocol": baseline.protocol,
        "client_batch_size": baseline.batch_size,
        "p99_ratio": p99_ratio,
        "p99_ratio_at_concurrency": at,
        "p99_ratio_per_concurrency": per_level,
        "p99_budget_ms": p99_budget_ms,
        "baseline_best_throughput_within_budget": best_b.point.throughput_infer_per_s if best_b else None,
        "optimized_best_throughput_within_budget": best_o.point.throughput_infer_per_s if best_o else None,
        "throughput_ratio_at_budget": throughput_ratio,
        "baseline_test_auc": baseline_auc,
        "optimized_test_auc": optimized_auc,
        "auc_ratio": auc_ratio,
        "paper_claims_hold": claims,
    }


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def throughput_latency_plot(sweeps: list[Sweep], p99_budget_ms: float) -> bytes:
    """PNG: throughput (inferences/s) against p99 latency (ms), one panel per client batch size,
    one line per model and protocol (points in concurrency order)."""
    batch_sizes = sorted({s.batch_size for s in sweeps})
    colors = {key: f"C{i}" for i, key in enumerate(dict.fromkeys((s.model, s.protocol) for s in sweeps))}
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(6.0 * len(batch_sizes), 4.5), squeeze=False)
    for ax, batch in zip(axes[0], batch_sizes, strict=True):
        for s in (s for s in sweeps if s.batch_size == batch):
            xs = [p.point.p99_latency_ms for p in s.points]
            ys = [p.point.throughput_infer_per_s for p in s.points]
            ax.plot(xs, ys, marker="o", color=colors[(s.model, s.protocol)], label=f"{s.model} ({s.protocol})")
        ax.axvline(p99_budget_ms, color="grey", linestyle="--", linewidth=1, label=f"p99 budget {p99_budget_ms:g} ms")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"client batch {batch}")
        ax.set_xlabel("p99 latency (ms, log scale)")
        ax.set_ylabel("throughput (inferences/s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def breakdown_plot(sweeps: list[Sweep]) -> bytes:
    """PNG: stacked bars of the server-side latency breakdown at each sweep's highest concurrency."""
    fig, ax = plt.subplots(figsize=(7.5, 0.5 + 0.45 * len(sweeps)))
    parts = [
        ("server_queue_ms", "queue"),
        ("server_compute_input_ms", "compute input"),
        ("server_compute_infer_ms", "compute infer"),
        ("server_compute_output_ms", "compute output"),
    ]
    labels = []
    for i, s in enumerate(sweeps):
        p = s.points[-1].point
        left = 0.0
        for j, (attr, name) in enumerate(parts):
            value = getattr(p, attr)
            ax.barh(i, value, left=left, color=f"C{j}", label=name if i == 0 else None)
            left += value
        labels.append(f"{s.model} {s.protocol} b{s.batch_size} c{p.concurrency}")
    ax.set_yticks(range(len(sweeps)), labels, fontsize=7)
    ax.set_xlabel("server time per request (ms)")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _markdown(report: dict, plots: dict[str, str]) -> str:
    h = report["headline"]
    lines = [f"# Served performance: {report.get('data', '')}", ""]
    for key in ("command", "perf_analyzer_version"):
        if key in report:
            lines.append(f"- {key}: `{report[key]}`")
    m = report.get("machine", {})
    if m:
        lines.append(f"- machine: {m.get('cpu')}, {m.get('cores')} cores")
    if report.get("optimized_config"):
        lines.append(f"- optimized model served with: `{report['optimized_config']}` (chosen by `tritonrec tune` in this run)")
    lines += ["", "## Headline (same server, same run)", ""]
    lines += [
        f"- baseline `{h['baseline']}` vs optimized `{h['optimized']}` over {h['protocol']}, client batch {h['client_batch_size']}",
        f"- p99 ratio at load {_f(h['p99_ratio_at_concurrency'], 'g')}: **{_f(h['p99_ratio'])}** (paper: < 0.30)",
        f"- throughput ratio within p99 <= {h['p99_budget_ms']:g} ms: **{_f(h['throughput_ratio_at_budget'])}** (paper: > 2)",
        f"- test AUC ratio: **{_f(h['auc_ratio'])}** (paper: unchanged; budget >= 0.99)",
        "- claims hold: " + ", ".join(f"{k}: {'yes' if v else ('no' if v is False else 'n/a')}" for k, v in h["paper_claims_hold"].items()),
        "",
        "| concurrency | baseline p99 ms | optimized p99 ms | p99 ratio | throughput ratio |",
        "|---:|---:|---:|---:|---:|",
    ]
    for c, row in h["p99_ratio_per_concurrency"].items():
        cells = (
            f"{row['baseline_p99_ms']:.2f}",
            f"{row['optimized_p99_ms']:.2f}",
            f"{row['p99_ratio']:.3f}",
            f"{row['throughput_ratio']:.2f}",
        )
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Every load point",
        "",
        "| model | protocol | batch | concurrency | infer/s | p50 ms | p90 ms | p95 ms | p99 ms "
        "| queue ms | infer ms | server batch | CPU % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["sweeps"]:
        for p in s["points"]:
            lines.append(
                f"| {s['model']} | {s['protocol']} | {s['batch_size']} | {p['concurrency']} | {p['throughput_infer_per_s']:,.0f} | "
                f"{p['p50_latency_ms']:.2f} | {p['p90_latency_ms']:.2f} | {p['p95_latency_ms']:.2f} | {p['p99_latency_ms']:.2f} | "
                f"{p['server_queue_ms']:.2f} | {p['server_compute_infer_ms']:.2f} | {_f(p['avg_server_batch'], '.1f')} | "
                f"{p['cpu_utilization_pct']:.0f} |"
            )
    skipped = [
        f"{s['model']} {s['protocol']} b{s['batch_size']}: {s['unstable_levels']}" for s in report["sweeps"] if s.get("unstable_levels")
    ]
    if skipped:
        lines += ["", "Concurrency levels skipped because perf_analyzer could not stabilize them: " + "; ".join(skipped)]
    lines += ["", *(f"![{name}]({file})" for name, file in plots.items())]
    if report.get("notes"):
        lines += ["", "## Notes", "", *(f"- {n}" for n in report["notes"])]
    return "\n".join(lines) + "\n"


def _f(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_perf_report(report: dict, sweeps: list[Sweep], json_path: Path) -> list[Path]:
    """Write ``report`` as JSON, Markdown (with PNG plots beside it) and one self-contained HTML page."""
    json_path = Path(json_path)
    stem = json_path.with_suffix("")
    pngs = {
        "throughput vs p99": (throughput_latency_plot(sweeps, report["headline"]["p99_budget_ms"]), Path(f"{stem}_throughput_p99.png")),
        "latency breakdown": (breakdown_plot(sweeps), Path(f"{stem}_breakdown.png")),
    }
    for data, path in pngs.values():
        path.write_bytes(data)
    atomic_write_json(json_path, report)
    md = _markdown(report, {name: path.name for name, (_, path) in pngs.items()})
    atomic_write_text(json_path.with_suffix(".md"), md)
    images = "".join(
        f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        for name, (data, _) in pngs.items()
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(report.get('data', 'perf'))}</title><pre>{html.escape(md)}</pre>{images}"
    )
    atomic_write_text(json_path.with_suffix(".html"), page)
    return [json_path, json_path.with_suffix(".md"), json_path.with_suffix(".html"), *(p for _, p in pngs.values())]
