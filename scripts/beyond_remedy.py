"""Beyond the paper: `nsjax remedy` as a script (same flags); writes OUT/report.{json,md} and
OUT/figures/.

    python scripts/beyond_remedy.py --data-dir ../shared/data --out results/beyond/remedy
"""

import sys

from nsjax.cli import console

if __name__ == "__main__":
    console(["remedy", *sys.argv[1:]])
