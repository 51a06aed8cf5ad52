"""The lab's summary report: `reports/index.html` and `reports/index.md`.

Modules: `claims` (the source article's claims and which metric would measure each), `sources`
(measurements from the MLflow store and from committed records under `reports/records/`),
`build` (selecting what to show), `render` (HTML and Markdown), `cli` (`lab report`).
"""
