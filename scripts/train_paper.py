#!/usr/bin/env python
"""Train the paper's (784, 32, 16, 10) ReLU net (Sec. 4.1-4.2) on MNIST and Fashion-MNIST.

    python scripts/train_paper.py --data-dir ../shared/data --out runs/paper

For each dataset :func:`nsjax.experiments.train_and_evaluate` with the dataset's recipe
(checkpoint in ``OUT/<dataset>/``), then ``OUT/results.json`` and ``OUT/results.md`` put
our figures beside the paper's (:data:`nsjax.experiments.PAPER`).  How the recipes were
chosen: ``docs/results/training.md``.
"""

import argparse
import sys

from nsjax.experiments import run_train_paper

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="folder holding the dataset folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--datasets", default="mnist,fashion_mnist")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args()
    results = run_train_paper(a.out, data_dir=a.data_dir, datasets=a.datasets.split(","),
                              epochs=a.epochs, seed=a.seed, progress=not a.no_progress)
    sys.exit(0 if any("not_run" not in r for r in results.values()) else 1)
