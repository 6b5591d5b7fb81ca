"""Paper experiment: null-space stego on cifar10 (paper Sec. 4) beside the paper's table.

    python scripts/stego_cifar10.py --data-dir ../shared/data --out results/cifar10
"""

import sys

from nsjax._demo import script_main

if __name__ == "__main__":
    sys.exit(script_main("cifar10", cover_dataset=None))
