"""Rows of text (a list of dicts with the same keys) as an HTML or Markdown table, escaped."""

from __future__ import annotations

import html


def html_table(rows: list[dict]) -> str:
    """A scrolling HTML table; "" for no rows (the caller says why there is none)."""
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(key))}</th>" for key in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in row.values()) + "</tr>"
                   for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def markdown_table(rows: list[dict]) -> list[str]:
    """The table's lines; [] for no rows. Cell text cannot become Markdown or HTML."""
    if not rows:
        return []

    def cell(value) -> str:
        return html.escape(str(value), quote=False).replace("|", "\\|")

    return (["| " + " | ".join(cell(key) for key in rows[0]) + " |", "|" + "---|" * len(rows[0])]
            + ["| " + " | ".join(cell(value) for value in row.values()) + " |" for row in rows])
