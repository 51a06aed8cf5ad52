"""`python -m lab.engine.benchmark --presets P[,P] --out DIR`: the offline suite without the `lab` CLI.

For GPU machines that lack the notebook stack and MLflow; `lab bench offline` runs the same suite
and also logs the record to MLflow.
"""
from __future__ import annotations

import argparse

from lab.engine.benchmark.cli import add_arguments, run


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.engine.benchmark")
    add_arguments(ap)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
