"""Paper experiment (Sec. 4.2): null-space steganography on emnist_balanced,
beside the paper's numbers.

    python scripts/stego_emnist_balanced.py --data-dir ../shared/data --out results/emnist_balanced

Same flags as ``nsjax stego``; a dataset that is not present is reported as not run.
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    args = ["stego", "--dataset", "emnist_balanced", "--out", "results/emnist_balanced"]
    console([*args, *sys.argv[1:]])
