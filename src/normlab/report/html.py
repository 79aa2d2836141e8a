"""report.html: studies (or a sweep's trials) side by side on one self-contained page, and its Markdown twin.

Everything is inline — figures as base64 PNG data: URIs, CSS in a <style> tag, no scripts, fonts or links — so
the page reads the same offline, as a CI artifact or an e-mail attachment. Runs are grouped by *setting*: the
preset plus the values a sweep varied ("bn-after lr=0.01"); the head says what data each results file trained on
(``dataset.data_lines``), once per distinct data. Diverged runs are counted but left out of every
statistic; summary.py builds the tables, stats.py their numbers. Both files carry a mark ("generator" meta tag,
"# normlab report" first line) so that `report_command` overwrites its own earlier output and nothing else.
A diagnostics.json of `normlab diagnose` in the folders adds what it measured (`diagnostics`) in place of the
prose on why BN helps.
"""

import html
import itertools
import os
from pathlib import Path

from matplotlib.figure import Figure

from normlab.errors import ConfigError
from normlab.files import MiB, FileProblem, display, one_line, read_bytes, write_text
from normlab.nn.models import presets, with_classes
from normlab.report.dataset import data_lines, recorded
from normlab.report.diagnostics import findings, section_html
from normlab.report.diagnostics_json import NAME as DIAGNOSTICS, find_diagnostics, load_diagnostics
from normlab.report.literal import markdown, printable
from normlab.report.page import HTML_HEAD, details, document, img
from normlab.report.plots import learning_curves_png, png_bytes, sweep_figure
from normlab.report.results_json import find_files, find_results, load_results
from normlab.report.stats import summarize
from normlab.report.summary import (control_table, controls, diverged_line, final_accuracies, final_table,
                                    group_settings, label, sort_key, value_text)
from normlab.report.table import Table, to_html, to_markdown

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
WHY_IT_HELPS = 2  # the last items of BN_EXPLANATION: a run with diagnostics shows what was measured instead


def _tables(groups: dict[str, dict], control_of: dict[str, str | None]) -> list[Table]:
    """Final accuracy, and the tests against the control where a setting has one."""
    against = control_table(groups, control_of)
    return [final_table(groups), *([against] if against.rows else [])]


def _diverged_notes(groups: dict[str, dict]) -> list[str]:
    return [f"{diverged_line(name, r)}; left out of every statistic." for name, g in groups.items()
            for r in g["diverged"]]


def _swept(groups: dict[str, dict]) -> dict[str, list]:
    """Every swept key (preset first) with its distinct values, sorted."""
    values: dict[str, list] = {}
    for k, v in (item for g in groups.values() for item in g["setting"].items()):
        values.setdefault(k, []).extend([] if v in values.get(k, []) else [v])
    return {k: sorted(vs, key=sort_key) for k, vs in values.items()}


def _sweep_keys(groups: dict[str, dict]) -> list[str]:
    """Swept keys whose values are all numbers and take at least two values: each gets a sweep plot."""
    return [k for k, vs in _swept(groups).items()
            if k != "preset" and len(vs) > 1 and all(sort_key(v)[0] == 0 for v in vs)]


def _unrolled(layers: list, depth: int = 0) -> list[dict]:
    """The layer tables of ``layers`` with residual blocks' branches and shortcuts in their place (as read from a
    results file: only well-formed lists are followed, a few blocks deep)."""
    found = []
    for layer in layers:
        if isinstance(layer, dict) and layer.get("kind") == "residual" and depth < 8:
            for part in ("layers", "shortcut"):
                inner = layer.get(part)
                found += _unrolled(inner, depth + 1) if isinstance(inner, list) else []
        elif isinstance(layer, dict):
            found.append(layer)
    return found


def _runs(values: list[str]) -> str:
    """``16-16-16-32`` as ``16x3-32`` (three or more alike): a ResNet's 19 convs stay readable."""
    groups = [(value, len(list(group))) for value, group in itertools.groupby(values)]
    return "-".join(f"{value}x{count}" if count >= 3 else "-".join([value] * count) for value, count in groups)


def architecture(layers: list) -> str:
    """A model's weighted layers without its norms and activations, e.g. "conv 16-32, dense 128-10": what sets an
    MLP's presets apart from a CNN's in a sweep plot."""
    unrolled = _unrolled(layers)
    sizes = {kind: _runs([str(layer.get(option)) for layer in unrolled if layer.get("kind") == kind])
             for kind, option in (("conv2d", "filters"), ("dense", "units"))}
    return ", ".join(f"{kind.removesuffix('2d')} {text}" for kind, text in sizes.items() if text)


def _architectures(results_list: list[dict]) -> dict[str, str]:
    """preset -> its architecture, from the models each results file names (a study's own, else the presets)."""
    found = {}
    for results in results_list:
        models = (results.get("config") or {}).get("models") or {}
        for preset in {run.get("preset") for run in results.get("runs", []) if isinstance(run, dict)}:
            layers = models.get(preset, {}).get("layers") if isinstance(models.get(preset), dict) else None
            layers = layers if isinstance(layers, list) else presets().get(preset)
            if isinstance(layers, list) and all(isinstance(layer, dict) for layer in layers):
                found[preset] = architecture(with_classes(layers, recorded(results)[0]["classes"]))
    return found


def _sweep_series(groups: dict[str, dict], key: str) -> dict[str, list]:
    series: dict[str, list] = {}
    for g in groups.values():
        if key in g["setting"] and g["ok"]:
            s = summarize(final_accuracies(g)["validation"])
            series.setdefault(label(g["setting"], skip=key), []).append((g["setting"][key], s.mean, s.ci))
    return series


def sweep_figures(results_list: list[dict], groups: dict[str, dict]) -> dict[str, Figure]:
    """Swept key -> final validation accuracy against it; one panel per architecture when settings span several."""
    architectures, figures = _architectures(results_list), {}
    for key in _sweep_keys(groups):
        if series := _sweep_series(groups, key):
            panel_of = {name: architectures.get(g["setting"]["preset"], "") for name, g in groups.items()}
            panel_of = {label(g["setting"], skip=key): panel_of[name] for name, g in groups.items()}
            figures[key] = sweep_figure(series, key, panel_of if len(set(panel_of.values())) > 1 else None)
    return figures


def _overview(groups: dict[str, dict], n_files: int, control_of: dict) -> str:
    runs = [r for g in groups.values() for r in g["ok"] + g["diverged"]]
    epochs = max((len(r.history["val_accuracy"]) for r in runs), default=0)
    values = "; ".join(f"{k} {', '.join(map(value_text, vs))}" for k, vs in _swept(groups).items())
    used = ", ".join(dict.fromkeys(c for c in control_of.values() if c)) or "none"
    seeds = ", ".join(str(seed) for seed in sorted({r.seed for r in runs}))
    overview = (f"{len(groups)} settings ({values}) × seeds {seeds}: {len(runs)} runs of up to {epochs} epochs from "
                f"{n_files} results file(s). Control: {used}.")
    if any(g["ok"] for g in groups.values()):
        return overview
    return f"{overview} Every run diverged (non-finite loss): there is no statistic, curve or sweep to show."


def write_html(results_list: list[dict], out: Path, titles: list[str] | None = None,
               control: str | None = None, diagnostics: dict | None = None) -> Path:
    """Write the page: overview, tables, learning curves, sweep plots, BN in brief, every config and provenance.

    With ``diagnostics`` (a checked diagnostics.json) the measured section replaces the prose on why BN helps.

    Rendered whole before anything is written, then written atomically: a failure leaves no partial page.
    """
    groups = group_settings(results_list)
    control_of, esc = controls(groups, control), html.escape
    titles = titles or [f"results {i + 1}" for i in range(len(results_list))]
    parts = [f"<h1>normlab report</h1><p>{esc(_overview(groups, len(results_list), control_of))}</p>",
             f"<ul>{''.join(f'<li>{esc(printable(line))}</li>' for line in data_lines(results_list))}</ul>"]
    parts += [to_html(table) for table in _tables(groups, control_of)]
    if notes := _diverged_notes(groups):
        parts += [f"<ul>{''.join(f'<li>{esc(note)}</li>' for note in notes)}</ul>"]
    curves = {name: g["ok"] for name, g in groups.items() if g["ok"]}
    if curves:
        parts += ["<h2>Learning curves</h2><p class=note>Mean over the seeds that did not diverge (n in the "
                  "legend); the band is ± 1 sample std.</p>", img(learning_curves_png(curves), "learning curves")]
    for key, figure in sweep_figures(results_list, groups).items():
        parts += [f"<h2>Sweep over {esc(key)}</h2>", img(png_bytes(figure), f"sweep {key}")]
    prose = BN_EXPLANATION[:-WHY_IT_HELPS] if diagnostics else BN_EXPLANATION
    parts += ["<h2>How batch normalization works</h2>", *(f"<p>{esc(line)}</p>" for line in prose)]
    parts += [section_html(diagnostics, img)] if diagnostics else []
    parts += ["<h2>Configuration and provenance</h2>", *map(details, titles, results_list)]
    parts += [details(DIAGNOSTICS, diagnostics)] if diagnostics else []
    return write_text(out, document("normlab report", parts))


def write_markdown_summary(results_list: list[dict], out: Path, control: str | None = None,
                           diagnostics: dict | None = None) -> Path:
    """The page's tables in Markdown, for a README or a pull request."""
    groups = group_settings(results_list)
    control_of = controls(groups, control)
    lines = [MARKDOWN_TITLE, "", markdown(_overview(groups, len(results_list), control_of)), "",
             *(f"- {markdown(line)}" for line in data_lines(results_list)), ""]
    for table in [*_tables(groups, control_of), *([findings(diagnostics)] if diagnostics else [])]:
        lines += [*to_markdown(table), ""]
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
                          "move it away or choose another output file")


def _results_in(run_dir: Path) -> list[Path]:
    """The results.json files of one folder given; none for a diagnose folder (its diagnostics.json is read
    apart), a ConfigError for a folder with neither."""
    if not find_files(run_dir, "results.json") and find_files(run_dir, DIAGNOSTICS):
        return []
    return find_results(run_dir)


def report_command(run_dirs: list[Path], out: Path | None = None, control: str | None = None) -> Path:
    """`normlab report RUN_DIR...`: merge every results.json, write an HTML report (default
    RUN_DIRS[0]/summary.html, beside reproduce's own report.md) and the Markdown summary beside it (same name,
    .md); return the HTML path. A file in the way that is not an earlier report of ours (a user's notes.html,
    reproduce's report.md) is a ConfigError, not overwritten. The first diagnostics.json found in the folders
    (`normlab diagnose`) adds what it measured to both."""
    if not run_dirs:
        raise ConfigError("no run directories given")
    # each results file once, however often the folders given overlap ("runs/a runs/a", "runs runs/a")
    paths = list({path.resolve(): path for run_dir in run_dirs for path in _results_in(run_dir)}.values())
    if not paths:
        raise ConfigError(f"no results.json in {', '.join(map(one_line, run_dirs))}: a report needs a train, "
                          "reproduce or sweep run beside a diagnosis")
    results_list = [load_results(path) for path in paths]
    found = find_diagnostics(run_dirs)
    diagnostics = load_diagnostics(found) if found else None
    out = Path(out) if out is not None else Path(run_dirs[0]) / "summary.html"
    out = out / "summary.html" if out.is_dir() else out
    if out.suffix == ".md":
        raise ConfigError(f"{one_line(out)} would be overwritten by its own Markdown twin; give the page a .html name")
    _refuse_foreign(out, OUR_PAGE)
    _refuse_foreign(out.with_suffix(".md"), OUR_MARKDOWN)
    page = write_html(results_list, out, [display(path.parent) for path in paths], control, diagnostics)
    write_markdown_summary(results_list, out.with_suffix(".md"), control, diagnostics)
    return page
