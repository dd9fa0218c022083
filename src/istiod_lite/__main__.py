"""`python -m istiod_lite` runs the command line."""

from istiod_lite.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
