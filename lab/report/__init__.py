"""The lab's summary report: the article's claims next to full-scale measurements, and every notebook's runs.

Where it goes: `lab report` (what `make lab` runs) writes `runs/report/index.{html,md}` from the MLflow
store plus the committed records; it is generated output and gitignored, so running the lab leaves
`git status` clean. The tracked `reports/index.md` and `reports/index.html` are built from the committed
records under `reports/records/` alone, byte for byte the same from the same records (the time they state
is the newest record's, plots and NOTE.md files are linked where they lie). Regenerate them after adding or
changing a committed record, a claim or the renderer, with:

    .venv/bin/lab report --committed

Modules: `claims` (the article's claims: hardware, notebook, metric, rule), `rules` (when a value meets a
claim), `scale` (only full-scale runs stand for claims; smoke runs are shown apart), `sources` (measurements
from records and MLflow), `provenance` (hardware and code in words), `formatting`, `build` (what to show),
`render` (HTML and Markdown), `cli` (`lab report`).
"""
