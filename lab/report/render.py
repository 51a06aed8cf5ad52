"""Render a `Report` as a self-contained HTML page and as Markdown (same content, same order).

Contract: pure functions of the report value; every text from runs is escaped (HTML) or has its
table-breaking characters replaced (Markdown). Images are referenced relative to the report folder.
"""

from __future__ import annotations

import html

from lab.report.build import NOT_MEASURED, Report, ShownMeasurement, format_value

TITLE = "DeepSeek serving lab: results"
INTRO = (
    "Claims of the source article next to what this lab measured, and the latest run of every "
    "notebook per profile. Regenerate with `lab report`."
)
STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; width: 100%; }
th, td { border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; font-size: .9rem; }
th { background: #f3f3f3; } td.missing { color: #999; font-style: italic; }
img { max-width: 100%; border: 1px solid #eee; margin: .5rem 0; } code { font-size: .85rem; }
"""

CLAIM_HEADERS = ("id", "claim", "article", "measured", "device", "profile", "run / record")


def _metrics_text(shown: ShownMeasurement) -> list[tuple[str, str]]:
    return [(name, format_value(value)) for name, value in sorted(shown.measurement.metrics.items())]


def _claim_cells(report: Report) -> list[tuple[str, ...]]:
    return [
        (row.claim.id, row.claim.text, f"{row.claim.article_value} {row.claim.unit}", row.measured,
         row.device, row.profile, row.source)
        for row in report.claims
    ]


# --- HTML ---------------------------------------------------------------------------------------
def _html_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="missing">{html.escape(c)}</td>' if c == NOT_MEASURED else f"<td>{html.escape(c)}</td>"
            for c in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Report) -> str:
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(TITLE)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(TITLE)}</h1><p>{html.escape(INTRO)}</p>",
        f"<p>Generated {html.escape(report.generated_at)} from: "
        + "; ".join(f"<code>{html.escape(s)}</code>" for s in report.sources) + "</p>",
        "<h2>Claims of the article</h2>",
        _html_table(CLAIM_HEADERS, _claim_cells(report)),
        "<h2>Notebooks</h2>",
    ]
    if not report.notebooks:
        parts.append("<p>No runs yet: run <code>lab reproduce</code> or import records.</p>")
    for section in report.notebooks:
        parts.append(f"<h3>{html.escape(section.notebook)}</h3>")
        for shown in section.latest:
            m = shown.measurement
            parts.append(
                f"<h4>profile {html.escape(m.profile)} &middot; {html.escape(m.device)} &middot; "
                f"{html.escape(m.created_at.isoformat(timespec='seconds'))}</h4>"
                f"<p><code>{html.escape(m.source)}</code></p>"
            )
            parts.append(_html_table(("metric", "value"), _metrics_text(shown)))
            parts += [f'<img src="{html.escape(p)}" alt="{html.escape(p)}">' for p in shown.plots]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- Markdown -----------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(report: Report) -> str:
    lines = [f"# {TITLE}", "", INTRO, "", f"Generated {report.generated_at} from: "
             + "; ".join(f"`{s}`" for s in report.sources), "", "## Claims of the article", ""]
    lines += _md_table(CLAIM_HEADERS, _claim_cells(report))
    lines += ["## Notebooks", ""]
    if not report.notebooks:
        lines += ["No runs yet: run `lab reproduce` or import records.", ""]
    for section in report.notebooks:
        lines += [f"### {section.notebook}", ""]
        for shown in section.latest:
            m = shown.measurement
            lines += [f"#### profile {m.profile} · {m.device} · {m.created_at.isoformat(timespec='seconds')}", "",
                      f"`{m.source}`", ""]
            lines += _md_table(("metric", "value"), _metrics_text(shown))
            lines += [f"![{p}]({p})" for p in shown.plots] + ([""] if shown.plots else [])
    return "\n".join(lines)
