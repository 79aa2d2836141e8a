"""The frame of every HTML page normlab writes: one self-contained document, a mark that says it is ours.

Everything is inline — CSS in a <style> tag, figures as base64 PNG data: URIs, no scripts, fonts or links — so a
page reads the same offline. The "generator" meta tag is what `html.report_command` looks for before it overwrites
a page. report.html (`html`) and the page of `normlab diagnose` (`diagnostics`) both build on this module, which
imports neither.
"""

import base64
import html
import json

CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1,h2{font-weight:600}h2{margin-top:1.6em;border-bottom:1px solid #ddd}p.note{color:#555;font-size:13px}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f2f2f2}
td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.t{text-align:left}
img{max-width:100%}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:12px}"""
HTML_HEAD = "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><meta name=generator content=normlab>"


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def details(title: str, record: dict) -> str:
    """A file's config, data and provenance, folded, under where it came from, its commit and its time."""
    shown = {"config": record.get("config")} | {key: record[key] for key in ("data", "preprocessing") if key in record}
    record = shown | {"provenance": record.get("provenance")}
    origin = record["provenance"] or {}
    summary = f"{title} — commit {origin.get('git_commit', '?')}, {origin.get('timestamp', '?')}"
    return (f"<details><summary>{html.escape(summary)}</summary>"
            f"<pre>{html.escape(json.dumps(record, indent=1, default=str))}</pre></details>")


def document(title: str, parts: list[str]) -> str:
    """The whole page: ``title`` is ours, ``parts`` are HTML their builders escaped."""
    return f"{HTML_HEAD}<title>{title}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n"
