"""`python -m bench.backfill`: see bench/backfill/__init__.py and bench/README.md."""

from bench.backfill import main

if __name__ == "__main__":
    main()
