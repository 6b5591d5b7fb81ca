"""Paper experiment: null-space stego on emnist_balanced (paper Sec. 4) beside the paper's table.

    python scripts/stego_emnist_balanced.py --data-dir ../shared/data --out results/emnist_balanced
"""

import sys

from nsjax._demo import script_main

if __name__ == "__main__":
    sys.exit(script_main("emnist_balanced", cover_dataset="mnist"))
