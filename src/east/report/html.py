"""One self-contained ``index.html`` with every table and figure of a report."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from east.report.tables import Table

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.paper { color: #777; }
.caption { color: #555; font-size: 0.85em; max-width: 900px; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
.notes li { font-size: 0.85em; color: #555; }
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
    title = f' title="n={cell.ours.n} seeds"' if cell.ours is not None else ""
    return f"<td{title}>{' '.join(parts)}</td>"


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
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def write_index(
    path: Path,
    tables: Sequence[Table],
    figures: Sequence[Path],
    notes: Sequence[str],
    title: str = "east report",
) -> Path:
    """Write ``index.html`` beside the figures (linked by relative path)."""
    parts = [
        "<!doctype html>",
        f'<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if tables:
        parts.append("<h2>Tables</h2><ul>")
        parts += [
            f'<li><a href="#{html.escape(t.key)}">{html.escape(t.title)}</a></li>' for t in tables
        ]
        parts.append("</ul>")
        parts += [table_html(t) for t in tables]
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            rel = fig.relative_to(path.parent) if fig.is_relative_to(path.parent) else fig
            parts.append(
                f'<h3>{html.escape(fig.stem)}</h3><img src="{html.escape(str(rel))}" '
                f'alt="{html.escape(fig.stem)}">'
            )
    if notes:
        parts.append('<h2>Notes</h2><ul class="notes">')
        parts += [f"<li>{html.escape(n)}</li>" for n in notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
