"""One table, three renderings: the same cells and alignment in Markdown, HTML and the terminal, user text literal."""

import io
from html.parser import HTMLParser

from rich.console import Console

from normlab.report.table import LEFT, RIGHT, Table, columns, to_html, to_markdown, to_rich

NAMES = ["[bold]a[/bold]", "a|b", "<i>x</i> & y"]
TABLE = Table("Final accuracy", columns(("setting",), ("n", "val acc %")),
              tuple((name, str(i), f"8{i}.00 ± 0.10") for i, name in enumerate(NAMES)), "A note with `code`.")


class Cells(HTMLParser):
    """(tag, class, text) of every th and td."""

    def __init__(self):
        super().__init__()
        self.cells, self.open = [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("th", "td"):
            self.open = (tag, dict(attrs).get("class"))
            self.cells.append([*self.open, ""])

    def handle_data(self, data):
        if self.open:
            self.cells[-1][2] += data

    def handle_endtag(self, tag):
        self.open = None


def test_columns_put_text_left_and_numbers_right():
    assert [(c.header, c.align) for c in TABLE.columns] == [("setting", LEFT), ("n", RIGHT), ("val acc %", RIGHT)]


def test_markdown():
    assert to_markdown(TABLE) == [
        "## Final accuracy", "", "A note with `code`.", "",
        "| setting | n | val acc % |", "|---|---:|---:|",
        r"| \[bold\]a\[/bold\] | 0 | 80.00 ± 0.10 |",
        r"| a\|b | 1 | 81.00 ± 0.10 |",
        "| &lt;i&gt;x&lt;/i&gt; &amp; y | 2 | 82.00 ± 0.10 |",
    ]


def test_html_cells_are_escaped_and_text_columns_carry_class_t():
    page = to_html(TABLE)
    assert page.startswith("<h2>Final accuracy</h2><p class=note>A note with `code`.</p><table>")
    parser = Cells()
    parser.feed(page)
    assert parser.cells[:3] == [["th", "t", "setting"], ["th", None, "n"], ["th", None, "val acc %"]]
    assert [text for tag, _, text in parser.cells if tag == "td"][::3] == NAMES
    assert {cls for tag, cls, _ in parser.cells if tag == "td"} == {"t", None}
    assert all(cls == "t" for _, cls, text in parser.cells[3::3])


def test_rich_prints_markup_as_text_and_aligns_like_the_others():
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(to_rich(TABLE))
    text = console.file.getvalue()
    for name in NAMES:
        assert name in text
    assert "A note with `code`." in text  # the note is the caption
    assert [c.justify for c in to_rich(TABLE).columns] == [LEFT, RIGHT, RIGHT]


def test_a_table_without_rows_says_so_where_it_has_words_for_it():
    empty = Table("Against the public Keras reference", columns(("preset",), ("Keras @1",)), (), empty="None here.")
    assert to_markdown(empty) == ["## Against the public Keras reference", "", "None here."]
    assert to_html(empty) == "<h2>Against the public Keras reference</h2><p>None here.</p>"
    bare = Table("t", columns(("preset",), ()), ())
    assert to_markdown(bare) == ["## t", "", "| preset |", "|---|"]
