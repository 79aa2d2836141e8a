"""User text (preset names, swept values, trial ids) is shown as itself in Markdown, HTML, figures and file names.

The oracles are independent of our escaping: markdown-it-py renders the Markdown, html.parser reads the page,
matplotlib's own mathtext test reads the labels, and the file system says where directories ended up.
"""

import html
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

from normlab.report import write_all
from normlab.report.hparams import write_hparams
from normlab.report.html import find_results, load_results, report_command, write_html
from normlab.report.literal import markdown, path_component, terminal
from normlab.report.plots import learning_curves_figure, sweep_png
from normlab.report.results_json import Run

NASTY = ["a|b", "x`y`", "<script>alert(1)</script>", "a & b", "line\nbreak\r\n", "- item", "# title", "1. first",
         "---", "*bold* _it_ [link](http://x)", "$\\foo$", "back\\|slash", "_hidden", "\ud800surrogate"]
PATHS = ["../../x", "/etc", "..", ".", "", "a/b", "a\\b", ".hidden", "seed\x00", "x" * 300, "\udcff", "ok-name_1.0"]


def run(preset: str, seed: int = 0, **setting) -> dict:
    val = [0.6, 0.7]
    return {"preset": preset, "seed": seed, "status": "ok", "diverged_epoch": None,
            "setting": {"preset": preset, **setting},
            "history": {"loss": [0.5, 0.4], "accuracy": val, "val_loss": [0.6, 0.5], "val_accuracy": val},
            "test": {"loss": 0.4, "accuracy": 0.7}, "time": {"compile_s": 1.0, "train_s": 2.0}}


def plain(text: str) -> str:
    """What a reader should see: the text with lone surrogates as "?" and white space runs as one space."""
    return " ".join(text.encode("utf-8", errors="replace").decode().split())


@pytest.mark.parametrize("text, expected", [
    ("a|b", r"a\|b"),
    ("a\nb\r\nc\td", "a b c d"),
    ("`x`", r"\`x\`"),
    ("<b>&amp;", "&lt;b&gt;&amp;amp;"),
    ("$x$", r"\$x\$"),
    ("a\\|b", r"a\\\|b"),
    ("- x", r"\- x"),
    ("# x", r"\# x"),
    ("12) x", r"12\) x"),
    ("- - -", r"\- - -"),
    ("bn-after lr=0.01", "bn-after lr=0.01"),
    ("-1.60 pp", "-1.60 pp"),
    ("12.5 ± 0.1", "12.5 ± 0.1"),
])
def test_markdown_escape(text, expected):
    assert markdown(text) == expected


def rendered_table_cells(text: str) -> list[list[str]]:
    """Rows of cell texts of the first table markdown-it (CommonMark + GFM tables) renders from ``text``."""
    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(text)
    rows, row, inside = [], None, False
    for token in tokens:
        if token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            inside = True
        elif token.type == "inline" and inside:
            row.append(token)
            inside = False
        elif token.type == "tr_close":
            rows.append(row)
        elif token.type == "table_close":
            break
    return rows


def inline_text(token) -> str:
    """The literal text of an inline token: only text children, no markup the renderer recognised."""
    assert {child.type for child in token.children} <= {"text"}, [c.type for c in token.children]
    return "".join(child.content for child in token.children)


def test_markdown_tables_and_lists_show_user_text_literally(tmp_path):
    runs = [run(name, seed) for seed, name in enumerate(NASTY)]
    for i, r in enumerate(runs[:3]):
        r.update(status="diverged", diverged_epoch=3, test=None)
        r["preset"] = r["setting"]["preset"] = f"- {NASTY[i]}"
    write_all({"runs": runs}, tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    rows = rendered_table_cells(report)
    assert all(len(row) == len(rows[0]) for row in rows)  # no cell split or lost
    assert [inline_text(row[0]) for row in rows[1:]] == [plain(name) for name in NASTY[3:]]

    markdown_it = pytest.importorskip("markdown_it")
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse(report)
    items = [inline_text(t) for i, t in enumerate(tokens)
             if t.type == "inline" and tokens[i - 2].type == "list_item_open"]
    names = [plain(f"- {name}") for name in NASTY[:3]]
    assert [item for item in items if "diverged" in item] == [
        f"{name} seed {seed} diverged at epoch 3 (non-finite loss)" for seed, name in enumerate(names)]
    assert "<script" not in markdown_it.MarkdownIt("commonmark").enable("table").render(report)


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_html_page_shows_user_text_and_runs_no_markup(tmp_path):
    runs = [run(name, seed, learning_rate=0.1) for seed, name in enumerate(NASTY)]
    runs[0]["setting"]['"><img src=x onerror=alert(1)>'] = "<i>v</i>"
    results = {"runs": runs, "provenance": {"git_commit": "</summary><script>", "timestamp": "<b>"},
               "config": {"<x>": "</pre>"}}
    page = write_html([results], tmp_path / "r.html", titles=["<title>&"]).read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(page)
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "thead", "tbody", "tr",
               "th", "td", "ul", "li", "img", "details", "summary", "pre"}
    assert {tag for tag, _ in parser.tags} <= allowed
    for tag, attrs in parser.tags:
        if tag == "img":
            assert set(attrs) == {"alt", "src"} and attrs["src"].startswith("data:image/png;base64,")
    text = html.unescape("".join(parser.text))
    for name in NASTY[:-1]:
        assert name.split("\n")[0] in text
    assert "</summary><script>" in text and "<title>&" in text and "<i>v</i>" in text


def legend_texts(legend) -> list[tuple[str, bool]]:
    """What matplotlib will draw for each legend entry: (text after its own mathtext preprocessing, is math)."""
    return [t._preprocess_math(t.get_text()) for t in legend.get_texts()]


def test_figure_labels_are_literal_and_underscore_labels_stay(tmp_path):
    names = ["a$\\foo$b", "_hidden", "$x$ and $y$", "plain"]
    groups = {name: [Run.from_dict(run(name))] for name in names}
    expected = [(f"{name} (n=1)", False) for name in names]
    fig = learning_curves_figure(groups)
    assert legend_texts(fig.axes[0].get_legend()) == expected
    shared = learning_curves_figure(groups, shared_legend=True)
    assert legend_texts(shared.legends[0]) == expected
    for figure in (fig, shared):
        figure.savefig(tmp_path / "f.png")  # mathtext would raise on "\foo"
    png = sweep_png({"_lr$\\x$": [(0.1, 0.8, None), (1.0, 0.7, (0.6, 0.8))]}, "$\\bad$_key")
    assert png.startswith(b"\x89PNG")
    write_all({"runs": [run(name) for name in names]}, tmp_path)


def test_a_huge_label_is_cut_to_fit_the_figure():
    """100,000 characters would take Agg about a minute to lay out; the legend shows the first 79 and "…"."""
    fig = learning_curves_figure({"x" * 100_000: [Run.from_dict(run("x"))], "y\n" * 50: [Run.from_dict(run("y"))]})
    texts = [text for text, _ in legend_texts(fig.axes[0].get_legend())]
    assert texts == ["x" * 79 + "… (n=1)", "y " * 39 + "y… (n=1)"]


def test_path_components_stay_inside_their_folder(tmp_path):
    components = [path_component(name) for name in PATHS]
    assert len(set(components)) == len(PATHS)  # different names, different folders
    for name, component in zip(PATHS, components):
        assert component not in ("", ".", "..") and "/" not in component and "\x00" not in component
        assert len(component.encode()) <= 100 and not component.startswith(".")
        assert (tmp_path / component).resolve().parent == tmp_path.resolve()
    assert path_component("ok-name_1.0") == "ok-name_1.0" and path_component("seed3") == "seed3"


def tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(folder, name), root) for folder, dirs, files in os.walk(root)
            for name in dirs + files}


def test_hparams_directories_never_leave_their_root(tmp_path):
    """(TensorBoard's run directories: tests/report/test_tensorboard.py.)"""
    runs = [run(name, 7) for name in PATHS]
    out = tmp_path / "deep" / "er"
    write_hparams([{"runs": runs, "study": {"trial": trial}} for trial in ("../../../evil", "/abs", "..", "t")],
                  out / "hp")
    outside = {p for p in tree(tmp_path) if not p.startswith("deep/er/hp/")}
    assert outside == {"deep", "deep/er", "deep/er/hp"}
    assert len(list((out / "hp").iterdir())) == 4


def test_a_planted_trial_id_cannot_steer_hparams_out_of_its_folder(tmp_path):
    trial = tmp_path / "sweep" / "trials" / "0001"
    trial.mkdir(parents=True)
    (trial / "results.json").write_text(json.dumps({"runs": [run("baseline")], "study": {"trial": "../../../x"}}))
    report_command([tmp_path / "sweep"])
    write_hparams([load_results(p) for p in find_results(tmp_path / "sweep")], tmp_path / "sweep" / "hp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == ["hp", "summary.html", "summary.md", "trials"]



@pytest.mark.parametrize("text", NASTY)
def test_terminal_text_is_one_printable_line_that_shows_every_character(text):
    shown = terminal(text)
    assert shown.isprintable()
    assert shown == text.replace("\n", "\\n").replace("\r", "\\r").replace("\ud800", "?")  # the rest as it is
    assert terminal("a\x1b[31mb\x07") == "a\\x1b[31mb\\x07"
