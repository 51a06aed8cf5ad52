"""`lab report`: write reports/index.html and reports/index.md (see `lab.report.build`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.track.cli import add_tracking_uri_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build reports/index.html and index.md (claims table, latest runs, plots)",
        description="Summarise the MLflow store and committed records (reports/records/*.json): the "
        "article's claims next to measured values, and the latest run of every notebook per profile.",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: <root>/reports)")
    add_tracking_uri_option(parser)
    parser.add_argument("--records-dir", type=Path,
                        help="committed records to include (default: <root>/reports/records)")
    parser.add_argument("--no-mlflow", action="store_true", help="use committed records only")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from lab.paths import ProjectLayout
    from lab.report.build import build_report

    out = args.out or ProjectLayout.discover().reports_dir
    files = build_report(out, tracking_uri=args.tracking_uri, records_dir=args.records_dir,
                         use_mlflow=not args.no_mlflow)
    print(f"wrote {files.html} and {files.markdown}")
    return 0
