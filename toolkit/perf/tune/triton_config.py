"""Candidates to Triton model configs and back.

A candidate's config is the served model's own ``config.pbtxt`` with the candidate's knobs set
through :func:`toolkit.repository.config.retuned_config` (the writer every config of the
toolkit goes through); :func:`candidate_from_config` reads the knobs a config sets, which is
where :class:`~toolkit.perf.tune.search.CoordinateSearch` starts.
"""

from __future__ import annotations

from toolkit.perf.tune.space import Candidate
from toolkit.repository.config import ModelConfig, config_to_json, retuned_config, thread_parameter_keys

__all__ = ["candidate_config", "candidate_from_config", "config_json"]

#: The JSON Triton's ``load_model(name, config=...)`` takes (field names as in ``config.pbtxt``).
config_json = config_to_json


def _thread_keys(config: ModelConfig) -> tuple[str, str]:
    """The ``parameters`` keys for ONNX Runtime's threads: the onnxruntime backend's, or our Python runners'."""
    return thread_parameter_keys(platform=config.platform, backend=config.backend)


def candidate_config(base: ModelConfig, candidate: Candidate) -> ModelConfig:
    """A copy of ``base`` with the candidate's knobs set (``max_batch_size``, the instance group's
    count, dynamic batching's queue delay and preferred batch sizes, the ONNX Runtime thread
    ``parameters``); tensors, backend and everything else are kept. Written by
    :func:`toolkit.repository.config.retuned_config`.

    Raises:
        RepositoryError: ``base`` does not batch (``max_batch_size: 0``: its dims include the
            batch dimension, so batching cannot be switched on by the config alone), or has
            several instance groups.
    """
    return retuned_config(
        base,
        max_batch_size=candidate.max_batch_size,
        instance_count=candidate.instance_count,
        max_queue_delay_us=candidate.max_queue_delay_us,
        preferred_batch_sizes=candidate.preferred_batch_sizes,
        intra_op_threads=candidate.intra_op_threads,
        inter_op_threads=candidate.inter_op_threads,
    )


def candidate_from_config(config: ModelConfig) -> Candidate:
    """The knobs ``config`` sets (missing ones at their Triton / runner defaults)."""
    intra, inter = _thread_keys(config)
    params = config.parameters
    return Candidate(
        instance_count=config.instance_group[0].count if config.instance_group and config.instance_group[0].count else 1,
        max_queue_delay_us=int(config.dynamic_batching.max_queue_delay_microseconds) if config.HasField("dynamic_batching") else 0,
        max_batch_size=int(config.max_batch_size),
        preferred_batch_sizes=tuple(int(b) for b in config.dynamic_batching.preferred_batch_size),
        intra_op_threads=int(params[intra].string_value) if intra in params else 1,
        inter_op_threads=int(params[inter].string_value) if inter in params else 1,
    )
