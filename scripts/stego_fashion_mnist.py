"""Paper experiment (Sec. 4.2): null-space steganography on fashion_mnist,
beside the paper's numbers.

    python scripts/stego_fashion_mnist.py --data-dir ../shared/data --out results/fashion_mnist

Same flags as ``nsjax stego``; a dataset that is not present is reported as not run.
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    args = ["stego", "--dataset", "fashion_mnist", "--out", "results/fashion_mnist",
            "--cover-dataset", "mnist"]
    console([*args, *sys.argv[1:]])
