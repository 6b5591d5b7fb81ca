"""Beyond the paper: `nsjax detect` as a script (same flags); writes OUT/report.{json,md} and
OUT/figures/.

    python scripts/beyond_detect.py --data-dir ../shared/data --out results/beyond/detect
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    console(["detect", *sys.argv[1:]])
