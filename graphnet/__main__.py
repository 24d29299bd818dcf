"""`python -m graphnet train ...`: the same as the `graphnet` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
