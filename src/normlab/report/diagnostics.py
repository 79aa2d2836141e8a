"""diagnostics.json of `normlab diagnose` as a report: the papers' figures, their numbers, and a page section.

Ioffe & Szegedy (2015) credited BN with reducing internal covariate shift (their Fig. 1: one unit's input drifts
without BN); Santurkar et al. (2018) measured that shift through gradients (Definition 2.1) and the loss landscape
along the gradient (Fig. 4), and credited smoothness instead. Each figure and number here is one of those
measurements. In the figures a line is the mean over seeds and a band their range (min–max): for three seeds a 95%
t interval is wider than their range (t = 4.30). The table gives the mean and that interval (`stats.summarize`).
A null (a seed that diverged) is NaN and left out of every mean.
The file is checked before any of this (`diagnostics_json.load_diagnostics`).
"""

import html
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from normlab.files import write_text
from normlab.report.diagnostics_json import MEASUREMENTS, NAME
from normlab.report.dataset import one_line as data_line
from normlab.report.literal import matplotlib as literal, printable
from normlab.report.page import details, document, img
from normlab.report.plots import _legend, _style, png_bytes
from normlab.report.stats import summarize
from normlab.report.table import MISSING, Table, columns, to_html

TITLE = "Why BN helps here — measured"
# (key, quantity, its value when the earlier layers' update left the gradient as it was)
ICS_PANELS = (("l2", "‖G − G′‖₂", 0), ("cosine", "cos(G, G′)", 1))
GAP_LINES = (("batch_stats", "batch statistics (training mode)"), ("moving", "moving averages (inference)"),
             ("precise", "precise BN (population statistics)"))
SPREAD = "line: mean over seeds, band: min–max"
STEP = "training step"
GRADIENT_DISTANCE = "‖g − ∇L(w − ηg)‖₂"


def _array(series) -> np.ndarray:
    """[seed][step] as float64; nulls and non-finite values (a diverged seed) as NaN, which nan-statistics skip."""
    a = np.array(series, dtype=np.float64)
    a[~np.isfinite(a)] = np.nan
    return a


def _nan_quietly(reduce, a: np.ndarray, axis: int) -> np.ndarray:
    """``reduce`` (a numpy nan-function) along ``axis``: NaN where every value is NaN, without numpy's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return reduce(a, axis=axis)


def _over_seeds(series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over seeds at each step; NaN (a gap in the line) where every seed is null."""
    a = _array(series)
    return tuple(_nan_quietly(reduce, a, 0) for reduce in (np.nanmean, np.nanmin, np.nanmax))


def _mean_line(ax, x, series, style: dict, label: str = "", scale: float = 1.0, band: bool = True):
    """The mean over seeds as a line, their range as a band; markers where the points are few enough to see."""
    mean, low, high = (scale * v for v in _over_seeds(series))
    line, = ax.plot(x, mean, label=label, marker="o" if len(x) <= 30 else None, markersize=3, **style)
    if band:
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def _range(ax, x, low_series, high_series, style: dict, label: str = ""):
    """Two series' means over seeds as thin lines, shaded between: a band that is not a spread over seeds (the
    15th to 85th percentile, the smallest to the largest value over η)."""
    low, high = (_over_seeds(series)[0] for series in (low_series, high_series))
    ax.fill_between(x, low, high, color=style["color"], alpha=0.15, linewidth=0)
    _mean_line(ax, x, low_series, {**style, "linewidth": 1.0}, band=False)
    return _mean_line(ax, x, high_series, {**style, "linewidth": 1.0}, label, band=False)


def _thousands(x: float, _) -> str:
    """17,500 steps as "17.5k": five-digit tick labels of a narrow panel would run into each other."""
    return f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"


def _finish(ax, title: str, xlabel: str, ylabel: str, log_if_wide: bool = False) -> None:
    """Labels and a light grid; y tick labels show the values themselves, not "1e-7+1" (a cosine within float32
    rounding of 1). With ``log_if_wide`` (norms and losses), a log y axis when everything drawn is positive and
    spans two decades or more: a model that starts badly would flatten the rest on a linear axis."""
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.ticklabel_format(axis="y", useOffset=False)
    low, high = ax.dataLim.y0, ax.dataLim.y1
    if log_if_wide and 0 < low and high >= 100 * low:
        ax.set_yscale("log")


def _having(presets: dict, key: str) -> list[tuple[int, str, dict]]:
    """(style index, name, preset) of the presets that measured ``key``: a preset keeps its colour in every figure."""
    return [(i, name, p) for i, (name, p) in enumerate(presets.items()) if p.get(key) is not None]


def _label(name: str, preset: dict) -> str:
    return f"{literal(name)} (n={len(preset['seeds'])})"


def _panels(n: int, width: float, height: float) -> tuple[Figure, list]:
    """A figure of n panels, at most three a row, with room for a title and a legend: never narrower than they are,
    or one or two panels would cut both off at the sides."""
    cols = min(3, n)
    fig = Figure(figsize=(max(width * cols, 9.5), height * -(-n // cols) + 0.8), layout="constrained")
    axes = fig.subplots(-(-n // cols), cols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


def _shared_legend(fig: Figure, handles: list) -> None:
    """Below the panels, outside them, so no curve is covered."""
    _legend(fig, handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize="small")


def _accuracy_figure(presets: dict) -> Figure | None:
    """Ioffe & Szegedy's Fig. 1(a), Santurkar et al.'s Fig. 2: validation accuracy against training steps."""
    drawn = _having(presets, "val_accuracy")
    if not drawn:
        return None
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    lines = [_mean_line(ax, p["steps"], p["val_accuracy"], _style(i), _label(name, p), 100) for i, name, p in drawn]
    _finish(ax, f"Validation accuracy during training ({SPREAD})", STEP, "validation accuracy (%)")
    _shared_legend(fig, lines)
    return fig


def _percentiles_figure(presets: dict) -> Figure | None:
    """Ioffe & Szegedy's Fig. 1(b, c): the 15th, 50th and 85th percentiles of one unit's input, one panel each."""
    drawn = _having(presets, "percentiles")
    if not drawn:
        return None
    fig, axes = _panels(len(drawn), 4.4, 3.3)
    for ax, (i, name, p) in zip(axes, drawn):
        watched = p["percentiles"]
        _range(ax, p["steps"], watched["p15"], watched["p85"], _style(i))
        _mean_line(ax, p["steps"], watched["p50"], {**_style(i), "linewidth": 2.0}, band=False)
        _finish(ax, f"{literal(name)}\n{literal(watched['layer'])}, unit {watched['unit']}", STEP,
                "input to the nonlinearity")
    fig.suptitle("One unit's input on the probe batch: 15th and 85th percentile (thin lines, shaded between), "
                 "median (thick); each a mean over seeds", wrap=True)
    return fig


def _ics_figure(presets: dict) -> Figure | None:
    """Santurkar et al.'s Fig. 5: ‖G − G′‖₂ and cos(G, G′) of each layer against training steps."""
    drawn = _having(presets, "ics")
    layers = list(dict.fromkeys(layer for _, _, p in drawn for layer in p["ics"]))
    if not layers:
        return None
    fig = Figure(figsize=(11, 2.8 * len(layers) + 1.2), layout="constrained")
    handles = {}
    for row, layer in zip(fig.subplots(len(layers), 2, squeeze=False, sharex=True), layers):
        for ax, (part, quantity, unshifted) in zip(row, ICS_PANELS):
            for i, name, p in (d for d in drawn if layer in d[2]["ics"]):
                handles[name] = _mean_line(ax, p["steps"], p["ics"][layer][part], _style(i), _label(name, p))
            _finish(ax, f"{literal(layer)}: {quantity}", STEP if layer == layers[-1] else "",
                    f"{quantity} ({unshifted}: no shift)", log_if_wide=part == "l2")
    fig.suptitle(f"Internal covariate shift, Santurkar et al.'s Definition 2.1, per layer ({SPREAD})", wrap=True)
    _shared_legend(fig, list(handles.values()))
    return fig


def _landscape_figure(presets: dict) -> Figure | None:
    """Santurkar et al.'s Fig. 4: loss and gradient change along the gradient, and the effective β-smoothness."""
    panels = (("landscape", "Loss landscape", "L(w − ηg), range over η"),
              ("gradient_predictiveness", "Gradient predictiveness", f"{GRADIENT_DISTANCE}, range over η"),
              ("beta_smoothness", "Effective β-smoothness", f"max over η of {GRADIENT_DISTANCE} / ‖ηg‖₂"))
    if not any(_having(presets, key) for key, _, _ in panels):
        return None
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    handles = {}
    for ax, (key, title, ylabel) in zip(fig.subplots(1, 3), panels):
        for i, name, p in _having(presets, key):
            parts = MEASUREMENTS[key][0]
            handles[name] = (_range(ax, p["steps"], *(p[key][part] for part in parts), _style(i), _label(name, p))
                             if parts else _mean_line(ax, p["steps"], p[key], _style(i), _label(name, p)))
        _finish(ax, title, STEP, ylabel, log_if_wide=True)
    fig.suptitle("Along the gradient g: range over the step sizes η shaded, each edge a mean over seeds; "
                 "β: mean over seeds, band min–max", wrap=True)
    _shared_legend(fig, list(handles.values()))
    return fig


def _gap_figure(presets: dict) -> Figure | None:
    """BN's three kinds of statistics on the same weights, validation accuracy per epoch; presets with BN only."""
    drawn = _having(presets, "train_eval_gap")
    if not drawn:
        return None
    fig, axes = _panels(len(drawn), 4.6, 3.5)
    for ax, (_, name, p) in zip(axes, drawn):
        lines = [_mean_line(ax, p["epochs"], p["train_eval_gap"][key], _style(j), label, 100)
                 for j, (key, label) in enumerate(GAP_LINES)]
        _finish(ax, literal(name), "epoch", "validation accuracy (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Validation accuracy with batch, moving and precise BN statistics ({SPREAD})", wrap=True)
    _shared_legend(fig, lines)
    return fig


FIGURES = {"accuracy.png": _accuracy_figure, "percentiles.png": _percentiles_figure, "ics.png": _ics_figure,
           "landscape.png": _landscape_figure, "train_eval_gap.png": _gap_figure}


def figures(diagnostics: dict) -> dict[str, bytes]:
    """File name -> PNG of every figure some preset has data for (train_eval_gap.png needs a preset with BN)."""
    presets = diagnostics["presets"]
    return {name: png_bytes(fig) for name, draw in FIGURES.items() if (fig := draw(presets)) is not None}


def _per_seed_mean(series) -> np.ndarray:
    """Each seed's mean over its measured steps, nulls left out; NaN for a seed with none."""
    return _nan_quietly(np.nanmean, _array(series), 1)


def _after_one_epoch(preset: dict) -> int | None:
    """The index of the measurement taken after exactly one epoch of training, None with one epoch: every epoch is
    measured at the same offsets from its first step (0, every, 2·every, ...), so it is epoch 2's first."""
    per_epoch = len(preset["steps"]) // len(preset["epochs"])
    return per_epoch if len(preset["epochs"]) > 1 and per_epoch else None


def _percent(v: float) -> str:
    return f"{100 * v:.2f}"


def _pp(v: float) -> str:
    """A difference of accuracies in percentage points, signed."""
    return f"{100 * v:+.2f}"


def _significant(v: float) -> str:
    """Four significant digits, trailing zeros kept: gradient norms and losses span decades between presets."""
    return f"{v:#.4g}"


def _quantities(preset: dict) -> Iterator[tuple[str, np.ndarray, Callable[[float], str]]]:
    """(measure, one value per seed, how a value is shown) of every quantity the preset has."""
    steps = preset["steps"]
    if preset.get("val_accuracy") is not None:
        accuracy = _array(preset["val_accuracy"])
        if (i := _after_one_epoch(preset)) is not None:
            yield f"validation accuracy %, step {steps[i]:,} (after epoch 1)", accuracy[:, i], _percent
        yield f"validation accuracy %, step {steps[-1]:,} (last measured)", accuracy[:, -1], _percent
    for layer, ics in (preset.get("ics") or {}).items():
        yield f"ICS ‖G − G′‖₂ of {layer}, mean over steps", _per_seed_mean(ics["l2"]), _significant
        yield f"ICS cos(G, G′) of {layer}, mean over steps", _per_seed_mean(ics["cosine"]), _significant
    if preset.get("landscape") is not None:
        band = _array(preset["landscape"]["loss_max"]) - _array(preset["landscape"]["loss_min"])
        yield "loss range over η (max − min of L(w − ηg)), mean over steps", _per_seed_mean(band), _significant
    if preset.get("gradient_predictiveness") is not None:
        yield (f"gradient predictiveness: max over η of {GRADIENT_DISTANCE}, mean over steps",
               _per_seed_mean(preset["gradient_predictiveness"]["max"]), _significant)
    if preset.get("beta_smoothness") is not None:
        yield "effective β-smoothness, mean over steps", _per_seed_mean(preset["beta_smoothness"]), _significant
    if (gap := preset.get("train_eval_gap")) is not None:
        last = {key: _array(gap[key])[:, -1] for key, _ in GAP_LINES}
        yield "last epoch: moving − batch-statistics accuracy, pp", last["moving"] - last["batch_stats"], _pp
        yield "last epoch: precise − moving accuracy, pp", last["precise"] - last["moving"], _pp


def _cells(values: np.ndarray, text: Callable[[float], str]) -> tuple[str, str, str]:
    """n (of the seeds, when some have no value), mean and 95% CI over the seeds with a finite value."""
    s = summarize(values[np.isfinite(values)])
    n = str(s.n) if s.n == len(values) else f"{s.n} of {len(values)}"
    return (n, MISSING if s.mean is None else text(s.mean),
            MISSING if s.ci is None else f"{text(s.ci[0])} – {text(s.ci[1])}")


def findings(diagnostics: dict) -> Table:
    """Every measured quantity per preset, a row each, grouped by quantity so presets compare down a column."""
    groups: dict[str, list[tuple[str, ...]]] = {}
    for name, preset in diagnostics["presets"].items():
        for measure, values, text in _quantities(preset):
            groups.setdefault(measure, []).append((measure, name, *_cells(values, text)))
    return Table("The measurements in numbers", columns(("measure", "preset"), ("n", "mean", "95% CI")),
                 tuple(row for rows in groups.values() for row in rows),
                 "Mean and 95% confidence interval of the mean (Student's t; none for one seed) over the n seeds "
                 "with a value (a seed that diverged has none). 'Mean over steps': each seed's values averaged over "
                 "its measured steps first. Accuracy in %, differences in percentage points (pp).",
                 empty=f"{NAME} holds no measurement.")


def _intro(diagnostics: dict) -> list[str]:
    measured = "; ".join(f"{name} (seeds {', '.join(map(str, p['seeds']))})"
                         for name, p in diagnostics["presets"].items())
    return [
        "Ioffe & Szegedy (2015) introduced batch normalization to reduce internal covariate shift — the change in "
        "the distribution of a layer's inputs while the layers before it train — and showed it with one sigmoid "
        "unit of the last hidden layer, whose input percentiles drifted without BN and held steady with it "
        "(their Fig. 1).",
        "Santurkar et al. (2018) argued that this is not why BN helps: BN with random noise injected after it "
        "(“noisy” BN, unsteady distributions by construction) trained about as well as plain BN (their Fig. 2); "
        "measured through gradients (their Definition 2.1), BN did not reduce internal covariate shift; instead it "
        "made the loss landscape smoother — along the gradient the loss changed less, the gradient was more "
        "predictive and the effective β-smoothness was smaller (their Fig. 4).",
        f"Below, the same measurements on this study, {_when(diagnostics['config'])}: {measured}. Each caption "
        "says what was measured; the table below the figures gives the numbers.",
    ]


def _when(config: dict) -> str:
    """When the probes ran: `normlab diagnose` measures each epoch from its first step on."""
    return f"at the start of every epoch and every {config['every']:,} training steps within it"


def _captions(config: dict) -> dict[str, tuple[str, str]]:
    """Figure name -> (heading, caption): what was measured, from the run's config; no verdict."""
    when, etas = _when(config), ", ".join(f"{eta:g}" for eta in config["etas"])
    return {
        "accuracy.png": ("Validation accuracy", (
            f"Accuracy on the whole validation set in inference mode (BN with its moving averages), {when}; step s "
            f"is measured after s updates, step 0 at initialization. {SPREAD.capitalize()}. As Ioffe & Szegedy's "
            "Fig. 1(a) and Santurkar et al.'s Fig. 2, which compares no BN, BN and noisy BN.")),
        "percentiles.png": ("What one unit's nonlinearity receives", (
            "The 15th, 50th and 85th percentiles of the input to one unit's nonlinearity in the last hidden layer "
            f"(layer and unit in each panel's title), over the probe batch — {config['probe']} — {when}; each "
            "percentile is averaged over the seeds. As Ioffe & Szegedy's Fig. 1(b) without BN and 1(c) with BN.")),
        "ics.png": ("Internal covariate shift", (
            f"Santurkar et al.'s Definition 2.1 for each dense layer, {when}, on that step's training batch: G is "
            "the gradient of the batch loss with respect to the layer's weights, G′ the same gradient once every "
            "earlier layer has taken this step's update. Left ‖G − G′‖₂ (0 if the earlier layers' update left it "
            "unchanged), right cos(G, G′) (1 likewise); a layer with no trained layer before it has 0 and 1 by "
            f"definition. {SPREAD.capitalize()}. As Santurkar et al.'s Fig. 5.")),
        "landscape.png": ("The loss landscape along the gradient", (
            f"At the weights w and the gradient g of the training batch, {when}, for each step size η in {etas}: "
            f"left the loss L(w − ηg), middle the gradient predictiveness {GRADIENT_DISTANCE}, each shaded from its "
            "smallest to its largest value over η, each edge averaged over the seeds; right the effective "
            f"β-smoothness, the largest over η of {GRADIENT_DISTANCE} / ‖ηg‖₂. A panel whose values span two "
            "decades or more has a log y axis. As Santurkar et al.'s Fig. 4.")),
        "train_eval_gap.png": ("Batch, moving and precise statistics", (
            "Validation accuracy after each epoch, of the same weights with three kinds of BN statistics: each "
            "validation batch's own (training mode), the moving averages (inference, as Keras), and population "
            f"statistics recomputed after the epoch over {config['precise_batches']:,} training batches with the "
            f"weights frozen (precise BN, Ioffe & Szegedy's Algorithm 2). Presets with BN only. "
            f"{SPREAD.capitalize()}.")),
    }


def section_html(diagnostics: dict, img: Callable[[bytes, str], str], pngs: dict[str, bytes] | None = None) -> str:
    """The page section: the two papers' claims, each figure under a caption of what it measures, the numbers.

    ``img(png, alt)`` shows a figure: `page.img` embeds it; a page beside the PNG files could link them instead.
    ``pngs`` are the ``figures`` when the caller has drawn them already (drawing is most of the page's cost).
    """
    esc, captions = html.escape, _captions(diagnostics["config"])
    parts = [f"<h2>{TITLE}</h2>", *(f"<p>{esc(paragraph)}</p>" for paragraph in _intro(diagnostics))]
    for name, png in (figures(diagnostics) if pngs is None else pngs).items():
        heading, caption = captions[name]
        parts += [f"<h3>{esc(heading)}</h3><p class=note>{esc(caption)}</p>", img(png, heading)]
    return "".join(parts) + to_html(findings(diagnostics))


def write_page(diagnostics: dict, path: Path, pngs: dict[str, bytes] | None = None) -> Path:
    """`normlab diagnose`'s own page: the data it trained on (a diagnosis from before they were recorded says
    nothing), the measured section, then the run's config and provenance; atomic."""
    data = (f"<ul><li>{html.escape(printable(data_line(diagnostics)))}</li></ul>"
            if diagnostics.get("data") is not None else "")
    return write_text(path, document("normlab diagnose", [
        f"<h1>normlab diagnose</h1>{data}", section_html(diagnostics, img, pngs),
        "<h2>Configuration and provenance</h2>", details(NAME, diagnostics)]))
