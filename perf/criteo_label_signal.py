"""How much of the Criteo-shaped labels' signal is in the hidden pairwise interactions.

Samples rows from the generator (toolkit/data/criteo.py) with their hidden logits and prints the
AUC of the true logits, of the linear terms alone and of the interaction term alone:

    .venv/bin/python perf/criteo_label_signal.py --rows 50000
"""

from __future__ import annotations

import argparse

import numpy as np

from toolkit.data import criteo
from toolkit.metrics import auc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    samplers = [criteo._ZipfSampler(n, 1.2) for n in criteo.criteo_cardinalities()]
    rng = np.random.default_rng(args.seed)
    chunk, logits = criteo._sample_chunk(rng, args.rows, samplers)
    interactions = criteo._interactions(chunk.ranks)
    labels = rng.random(len(logits)) < criteo._sigmoid(logits + criteo._label_bias(samplers))
    print(f"rows {args.rows:,}, positive rate {labels.mean():.3f}")
    print(f"AUC of the true logits:         {auc(labels, logits):.3f}")
    print(f"AUC of the linear terms alone:  {auc(labels, logits - interactions):.3f}")
    print(f"AUC of the interactions alone:  {auc(labels, interactions):.3f}")


if __name__ == "__main__":
    main()
