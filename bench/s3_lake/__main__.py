"""`python -m bench.s3_lake`: see bench/s3_lake/__init__.py and bench/README.md."""

from bench.s3_lake import main

if __name__ == "__main__":
    main()
