"""Paper experiment: null-space stego on mnist (paper Sec. 4) beside the paper's table.

    python scripts/stego_mnist.py --data-dir ../shared/data --out results/mnist
"""

import sys

from nsjax._demo import script_main

if __name__ == "__main__":
    sys.exit(script_main("mnist", cover_dataset="fashion_mnist"))
