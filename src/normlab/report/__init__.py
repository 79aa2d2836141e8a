"""The report layer of `normlab reproduce`: turns the results dict (also saved as results.json) into files.

`write_all` writes a study's files; the tables the CLI prints come from `summary`, rendered by `table.to_rich`.
`diagnostics` turns the diagnostics.json of `normlab diagnose` into figures, a table and a section of the page.
"""

from pathlib import Path

from normlab.report.history_csv import write_history_csv
from normlab.report.markdown import write_markdown
from normlab.report.plots import plot_learning_curves, plot_val_accuracy

__all__ = ["write_all"]


def write_all(results: dict, out_dir: Path) -> list[Path]:
    """Write history.csv, both figures and report.md into out_dir; return what was written. (TensorBoard runs
    are written live, as training goes: ``report.tensorboard``.)

    Every file is written atomically as UTF-8; runs that diverged, even all of them, are reported as such.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    val_accuracy = plot_val_accuracy(results, out_dir / "val_accuracy.png")
    return [
        write_history_csv(results, out_dir / "history.csv"),
        plot_learning_curves(results, out_dir / "learning_curves.png"),
        val_accuracy,
        write_markdown(results, out_dir / "report.md", figure=val_accuracy.name),
    ]
