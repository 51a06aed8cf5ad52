"""`lab report`: the claims table and the latest runs, as index.html and index.md (see `lab.report.build`).

Two outputs, so that running the lab never rewrites a tracked file:
- `lab report` summarises your MLflow store plus the committed records into `runs/report/` (gitignored);
- `lab report --committed` rebuilds the tracked `reports/index.html` and `reports/index.md` from
  `reports/records/` alone: deterministic, so the same records give the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lab.errors import LabError
from lab.track.cli import add_tracking_uri_option

REPORT_FOLDER = "report"  # under runs/


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="build runs/report/index.html and index.md (claims table, latest runs, plots)",
        description="Summarise the MLflow store and committed records (reports/records/): the article's "
        "claims next to full-scale measured values, the latest run of every notebook per profile, and smoke "
        "runs apart. --committed rebuilds the tracked reports/index.{html,md} from committed records only.",
    )
    parser.add_argument("--out", type=Path, help="output folder (default: <root>/runs/report)")
    add_tracking_uri_option(parser)
    parser.add_argument("--records-dir", type=Path,
                        help="committed records to include (default: <root>/reports/records)")
    parser.add_argument("--no-mlflow", action="store_true", help="use committed records only")
    parser.add_argument("--committed", action="store_true",
                        help="rebuild the tracked reports/index.{html,md} from reports/records only")
    parser.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    from lab.paths import ProjectLayout
    from lab.report.build import build_report

    layout = ProjectLayout.discover()
    if args.committed:
        given = [flag for flag, value in (("--out", args.out), ("--tracking-uri", args.tracking_uri),
                                          ("--records-dir", args.records_dir)) if value]
        if given:
            raise LabError(f"--committed builds from reports/records into reports/: drop {', '.join(given)}")
        files = build_report(layout.reports_dir, records_dir=layout.committed_records_dir, use_mlflow=False)
    else:
        files = build_report(args.out or layout.runs_dir / REPORT_FOLDER, tracking_uri=args.tracking_uri,
                             records_dir=args.records_dir, use_mlflow=not args.no_mlflow)
    print(f"wrote {files.html} and {files.markdown}")
    return 0
