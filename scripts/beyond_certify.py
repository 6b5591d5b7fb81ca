"""Beyond the paper: `nsjax certify` as a script (same flags); writes OUT/report.{json,md} and
OUT/figures/.

    python scripts/beyond_certify.py --data-dir ../shared/data --out results/beyond/certify
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    console(["certify", *sys.argv[1:]])
