"""Steganography on CNNs: VALID / patch first layers (a null space) vs SAME (none).

    python scripts/stego_cnn.py --out results/stego_cnn                       # embedded MNIST
    python scripts/stego_cnn.py --data-dir ../shared/data --source files --out results/stego_cnn

Same flags as ``nsjax cnn-stego`` (:func:`nsjax.experiments.run_cnn_stego`).
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    console(["cnn-stego", *sys.argv[1:]])
