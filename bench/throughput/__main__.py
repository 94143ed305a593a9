"""`python -m bench.throughput`: see bench/throughput/__init__.py and bench/README.md."""

import sys

from bench.throughput import main

if __name__ == "__main__":
    sys.exit(main())
