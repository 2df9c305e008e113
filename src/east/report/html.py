"""One self-contained ``index.html`` with every table and figure of a report.

It works offline and alone: the style is inline, the figures are embedded as ``data:`` URIs
(a copy of the page without the ``figures/`` folder still shows them), and nothing is loaded
from the network (no fonts, scripts or style sheets from elsewhere)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path

from east.report.tables import Table

__all__ = ["STYLE", "table_html", "write_index"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
.scroll { overflow-x: auto; margin: 0.5em 0 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.paper { color: #777; }
.caption { color: #555; font-size: 0.85em; max-width: 900px; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
.notes li { font-size: 0.85em; color: #555; }
.n { display: block; color: #777; font-size: 0.8em; }
figure { margin: 0; }
figcaption { color: #555; font-size: 0.85em; max-width: 900px; }
"""


def _cell_html(table: Table, row: str, col: int) -> str:
    cell = table.cell(row, col)
    if cell.empty:
        return "<td>—</td>"
    parts = []
    if cell.ours is not None:
        text = table.format_value(cell.ours.mean)
        if cell.ours.std is not None:
            text += f" ± {table.format_value(cell.ours.std)}"
        parts.append(html.escape(text))
    else:
        parts.append("—")
    if cell.paper is not None:
        parts.append(f'<span class="paper">[{table.format_value(cell.paper)}]</span>')
    if table.seeded and cell.ours is not None:  # seeds × clips and the CI, under the value
        parts.append(f'<span class="n">{html.escape(table.support(cell.ours, long=True))}</span>')
    return f"<td>{' '.join(parts)}</td>"


def table_html(table: Table) -> str:
    head = "".join(
        f"<th>{html.escape(h)}</th>"
        for h in [table.row_header, *(table.column_label(c) for c in range(len(table.columns)))]
    )
    body = []
    for row, label in table.rows:
        cells = "".join(_cell_html(table, row, c) for c in range(len(table.columns)))
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    return (
        f'<h3 id="{html.escape(table.key)}">{html.escape(table.title)}</h3>\n'
        f'<p class="caption">{html.escape(table.caption)}</p>\n'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def write_index(
    path: Path,
    tables: Sequence[Table],
    figures: Sequence[Path],
    notes: Sequence[str],
    title: str = "east report",
    captions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``index.html`` with the figures embedded; ``captions``: figure stem → caption."""
    parts = [
        "<!doctype html>",
        f'<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    contents = [(t.key, t.title) for t in tables] + [(f.stem, f.stem) for f in figures]
    if contents:
        parts.append("<ul>")
        parts += [f'<li><a href="#{html.escape(k)}">{html.escape(t)}</a></li>' for k, t in contents]
        parts.append("</ul>")
    if tables:
        parts.append("<h2>Tables</h2>")
        parts += [table_html(t) for t in tables]
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            caption = (captions or {}).get(fig.stem, "")
            parts.append(
                f'<h3 id="{html.escape(fig.stem)}">{html.escape(fig.stem)}</h3><figure>'
                f'<img src="{_data_uri(fig)}" alt="{html.escape(fig.stem)}">'
                + (f"<figcaption>{html.escape(caption)}</figcaption>" if caption else "")
                + "</figure>"
            )
    if notes:
        parts.append('<h2>Notes</h2><ul class="notes">')
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
