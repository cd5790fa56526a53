"""Compression reports: the JSON of :func:`toolkit.optimize.pipeline.compress_and_report` as Markdown."""

from __future__ import annotations

from pathlib import Path

from toolkit._io import atomic_write_json, atomic_write_text

__all__ = ["report_markdown", "write_report"]


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def report_markdown(report: dict) -> str:
    """A Markdown page: how it was measured, then one row per variant with ratios to both baselines."""
    lines = [f"# Compression report: {report.get('data', '')}", ""]
    if "command" in report:
        lines += [f"Command: `{report['command']}`", ""]
    machine = report.get("machine")
    if machine:
        lines += [
            f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores; one thread per variant; "
            f"torch {machine.get('torch')}, onnxruntime {machine.get('onnxruntime')}",
            "",
        ]
    cpu = report.get("cpu")
    if cpu:
        int8 = report.get("int8", {})
        lines += [
            f"CPU features seen: {', '.join(cpu.get('simd_flags', []))} (target `{cpu.get('cpu_target')}`); "
            f"INT8 weights: reduce_range={int8.get('reduce_range')} ({int8.get('reason', '')})",
            "",
        ]
    lines += [
        "| variant | params | size MB | size ratio | MACs/sample | test AUC | AUC ratio | within budget | "
        "b1 latency ms | b256 rows/s | × PyTorch | × ONNX FP32 |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for v in report["variants"]:
        within = "–" if v["within_budget"] is None else ("yes" if v["within_budget"] else "**NO**")
        lines.append(
            f"| {v['name']} | {v['params']:,} | {v['size_bytes'] / 1e6:.2f} | {v['size_ratio']:.3f} | {v['macs_per_sample']:,} | "
            f"{_fmt(v['test_auc'], '.4f')} | {_fmt(v['auc_ratio'], '.4f')} | {within} | {v['latency_ms_b1']:.3f} | "
            f"{v['throughput_rps_b256']:,.0f} | {v['throughput_vs_pytorch_b256']:.2f} | {v['throughput_vs_onnx_b256']:.2f} |"
        )
    chosen = [v for v in report["variants"] if v.get("selection", {}).get("selection", {}).get("steps")]
    if chosen:
        lines += ["", "## Steps kept on this CPU", ""]
        for v in chosen:
            lines.append(f"- **{v['name']}** keeps {', '.join(v.get('steps', [])) or 'no step'}:")
            lines += [f"  - {step}: {verdict['reason']}" for step, verdict in v["selection"]["selection"]["steps"].items()]
            rows = v["selection"]["selection"].get("measured", {})
            if rows:
                lines.append(
                    "  - measured on the validation split: "
                    + "; ".join(
                        f"{name} {r['throughput_rps_b256']:,.0f} rows/s, {r['latency_ms_b1']:.3f} ms, AUC {_fmt(r['auc_ratio'], '.4f')}x"
                        for name, r in rows.items()
                    )
                )
    for key in ("targets", "notes"):
        if report.get(key):
            lines += ["", f"## {key.capitalize()}", ""]
            items = report[key]
            if isinstance(items, dict):
                lines += [f"- {k}: {v}" for k, v in items.items()]
            else:
                lines += [f"- {v}" for v in items]
    return "\n".join(lines) + "\n"


def write_report(report: dict, json_path: Path) -> tuple[Path, Path]:
    """Write ``report`` as JSON at ``json_path`` and as Markdown next to it (same stem, ``.md``)."""
    json_path = Path(json_path)
    md_path = json_path.with_suffix(".md")
    atomic_write_json(json_path, report)
    atomic_write_text(md_path, report_markdown(report))
    return json_path, md_path
