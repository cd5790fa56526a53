"""Rich tables that render a stage's report, shared by the commands that print it (presentation only).

``tritonrec train`` and ``tritonrec demo`` print the training report; ``tritonrec verify`` and
``tritonrec demo`` print the verification report. Imports nothing heavy: the reports' types are
only named for type checkers, so ``tritonrec --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from toolkit.serving.verify import VerifyReport
    from toolkit.train import TrainReport

__all__ = ["ARCHITECTURE_TITLES", "train_report_table", "verify_report_table", "verify_report_notes"]

#: How the tables name the registered architectures (others appear under their registry name).
ARCHITECTURE_TITLES = {"dlrm": "DLRM", "dcnv2": "DCN-v2", "deepfm": "DeepFM"}

_VERIFY_STYLE = {"pass": "green", "fail": "bold red", "reference": "cyan", "not loaded": "yellow", "skipped": "dim"}


def train_report_table(report: TrainReport) -> Table:
    """Test AUC and log loss of the trained model and its baselines."""
    table = Table(title="Test split (random 80/10/10)")
    for column in ("model", "test AUC", "test log loss"):
        table.add_column(column, justify="right" if column != "model" else "left")
    table.add_row(
        ARCHITECTURE_TITLES.get(report.architecture, report.architecture),
        f"{report.test_auc:.4f}",
        f"{report.test_log_loss:.4f}",
        style="bold",
    )
    for b in report.baselines:
        table.add_row(f"{b.name} ({b.detail})", f"{b.test_auc:.4f}", f"{b.test_log_loss:.4f}")
    return table


def verify_report_table(report: VerifyReport) -> Table:
    """The verification report for people: one row per model (the reasons are in :func:`verify_report_notes`)."""
    references = ", ".join(f"{r['model']} AUC {r['auc']:.6f}" for r in report.references.values())
    table = Table(title=f"{report.repository}: {report.n_rows:,} test rows over {report.protocol}; reference {references}")
    numbers = ("max |Δp| vs PyTorch", "served AUC")
    for column in ("model", "variant", "precision", "status", *numbers, "tolerance"):
        table.add_column(column, justify="right" if column in numbers else "left", no_wrap=column in ("model", "status"))
    for r in report.results:
        style = _VERIFY_STYLE.get(r.status, "")
        table.add_row(
            r.model,
            r.variant or "-",
            r.precision or ("unknown" if r.role in ("ranker", "ensemble") else "-"),
            f"[{style}]{r.status}[/{style}]" if style else r.status,
            "-" if r.max_abs_diff is None or r.status == "reference" else f"{r.max_abs_diff:.2e}",
            "-" if r.auc is None else f"{r.auc:.6f}",
            r.tolerance.describe() if r.tolerance else "-",
        )
    return table


def verify_report_notes(report: VerifyReport) -> list[str]:
    """One line per model with something to say: why it failed, was not loaded or skipped, or what was assumed."""
    return [f"{r.model} ({r.status}): {r.reason}" for r in report.results if r.reason and r.status != "reference"]
