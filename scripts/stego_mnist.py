"""Paper experiment (Sec. 4.1): null-space steganography on mnist,
beside the paper's numbers.

    python scripts/stego_mnist.py --data-dir ../shared/data --out results/mnist

Same flags as ``nsjax stego``; a dataset that is not present is reported as not run.
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    args = ["stego", "--dataset", "mnist", "--out", "results/mnist",
            "--cover-dataset", "fashion_mnist"]
    console([*args, *sys.argv[1:]])
