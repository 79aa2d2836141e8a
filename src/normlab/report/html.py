"""report.html: studies (or a sweep's trials) side by side on one self-contained page, and its Markdown twin.

Everything is inline — figures as base64 PNG data: URIs, CSS in a <style> tag, no scripts, fonts or links — so
the page reads the same offline, as a CI artifact or an e-mail attachment. Runs are grouped by *setting*: the
preset plus the values a sweep varied ("bn-after lr=0.01"). Diverged runs are counted but left out of every
statistic; significance.py defines the statistics. Both files carry a mark ("generator" meta tag, "# normlab
report" first line) so that `report_command` overwrites its own earlier output and nothing else.
"""

import base64
import html
import json
import os
from pathlib import Path

from normlab.errors import ConfigError
from normlab.files import MiB, FileProblem, display, one_line, read_bytes, write_text
from normlab.report.literal import markdown
from normlab.report.markdown import MISSING, _table, diverged_line
from normlab.report.plots import learning_curves_png, sweep_png
from normlab.report.results_json import find_results, load_results
from normlab.report.significance import Summary, hedges_g, reach_summary, summarize, welch
from normlab.report.stats import BASELINE

REACH = 0.85
SHORT = {"learning_rate": "lr", "batch_size": "batch"}
CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1,h2{font-weight:600}h2{margin-top:1.6em;border-bottom:1px solid #ddd}p.note{color:#555;font-size:13px}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f2f2f2}
td{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}td.t{text-align:left}
img{max-width:100%}pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:12px}"""
HTML_HEAD = "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><meta name=generator content=normlab>"
MARKDOWN_TITLE = "# normlab report"
# How our earlier outputs begin, so that they may be replaced (pages from before the generator tag began with the
# title); a file larger than OURS_MAX_BYTES is not one of them.
OUR_PAGE = (HTML_HEAD.encode(), b"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>normlab report</title>")
OUR_MARKDOWN = (f"{MARKDOWN_TITLE}\n".encode(),)
OURS_MAX_BYTES = 256 * MiB
BN_EXPLANATION = (
    "Training: for each feature, over the m examples of the mini-batch, batch normalization computes the mean "
    "μ_B = (1/m) Σ x_i and the biased variance σ²_B = (1/m) Σ (x_i − μ_B)², normalizes "
    "x̂_i = (x_i − μ_B) / √(σ²_B + ε), then scales and shifts with learned parameters: y_i = γ·x̂_i + β.",
    "It also keeps moving averages, moving_mean ← momentum·moving_mean + (1 − momentum)·μ_B and likewise "
    "moving_variance with σ²_B (Keras: momentum 0.99, ε = 1e-3); they are state, not trained.",
    "Inference: the moving statistics replace μ_B and σ²_B, so a prediction does not depend on the rest of "
    "the batch.",
    "Why it helps: Ioffe & Szegedy (2015) attributed the gain to reducing internal covariate shift — the drift of "
    "each layer's input distribution while earlier layers train — which permits higher learning rates and "
    "makes training less sensitive to initialization.",
    "Santurkar et al. (2018, “How Does Batch Normalization Help Optimization?”) showed the gain survives "
    "deliberately injected covariate shift, and traced it instead to a smoother loss landscape: BN makes the "
    "loss and its gradients more Lipschitz, so gradient steps are more predictive and larger steps stay safe.",
)


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _sort_key(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def label(setting: dict, skip: str = "") -> str:
    """'bn-after lr=0.01': the preset, then every other swept value (except ``skip``)."""
    rest = [f"{SHORT.get(k, k)}={_value(v)}" for k, v in setting.items() if k not in ("preset", skip)]
    return " ".join([setting["preset"], *rest])


def group_settings(results_list: list[dict]) -> dict[str, dict]:
    """label -> {"setting", "ok": runs, "diverged": runs}; presets in order of appearance, swept values sorted."""
    groups, rank = {}, {}
    for run in (run for results in results_list for run in results["runs"]):
        swept = {k: v for k, v in (run.get("setting") or {}).items() if k != "preset"}
        setting = {"preset": run["preset"], **swept}
        rank.setdefault(run["preset"], len(rank))
        group = groups.setdefault(label(setting), {"setting": setting, "ok": [], "diverged": []})
        group["diverged" if run.get("status") == "diverged" else "ok"].append(run)
    order = lambda item: (rank[item[1]["setting"]["preset"]],  # noqa: E731
                          [(k, _sort_key(v)) for k, v in sorted(item[1]["setting"].items()) if k != "preset"])
    return dict(sorted(groups.items(), key=order))


def controls(groups: dict[str, dict], control: str | None = None) -> dict[str, str | None]:
    """Each setting's control: ``control`` if it names a setting; else that preset (default: baseline) at the
    same other swept values; without a ``control`` and without such a baseline, the first setting."""
    if control in groups:
        return dict.fromkeys(groups, control)
    if control is not None and control not in {g["setting"]["preset"] for g in groups.values()}:
        raise ConfigError(f"control {control!r} is neither a setting nor a preset of these runs "
                          f"(settings: {', '.join(map(repr, groups))})")
    found = {name: label({**g["setting"], "preset": control or BASELINE}) for name, g in groups.items()}
    fallback = None if control else next(iter(groups))
    return {name: other if other in groups else fallback for name, other in found.items()}


def _metrics(group: dict) -> dict[str, list[float]]:
    return {"validation": [r["history"]["val_accuracy"][-1] for r in group["ok"]],
            "test": [r["test"]["accuracy"] for r in group["ok"]]}


def _cells(s: Summary) -> list[str]:
    """'mean ± std' and 'low – high' in %, MISSING where undefined."""
    pm = MISSING if s.mean is None else f"{100 * s.mean:.2f}" + ("" if s.std is None else f" ± {100 * s.std:.2f}")
    return [pm, MISSING if s.ci is None else f"{100 * s.ci[0]:.2f} – {100 * s.ci[1]:.2f}"]


def _final_row(name: str, group: dict) -> list[str]:
    n, bad = len(group["ok"]) + len(group["diverged"]), len(group["diverged"])
    mean, reached, runs = reach_summary([r["history"]["val_accuracy"] for r in group["ok"]], REACH)
    return [name, f"{n} ({bad} diverged)" if bad else str(n),
            *(cell for values in _metrics(group).values() for cell in _cells(summarize(values))),
            f"{MISSING if mean is None else f'{mean:.1f}'} ({reached}/{runs})"]


def tables(groups: dict[str, dict], control_of: dict[str, str | None]) -> list[tuple[str, str, list, list]]:
    """(title, note, header, rows) of the final-accuracy table and, where there is a control, the tests."""
    out = [("Final accuracy",
            f"Accuracy in % after the last epoch: mean ± sample std (ddof=1) and the 95% confidence interval of the "
            f"mean (Student's t; none for one seed) over the seeds that did not diverge; n counts every seed. The "
            f"last column is the mean first epoch with validation accuracy ≥ {REACH:.0%} "
            "(runs that reached it/runs).",
            ["setting", "n", "val acc %", "val 95% CI", "test acc %", "test 95% CI", f"epochs to {REACH:.0%} val"],
            [_final_row(name, g) for name, g in groups.items()])]
    rows = []
    for name, g in groups.items():
        control = control_of[name]
        if control is None or control == name:
            continue
        for metric, ours in _metrics(g).items():
            theirs = _metrics(groups[control])[metric]
            a, b, test, g_ = summarize(ours), summarize(theirs), welch(ours, theirs), hedges_g(ours, theirs)
            delta = MISSING if a.mean is None or b.mean is None else f"{100 * (a.mean - b.mean):+.2f}"
            stats = [f"{test.t:+.2f}", f"{test.df:.1f}", f"{test.p:.3g}"] if test else [MISSING] * 3
            rows.append([name, control, metric, delta, *stats, MISSING if g_ is None else f"{g_:+.2f}"])
    if rows:
        out.append(("Against the control",
                    "Δ = setting − control in percentage points of final accuracy; Welch's unequal-variance t-test "
                    "(t, Welch–Satterthwaite df, two-sided p) and Hedges' g (Cohen's d over the pooled std, "
                    f"small-sample corrected). {MISSING}: fewer than two runs, or no variance in either group.",
                    ["setting", "control", "metric", "Δ pp", "t", "df", "p", "Hedges' g"], rows))
    return out


def _diverged_notes(groups: dict[str, dict]) -> list[str]:
    return [f"{diverged_line(name, r)}; left out of every statistic." for name, g in groups.items()
            for r in g["diverged"]]


def _swept(groups: dict[str, dict]) -> dict[str, list]:
    """Every swept key (preset first) with its distinct values, sorted."""
    values: dict[str, list] = {}
    for k, v in (item for g in groups.values() for item in g["setting"].items()):
        values.setdefault(k, []).extend([] if v in values.get(k, []) else [v])
    return {k: sorted(vs, key=_sort_key) for k, vs in values.items()}


def _sweep_keys(groups: dict[str, dict]) -> list[str]:
    """Swept keys whose values are all numbers and take at least two values: each gets a sweep plot."""
    return [k for k, vs in _swept(groups).items()
            if k != "preset" and len(vs) > 1 and all(_sort_key(v)[0] == 0 for v in vs)]


def _sweep_series(groups: dict[str, dict], key: str) -> dict[str, list]:
    series: dict[str, list] = {}
    for g in groups.values():
        if key in g["setting"] and g["ok"]:
            s = summarize(_metrics(g)["validation"])
            series.setdefault(label(g["setting"], skip=key), []).append((g["setting"][key], s.mean, s.ci))
    return series


def _overview(groups: dict[str, dict], n_files: int, control_of: dict) -> str:
    runs = [r for g in groups.values() for r in g["ok"] + g["diverged"]]
    epochs = max((len(r["history"]["val_accuracy"]) for r in runs), default=0)
    values = "; ".join(f"{k} {', '.join(map(_value, vs))}" for k, vs in _swept(groups).items())
    used = ", ".join(dict.fromkeys(c for c in control_of.values() if c)) or "none"
    seeds = ", ".join(str(seed) for seed in sorted({r["seed"] for r in runs}))
    overview = (f"{len(groups)} settings ({values}) × seeds {seeds}: {len(runs)} runs of up to {epochs} epochs from "
                f"{n_files} results file(s). Control: {used}.")
    if any(g["ok"] for g in groups.values()):
        return overview
    return f"{overview} Every run diverged (non-finite loss): there is no statistic, curve or sweep to show."


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _html_table(header: list[str], rows: list[list]) -> str:
    """Cells that start with a letter are text and align left (CSS class t); numbers align right."""
    cells = lambda tag, row: "".join(  # noqa: E731
        f"<{tag}{' class=t' * str(c)[:1].isalpha()}>{html.escape(str(c))}</{tag}>" for c in row)
    return (f"<table><thead><tr>{cells('th', header)}</tr></thead><tbody>"
            + "".join(f"<tr>{cells('td', row)}</tr>" for row in rows) + "</tbody></table>")


def write_html(results_list: list[dict], out: Path, titles: list[str] | None = None,
               control: str | None = None) -> Path:
    """Write the page: overview, tables, learning curves, sweep plots, BN in brief, every config and provenance.

    Rendered whole before anything is written, then written atomically: a failure leaves no partial page.
    """
    groups = group_settings(results_list)
    control_of, esc = controls(groups, control), html.escape
    titles = titles or [f"results {i + 1}" for i in range(len(results_list))]
    parts = [f"<h1>normlab report</h1><p>{esc(_overview(groups, len(results_list), control_of))}</p>"]
    for title, note, header, rows in tables(groups, control_of):
        parts += [f"<h2>{esc(title)}</h2><p class=note>{esc(note)}</p>", _html_table(header, rows)]
    if notes := _diverged_notes(groups):
        parts += [f"<ul>{''.join(f'<li>{esc(note)}</li>' for note in notes)}</ul>"]
    curves = {name: g["ok"] for name, g in groups.items() if g["ok"]}
    if curves:
        parts += ["<h2>Learning curves</h2><p class=note>Mean over the seeds that did not diverge (n in the "
                  "legend); the band is ± 1 sample std.</p>", _img(learning_curves_png(curves), "learning curves")]
    for key in _sweep_keys(groups):
        if series := _sweep_series(groups, key):
            parts += [f"<h2>Sweep over {esc(key)}</h2>", _img(sweep_png(series, key), f"sweep {key}")]
    parts += ["<h2>How batch normalization works</h2>", *(f"<p>{esc(line)}</p>" for line in BN_EXPLANATION)]
    parts += ["<h2>Configuration and provenance</h2>"]
    for title, results in zip(titles, results_list):
        record = {"config": results.get("config"), "provenance": results.get("provenance")}
        origin = record["provenance"] or {}
        summary = f"{title} — commit {origin.get('git_commit', '?')}, {origin.get('timestamp', '?')}"
        parts += [f"<details><summary>{esc(summary)}</summary><pre>{esc(json.dumps(record, indent=1, default=str))}"
                  "</pre></details>"]
    return write_text(out, f"{HTML_HEAD}<title>normlab report</title><style>{CSS}</style></head>"
                           f"<body>{''.join(parts)}</body></html>\n")


def write_markdown_summary(results_list: list[dict], out: Path, control: str | None = None) -> Path:
    """The page's tables in Markdown, for a README or a pull request."""
    groups = group_settings(results_list)
    control_of = controls(groups, control)
    lines = [MARKDOWN_TITLE, "", markdown(_overview(groups, len(results_list), control_of)), ""]
    for title, note, header, rows in tables(groups, control_of):
        lines += [f"## {title}", "", note, "", *_table(header, rows), ""]
    lines += [f"- {markdown(note)}" for note in _diverged_notes(groups)]
    return write_text(out, "\n".join(lines).rstrip() + "\n")


def _refuse_foreign(path: Path, marks: tuple[bytes, ...]) -> None:
    """ConfigError unless ``path`` is absent or an earlier output of ours (it starts with one of ``marks``)."""
    if not os.path.lexists(path):
        return
    try:
        ours = read_bytes(path, OURS_MAX_BYTES).startswith(marks)
    except FileProblem:
        ours = False
    if not ours:
        raise ConfigError(f"{one_line(path)} exists and was not written by normlab report; "
                          "move it away or choose another --out")


def report_command(run_dirs: list[Path], out: Path | None = None, control: str | None = None) -> Path:
    """`normlab report RUN_DIR...`: merge every results.json, write an HTML report (default
    RUN_DIRS[0]/summary.html, beside reproduce's own report.md) and the Markdown summary beside it (same name,
    .md); return the HTML path. A file in the way that is not an earlier report of ours (a user's notes.html,
    reproduce's report.md) is a ConfigError, not overwritten."""
    if not run_dirs:
        raise ConfigError("no run directories given")
    # each results file once, however often the folders given overlap ("runs/a runs/a", "runs runs/a")
    paths = list({path.resolve(): path for run_dir in run_dirs for path in find_results(run_dir)}.values())
    results_list = [load_results(path) for path in paths]
    out = Path(out) if out is not None else Path(run_dirs[0]) / "summary.html"
    out = out / "summary.html" if out.is_dir() else out
    if out.suffix == ".md":
        raise ConfigError(f"--out {one_line(out)} would be overwritten by its own Markdown twin; name the .html page")
    _refuse_foreign(out, OUR_PAGE)
    _refuse_foreign(out.with_suffix(".md"), OUR_MARKDOWN)
    page = write_html(results_list, out, [display(path.parent) for path in paths], control)
    write_markdown_summary(results_list, out.with_suffix(".md"), control)
    return page
