"""Learning-curve figures: mean over seeds as a line, ±1 std as a band, one colour per preset.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so nothing touches pyplot's global figure
list or needs a GUI backend: saving renders with Agg, and the figure is garbage once this module returns.
Preset names and swept values are user text: every label passes through `literal.matplotlib`, and legends get
their handles explicitly, because matplotlib drops a label that starts with "_" from an automatic legend.
"""

import io
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from normlab.files import write_bytes
from normlab.report.literal import matplotlib as literal
from normlab.report.results_json import Run
from normlab.report.stats import group_runs, history_stats

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies and in greyscale print.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

# (history key, panel title, y label), in the 2×2 layout's reading order.
PANELS = (
    ("accuracy", "Training accuracy", "accuracy"),
    ("val_accuracy", "Validation accuracy", "accuracy"),
    ("loss", "Training loss", "cross-entropy loss"),
    ("val_loss", "Validation loss", "cross-entropy loss"),
)
DPI = 120
LINESTYLES = ("-", "--", ":", "-.")


def _style(i: int) -> dict:
    """Colour by order of first appearance; past eight series the line style changes with each round."""
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": LINESTYLES[i // len(OKABE_ITO) % len(LINESTYLES)]}


def _draw_panel(ax, groups: dict[str, list[Run]], key: str, title: str, ylabel: str, legend: bool = True) -> list:
    """One metric vs epoch: a line and a ±1 std band per preset; returns the lines, for a shared legend. With no
    completed run the panel says that every run diverged."""
    lines = []
    for i, (preset, runs) in enumerate(groups.items()):
        mean, std = history_stats(runs, key)
        epochs = range(1, len(mean) + 1)
        lines += ax.plot(epochs, mean, marker="o", markersize=3, label=f"{literal(preset)} (n={len(runs)})",
                         **_style(i))
        ax.fill_between(epochs, mean - std, mean + std, color=lines[-1].get_color(), alpha=0.2, linewidth=0)
    if not groups:
        ax.text(0.5, 0.5, "every run diverged: no curve", transform=ax.transAxes, ha="center", va="center")
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if legend and lines:
        _legend(ax, lines, fontsize="small")
    return lines


def _legend(owner, handles: list, **options) -> None:
    """A legend of exactly these handles: labels passed explicitly are shown even when they start with "_"."""
    owner.legend(handles, [h.get_label() for h in handles], **options)


def learning_curves_figure(groups: dict[str, list[Run]], shared_legend: bool = False) -> Figure:
    """The 2×2 grid; with many groups one legend below the grid keeps the curves uncovered."""
    fig = Figure(figsize=(10, 7.5 if shared_legend else 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    lines = [_draw_panel(ax, groups, *panel, legend=not shared_legend) for ax, panel in zip(axes, PANELS)]
    if shared_legend:
        fig.suptitle("Learning curves: mean over seeds, band ± 1 std")
        if lines[0]:
            _legend(fig, lines[0], loc="outside lower center", ncols=min(4, len(groups)))
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, for pages that embed their images (data: URIs) instead of linking files."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_learning_curves(results: dict, path: Path) -> Path:
    """Save the 2×2 grid of training/validation accuracy and loss."""
    return write_bytes(path, png_bytes(learning_curves_figure(group_runs(results))))


def learning_curves_png(groups: dict[str, list[Run]]) -> bytes:
    """The same 2×2 grid for any grouping of runs (label -> completed runs), as PNG bytes; each curve is as long
    as the shortest history of its group."""
    return png_bytes(learning_curves_figure(groups, shared_legend=True))


def sweep_png(series: dict[str, list[tuple[float, float, tuple[float, float] | None]]], key: str,
              panel_of: dict[str, str] | None = None) -> bytes:
    """``sweep_figure`` as PNG bytes."""
    return png_bytes(sweep_figure(series, key, panel_of))


def sweep_figure(series: dict[str, list[tuple[float, float, tuple[float, float] | None]]], key: str,
                 panel_of: dict[str, str] | None = None) -> Figure:
    """Final validation accuracy (%) against one swept value: a line per series, error bars = 95% CI.

    ``series`` maps a label to (x, mean accuracy, CI or None) points; the x axis is logarithmic when the values
    span a factor of ten or more, as learning rates and batch sizes usually do. ``panel_of`` (label -> panel
    title, e.g. the architecture) draws one panel per title side by side, so an MLP's norms and a CNN's are
    compared among themselves; the y axis is shared.
    """
    panels: dict[str, dict] = {}
    for label, points in series.items():
        panels.setdefault((panel_of or {}).get(label, ""), {})[label] = points
    fig = Figure(figsize=(6.5 * len(panels) ** 0.8, 4.2), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    xs = sorted({x for points in series.values() for x, _, _ in points})
    log = xs[0] > 0 and xs[-1] / xs[0] >= 10
    name = literal(key.replace("_", " "))
    for ax, (title, members) in zip(axes, panels.items()):
        bars = []
        for i, (label, points) in enumerate(members.items()):
            points = sorted(points, key=lambda p: p[0])
            y = [100 * p[1] for p in points]
            err = [[100 * (p[1] - p[2][0]) if p[2] else 0 for p in points],
                   [100 * (p[2][1] - p[1]) if p[2] else 0 for p in points]]
            bars.append(ax.errorbar([p[0] for p in points], y, yerr=err, marker="o", markersize=4, capsize=3,
                                    label=literal(label), **_style(i)))
        ax.set(title=literal(title) if title else f"Final validation accuracy vs {name}",
               xlabel=name + (" (log scale)" if log else ""), xscale="log" if log else "linear")
        ax.set_xticks(xs, labels=[f"{x:g}" for x in xs])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3)
        _legend(ax, bars, fontsize="small", title="error bars: 95% CI", title_fontsize="small")
    axes[0].set_ylabel("final validation accuracy (%)")
    if len(panels) > 1:
        fig.suptitle(f"Final validation accuracy vs {name}")
    return fig


def metric_figure(groups: dict[str, list[Run]], key: str = "val_accuracy") -> Figure:
    """One history metric alone (a key of ``PANELS``), mean ± std per group."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    _draw_panel(fig.subplots(), groups, *next(panel for panel in PANELS if panel[0] == key))
    return fig


def plot_val_accuracy(results: dict, path: Path) -> Path:
    """Save validation accuracy alone: the headline figure the README embeds."""
    return write_bytes(path, png_bytes(metric_figure(group_runs(results))))
