"""Render a `Report` as a self-contained HTML page and as Markdown (same content, same order).

Contract: pure functions of the report value. Prose is written once, in Markdown's inline syntax
(`code`); the HTML side turns it into <code> after escaping. Every text from runs is escaped (HTML) or
has its table-breaking characters replaced (Markdown). Links are relative to the report folder.
"""

from __future__ import annotations

import html
import re

from lab.report.build import Link, NotebookSection, Report, ShownMeasurement
from lab.report.formatting import format_value
from lab.report.rules import Status

TITLE = "DeepSeek serving lab: results"
INTRO = (
    "Claims of the source article next to what this lab measured at full scale, and the latest run of every "
    "notebook per profile. `lab report` writes this page for your runs to `runs/report/`; the committed "
    "`reports/index.md` is rebuilt from `reports/records/` alone by `lab report --committed`."
)
CLAIMS_INTRO = (
    "The article's numbers come from the hardware it names, when it names one (its benchmark: 16 A100s); "
    "ours from the card or CPU in the \"our hardware\" column, so absolute values are not comparable and a "
    "\"before -> after\" claim is met by our own ratio, measured in one run. The failures the article reports "
    "for its native deployment are problems, not targets: they are \"reproduced\" or \"milder here\". "
    "A smoke run never stands for a claim. Rules: `lab/report/rules.py`."
)
SMOKE_TITLE = "Smoke runs (check the road, not a claim)"
SMOKE_INTRO = (
    "Runs at the `smoke` profile's tiny scale, and runs by hand not committed under `reports/records/`: "
    "they show that every notebook runs end to end on this machine; their numbers stand for no claim."
)
NO_SMOKE = "No smoke runs in these sources: `lab reproduce --profile smoke`, then `lab report`."
NO_RUNS = "No full-scale runs yet: run `lab reproduce --profile gpu` or commit records under `reports/records/`."
BY_HAND = "none (run by hand)"
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; width: 100%; }
th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; font-size: .9rem; }
th { background: #f3f3f3; } td.missing { color: #999; font-style: italic; }
td.met { color: #17612b; font-weight: 600; } td.not-met { color: #a3261b; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; margin: .5rem 0; } code { font-size: .85rem; }
"""

CLAIM_HEADERS = ("id", "claim", "notebook", "article", "article hardware", "measured", "our hardware",
                 "met when", "verdict", "record")
VERDICT_CLASSES = {Status.MET: "met", Status.NOT_MET: "not-met", Status.NOT_MEASURED: "missing"}
LINK_SEPARATOR = " · "


def _claim_rows(report: Report) -> list[tuple[tuple[str, ...], tuple[Link, ...], Status]]:
    rows = []
    for row in report.claims:
        claim = row.claim
        notebook = f"{claim.experiment} ({row.pending})" if row.pending else claim.experiment
        cells = (claim.id, claim.text, notebook, f"{claim.article_value} {claim.unit}", claim.article_hardware,
                 row.measured, row.hardware, claim.rule.describe(claim.unit), row.judgement.status.value)
        rows.append((cells, row.links, row.judgement.status))
    return rows


def _metrics_rows(shown: ShownMeasurement) -> list[tuple[str, str]]:
    return [(name, format_value(value)) for name, value in sorted(shown.measurement.metrics.items())]


def _heading(shown: ShownMeasurement) -> str:
    m = shown.measurement
    return f"profile {m.profile or BY_HAND} · {m.hardware} · {m.created_at.isoformat(timespec='seconds')}"


def _built_from(report: Report) -> str:
    newest = f"; newest record {report.newest}" if report.newest else "; no records"
    return "Built from " + "; ".join(f"`{s}`" for s in report.sources) + newest + "."


# --- HTML ---------------------------------------------------------------------------------------
def _inline(text: str) -> str:
    """Escape, then render Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_links(links: tuple[Link, ...]) -> str:
    return LINK_SEPARATOR.join(
        f'<a href="{html.escape(link.href)}">{html.escape(link.text)}</a>' if link.href else html.escape(link.text)
        for link in links
    )


def _html_cell(text: str) -> str:
    css = ' class="missing"' if text == Status.NOT_MEASURED.value else ""
    return f"<td{css}>{html.escape(text)}</td>"


def _html_row(cells: tuple[str, ...]) -> str:
    return f"<tr>{''.join(_html_cell(c) for c in cells)}</tr>"


def _html_claim_row(cells: tuple[str, ...], links: tuple[Link, ...], status: Status) -> str:
    verdict = f'<td class="{VERDICT_CLASSES.get(status, "problem")}">{html.escape(cells[-1])}</td>'
    return f"<tr>{''.join(_html_cell(c) for c in cells[:-1])}{verdict}<td>{_html_links(links)}</td></tr>"


def _html_table(headers: tuple[str, ...], rows: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html_sections(sections: tuple[NotebookSection, ...], empty: str) -> list[str]:
    parts = [] if sections else [f"<p>{_inline(empty)}</p>"]
    for section in sections:
        parts.append(f"<h3>{html.escape(section.notebook)}</h3>")
        for shown in section.latest:
            parts.append(f"<h4>{html.escape(_heading(shown))}</h4>")
            code = html.escape(shown.measurement.code)
            parts.append(f"<p>{_html_links(shown.links)}{LINK_SEPARATOR}code: {code}</p>")
            parts.append(_html_table(("metric", "value"), [_html_row(r) for r in _metrics_rows(shown)]))
            parts += [f'<img src="{html.escape(p)}" alt="{html.escape(p.rsplit("/", 1)[-1])}">' for p in shown.plots]
    return parts


def render_html(report: Report) -> str:
    claim_rows = [_html_claim_row(cells, links, status) for cells, links, status in _claim_rows(report)]
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(TITLE)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1>", f"<p>{_inline(INTRO)}</p>", f"<p>{_inline(_built_from(report))}</p>",
        "<h2>Claims of the article</h2>", f"<p>{_inline(CLAIMS_INTRO)}</p>",
        _html_table(CLAIM_HEADERS, claim_rows),
        "<h2>Notebooks (full scale)</h2>", *_html_sections(report.notebooks, NO_RUNS),
        f"<h2>{html.escape(SMOKE_TITLE)}</h2>", f"<p>{_inline(SMOKE_INTRO)}</p>",
        *_html_sections(report.smoke, NO_SMOKE),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# --- Markdown -----------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_links(links: tuple[Link, ...]) -> str:
    return LINK_SEPARATOR.join(f"[{link.text}]({link.href})" if link.href else link.text for link in links)


def _md_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _md_sections(sections: tuple[NotebookSection, ...], empty: str) -> list[str]:
    lines = [] if sections else [empty, ""]
    for section in sections:
        lines += [f"### {section.notebook}", ""]
        for shown in section.latest:
            lines += [f"#### {_heading(shown)}", "",
                      f"{_md_links(shown.links)}{LINK_SEPARATOR}code: {shown.measurement.code}", ""]
            lines += _md_table(("metric", "value"), _metrics_rows(shown))
            lines += [f"![{p.rsplit('/', 1)[-1]}]({p})" for p in shown.plots] + ([""] if shown.plots else [])
    return lines


def render_markdown(report: Report) -> str:
    lines = [f"# {TITLE}", "", INTRO, "", _built_from(report), "", "## Claims of the article", "", CLAIMS_INTRO, ""]
    lines += _md_table(CLAIM_HEADERS, [(*cells, _md_links(links)) for cells, links, _ in _claim_rows(report)])
    lines += ["## Notebooks (full scale)", "", *_md_sections(report.notebooks, NO_RUNS)]
    lines += [f"## {SMOKE_TITLE}", "", SMOKE_INTRO, "", *_md_sections(report.smoke, NO_SMOKE)]
    return "\n".join(lines)
