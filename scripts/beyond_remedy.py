"""Beyond the paper: `nsjax remedy` as a script (same flags); writes OUT/report.{json,md} and
OUT/figures/.

    python scripts/beyond_remedy.py --data-dir ../shared/data --out results/beyond/remedy
"""

import sys

from nsjax._cli_beyond import script_main

if __name__ == "__main__":
    sys.exit(script_main("remedy"))
