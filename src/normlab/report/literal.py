"""User text shown as itself in every medium the report writes: Markdown, matplotlib figures, file names.

Preset names, swept values and trial ids come from user files. Each medium gives some characters a meaning —
``|`` ends a Markdown cell, ``$…$`` is mathtext, ``/`` and ``..`` walk the file system — so each gets one function
here that takes the meaning away and keeps the text readable. (HTML needs nothing beyond ``html.escape``; one-line
messages use ``files.one_line``, which also shows a path's undecodable bytes.)
"""

import hashlib
import re


# Inline Markdown syntax (GitHub's ``~`` strike-through and ``$`` math included), escaped with a backslash
# (CommonMark: any ASCII punctuation may be); ``<``, ``>``, ``&`` become entities so no renderer sees a tag.
_MARKDOWN = {**{c: "\\" + c for c in "\\`*_[]|~$"}, "<": "&lt;", ">": "&gt;", "&": "&amp;"}
# What turns the start of a list item into a heading, a nested list or a rule: "# x", "- x", "1. x", "---".
_BLOCK_START = re.compile(r"(#{1,6}|[-+]|\d{1,9}[.)]|(?:-\s*){3,})(\s|$)")
FIGURE_TEXT = 80
_SAFE_NAME = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]{0,99}")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._=-]")


def printable(text) -> str:
    """``text`` on one line for any encoder: control characters (newline, ESC, C1) as spaces, lone surrogates (a
    JSON "\\ud800", a non-UTF-8 file name) as "?"; no font, protobuf or UTF-8 file takes those."""
    return "".join(c if c.isprintable() else " " for c in str(text).encode("utf-8", errors="replace").decode())


def terminal(text) -> str:
    """``text`` for a terminal line, shown literally: control characters as their escapes ("\\x1b", "\\n"), so
    none reaches the terminal to act on and the reader sees what was there (a path's bytes: ``files.one_line``)."""
    text = str(text).encode("utf-8", errors="replace").decode()  # a lone surrogate as "?", as ``printable``
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def markdown(text) -> str:
    """``text`` for a Markdown table cell or list item, shown literally: inline syntax escaped, HTML as entities,
    runs of white space as one space (how Markdown would show them anyway)."""
    text = " ".join(printable(text).split())
    text = "".join(_MARKDOWN.get(c, c) for c in text)
    if _BLOCK_START.match(text):
        digits = len(text) - len(text.lstrip("0123456789"))
        text = f"{text[:digits]}\\{text[digits:]}"
    return text


def matplotlib(text: str) -> str:
    """``text`` for a matplotlib label or title, on one line and at most FIGURE_TEXT characters (a longer one would
    not fit the figure, and a 100,000-character label takes Agg a minute to lay out): ``$`` escaped, so "a$\\foo$b"
    is not parsed as mathtext."""
    text = str(text)
    return printable(text if len(text) <= FIGURE_TEXT else text[:FIGURE_TEXT - 1] + "…").replace("$", r"\$")


def path_component(text) -> str:
    """One file-name component for ``text`` that cannot leave its folder: kept when it is already a plain name
    (letters, digits, ``._=-``, not starting with a dot, at most 100 characters); otherwise every other
    character becomes "_", and a hash of the original keeps different names apart ("../x" -> "_._x-<hash>")."""
    text = str(text)
    if _SAFE_NAME.fullmatch(text):
        return text
    name = _UNSAFE_CHAR.sub("_", text[:80])
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:8]
    return f"{'_' + name[1:] if name.startswith('.') else name}-{digest}"
