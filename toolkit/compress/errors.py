"""The compress stage's refusal of one step: the step cannot apply to this model, the others still run."""

from __future__ import annotations

from toolkit.errors import CompressError

__all__ = ["StepRefused", "StepSkipped"]


class StepRefused(CompressError):
    """A recipe step that cannot apply to this model (an unsupported layer, no layer of the kind it
    changes, no rows to train on); the message names the module path and why.

    :func:`toolkit.optimize.compress_module` records it as the step's reason and runs the other
    steps; called on its own, the step raises it like any :class:`~toolkit.errors.CompressError`.

    Args:
        step: the step's ``kind`` (``"prune"``, ``"quantize_embeddings"``, ...).
        message: what cannot be done and why (one line).
        hint: what the user can do instead (optional).
    """

    def __init__(self, step: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.step = step


class StepSkipped(StepRefused):
    """A recipe step that needs what was not given (labelled rows to train on); recorded as skipped, with the reason."""
