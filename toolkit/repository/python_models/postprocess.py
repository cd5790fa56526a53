"""Triton Python-backend model: one user's scored candidates -> the top K items.

Copied by ``tritonrec build`` as ``<model>_postprocess/<version>/model.py``; the last step
of the ``<model>_topk`` ensemble. It does not batch (``max_batch_size: 0``): one request is
one user's candidate list of N rows.

Inputs: ``item_id`` BYTES [N, 1] (the candidates, as the request sent them) and
``probability`` [N, 1] (the ranker's score of each candidate, any float dtype).

Outputs: ``top_item_ids`` BYTES [K] and ``top_scores`` FP32 [K], K = min(top_k, N), sorted
by descending score; equal scores keep the candidates' input order.

Model parameters (``config.pbtxt`` ``parameters``): ``top_k`` (default ``"10"``).

Self-contained (numpy and ``triton_python_backend_utils`` only); the ranking is the
module-level :func:`top_k`, importable without Triton.
"""

import json

import numpy as np


def top_k(item_ids, scores, k):
    """The ``k`` best-scored items.

    Args:
        item_ids: [N] or [N, 1] array of the candidates' ids (any dtype, returned as given).
        scores: [N] or [N, 1] float scores.
        k: how many to keep (>= 1); fewer when N < k.

    Returns:
        ``(ids [K], scores float32 [K])``, K = min(k, N), by descending score, ties in input order.

    Raises:
        ValueError: ``k < 1`` or a different number of ids and scores.
    """
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    ids = np.asarray(item_ids).reshape(-1)
    values = np.asarray(scores).reshape(-1).astype(np.float32)
    if ids.shape[0] != values.shape[0]:
        raise ValueError(f"{ids.shape[0]} item ids but {values.shape[0]} scores")
    order = np.argsort(-values, kind="stable")[:k]  # stable: equal scores keep input order
    return ids[order], values[order]


class TritonPythonModel:
    """Triton entry point: :func:`top_k` per request."""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.k = int(params.get("top_k", "10"))
        if self.k < 1:
            raise ValueError(f"parameter top_k must be >= 1, got {self.k}")

    def execute(self, requests):
        pb_utils = self.pb_utils
        responses = []
        for request in requests:
            try:
                ids = pb_utils.get_input_tensor_by_name(request, "item_id").as_numpy()
                scores = pb_utils.get_input_tensor_by_name(request, "probability").as_numpy()
                best_ids, best_scores = top_k(ids, scores, self.k)
            except ValueError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"postprocess: {exc}")))
                continue
            out_ids = np.empty(best_ids.shape, dtype=object)
            out_ids[:] = list(best_ids)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("top_item_ids", out_ids), pb_utils.Tensor("top_scores", np.ascontiguousarray(best_scores))]
                )
            )
        return responses
