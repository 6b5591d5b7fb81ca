"""Paper experiment: null-space stego on fashion_mnist (paper Sec. 4) beside the paper's table.

    python scripts/stego_fashion_mnist.py --data-dir ../shared/data --out results/fashion_mnist
"""

import sys

from nsjax._demo import script_main

if __name__ == "__main__":
    sys.exit(script_main("fashion_mnist", cover_dataset="mnist"))
