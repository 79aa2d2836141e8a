"""Learning-curve figures: mean over seeds as a line, ±1 std as a band, one colour per preset.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so nothing touches pyplot's global figure
list or needs a GUI backend: saving renders with Agg, and the figure is garbage once this module returns.
"""

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

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


def _draw_panel(ax, groups: dict[str, list[dict]], key: str, title: str, ylabel: str) -> None:
    """One metric vs epoch: a line and a ±1 std band per preset, coloured by order of first appearance."""
    for i, (preset, runs) in enumerate(groups.items()):
        mean, std = history_stats(runs, key)
        epochs = range(1, len(mean) + 1)
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(epochs, mean, color=colour, marker="o", markersize=3, label=f"{preset} (n={len(runs)})")
        ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def plot_learning_curves(results: dict, path: Path) -> Path:
    """Save the 2×2 grid of training/validation accuracy and loss."""
    groups = group_runs(results)
    fig = Figure(figsize=(10, 7), layout="constrained")
    for ax, panel in zip(fig.subplots(2, 2).flat, PANELS):
        _draw_panel(ax, groups, *panel)
    fig.savefig(path, dpi=DPI)
    return path


def plot_val_accuracy(results: dict, path: Path) -> Path:
    """Save validation accuracy alone: the headline figure the README embeds."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    _draw_panel(fig.subplots(), group_runs(results), *PANELS[1])
    fig.savefig(path, dpi=DPI)
    return path
