import sys

from nsjax.cli import main

sys.exit(main())
