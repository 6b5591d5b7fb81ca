"""Paper experiment (Sec. 4.2): null-space steganography on cifar10,
beside the paper's numbers.

    python scripts/stego_cifar10.py --data-dir ../shared/data --out results/cifar10

Same flags as ``nsjax stego``; a dataset that is not present is reported as not run.
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    args = ["stego", "--dataset", "cifar10", "--out", "results/cifar10"]
    console([*args, *sys.argv[1:]])
