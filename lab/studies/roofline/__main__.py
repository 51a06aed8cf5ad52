"""`python -m lab.studies.roofline --presets P[,P] --out DIR`: the offline suite without the `lab` CLI.

For GPU machines that lack the notebook stack and MLflow; `lab bench offline` runs the same suite
and also logs the record to MLflow.
"""
from __future__ import annotations

import argparse

from lab.studies.roofline.cli import add_arguments, run


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m lab.studies.roofline")
    add_arguments(ap)
    run(ap.parse_args())


if __name__ == "__main__":
    main()
