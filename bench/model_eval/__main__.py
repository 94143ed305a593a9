"""`python -m bench.model_eval`: see bench/model_eval/__init__.py and bench/README.md."""

import sys

from bench.model_eval import main

if __name__ == "__main__":
    sys.exit(main())
