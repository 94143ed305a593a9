"""`python -m bench.freshness`: see bench/freshness/__init__.py and bench/README.md."""

from bench.freshness import main

if __name__ == "__main__":
    main()
