"""`python -m bench.drift_study`: see bench/drift_study/__init__.py and bench/README.md."""

from bench.drift_study import main

if __name__ == "__main__":
    raise SystemExit(main())
