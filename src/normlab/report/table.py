"""A table as data — title, columns, rows of cells, a note — and its three renderings: Markdown, HTML, terminal.

Every table the report and the CLI show is built once, as a `Table`, and only rendered here, so report.md,
report.html, its Markdown twin and the terminal cannot disagree on a number or a column. Cells are text the
builder has formatted; many hold user text (preset names, swept values), so each medium shows them literally:
Markdown through `literal.markdown`, HTML through `html.escape`, rich as `Text` (never markup). Titles and notes
are ours; Markdown keeps theirs as written (a note may quote `code`).
"""

import html
from dataclasses import dataclass

from rich.table import Table as RichTable
from rich.text import Text

from normlab.report.literal import markdown

LEFT, RIGHT = "left", "right"
MISSING = "—"


@dataclass(frozen=True)
class Column:
    """A header and how its cells align: text to the left, numbers to the right (so their digits line up)."""
    header: str
    align: str = RIGHT


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    empty: str = ""  # said instead of a table without rows; without it such a table is still drawn


def columns(text: tuple[str, ...], numbers: tuple[str, ...]) -> tuple[Column, ...]:
    """The text columns (left), then the number columns (right): the shape of every table we show."""
    return tuple(Column(h, LEFT) for h in text) + tuple(Column(h) for h in numbers)


def to_markdown(table: Table) -> list[str]:
    """Lines of a Markdown section: heading, note, table. Cells are shown literally, so "a|b" stays one cell."""
    line = lambda cells: "| " + " | ".join(markdown(c) for c in cells) + " |"  # noqa: E731
    rule = "|" + "".join("---|" if c.align == LEFT else "---:|" for c in table.columns)
    body = [line(c.header for c in table.columns), rule, *map(line, table.rows)]
    note = [table.note, ""] if table.note else []
    return [f"## {table.title}", "", *note, *(body if table.rows or not table.empty else [table.empty])]


def to_html(table: Table) -> str:
    """An HTML section: heading, note, table; left-aligned columns carry CSS class t."""
    esc = html.escape

    def cells(tag: str, row) -> str:
        return "".join(f"<{tag}{' class=t' * (c.align == LEFT)}>{esc(cell)}</{tag}>"
                       for c, cell in zip(table.columns, row))

    head = f"<h2>{esc(table.title)}</h2>" + (f"<p class=note>{esc(table.note)}</p>" if table.note else "")
    if not table.rows and table.empty:
        return f"{head}<p>{esc(table.empty)}</p>"
    return (f"{head}<table><thead><tr>{cells('th', [c.header for c in table.columns])}</tr></thead><tbody>"
            + "".join(f"<tr>{cells('td', row)}</tr>" for row in table.rows) + "</tbody></table>")


def to_rich(table: Table) -> RichTable:
    """A rich table for the terminal; every text is `Text`, so "[bold]" in a preset name is printed as itself."""
    out = RichTable(title=Text(table.title), caption=Text(table.note) if table.note else None)
    for c in table.columns:
        out.add_column(Text(c.header), justify=c.align)
    for row in table.rows:
        out.add_row(*map(Text, row))
    return out
