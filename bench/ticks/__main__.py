"""`python -m bench.ticks`: see bench/ticks/__init__.py and bench/README.md."""

import sys

from bench.ticks import main

if __name__ == "__main__":
    sys.exit(main())
