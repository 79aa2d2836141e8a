"""report.md: the study's numbers as tables a reader can check against the Keras reference and the figure.

When every run diverged the report says so and lists them; there is nothing to tabulate or compare.
"""

from pathlib import Path

from normlab.files import write_text
from normlab.report.literal import markdown
from normlab.report.stats import BASELINE, diverged, gain_pp, group_runs, history_stats, num_epochs, test_stats

# Validation accuracy of the public single-seed Keras runs at epochs 1 and 10: what we aim to reproduce.
REFERENCE_VAL_ACCURACY = {
    "baseline": {1: 0.7160, 10: 0.8396},
    "bn-after": {1: 0.8230, 10: 0.8750},
    "bn-before": {1: 0.7812, 10: 0.8660},
}
MISSING = "—"


def reported_epochs(n_epochs: int) -> list[int]:
    """Epochs 1, 5 and 10 where the study reached them, plus the last one: early, middle and final behaviour."""
    return sorted({e for e in (1, 5, 10) if e <= n_epochs} | {n_epochs})


def _percent(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _pp(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f} pp"


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table; every column but the first is right-aligned because it holds numbers. Cells are shown
    literally, so a preset named "a|b" stays one cell."""
    line = lambda cells: "| " + " | ".join(markdown(c) for c in cells) + " |"  # noqa: E731
    return [line(header), "|---" + "|---:" * (len(header) - 1) + "|", *map(line, rows)]


def diverged_line(name: str, run: dict) -> str:
    """'NAME seed S diverged at epoch E (non-finite loss)': how every report names a diverged run."""
    epoch = run.get("diverged_epoch")
    return f"{name} seed {run['seed']} diverged at epoch {'?' if epoch is None else epoch} (non-finite loss)"


def _results_table(groups: dict[str, list[dict]], epochs: list[int]) -> list[str]:
    has_baseline = BASELINE in groups
    header = ["preset", "n", *(f"val acc @{e}" for e in epochs), "test acc"]
    header += [f"gain @{e}" for e in epochs] if has_baseline else []
    rows = []
    for preset, runs in groups.items():
        mean, std = history_stats(runs, "val_accuracy")
        row = [preset, len(runs), *(_percent(mean[e - 1], std[e - 1]) for e in epochs), _percent(*test_stats(runs))]
        row += [_pp(gain_pp(groups, preset, e)) for e in epochs] if has_baseline else []
        rows.append(row)
    return _table(header, rows)


def _reference_table(groups: dict[str, list[dict]], n_epochs: int) -> list[str]:
    """Ours minus Keras at the same epoch; an epoch the study did not reach is left blank, not compared."""
    header, rows = ["preset"], []
    for e in (1, 10):
        header += [f"Keras @{e}", f"ours @{e}", f"Δ @{e}"]
    for preset in (p for p in groups if p in REFERENCE_VAL_ACCURACY):
        mean, _ = history_stats(groups[preset], "val_accuracy")
        row = [preset]
        for e, reference in REFERENCE_VAL_ACCURACY[preset].items():
            reached = e <= n_epochs
            row += [f"{100 * reference:.2f}",
                    f"{100 * mean[e - 1]:.2f}" if reached else MISSING,
                    _pp(100 * (mean[e - 1] - reference)) if reached else MISSING]
        rows.append(row)
    return _table(header, rows) if rows else ["No preset of this study has a Keras reference."]


def _provenance(provenance: dict) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in (provenance.get("versions") or {}).items())
    return [f"- {what}: {markdown(value)}" for what, value in (
        ("git commit", provenance.get("git_commit", "unknown")), ("device", provenance.get("device", "unknown")),
        ("timestamp", provenance.get("timestamp", "unknown")), ("versions", versions or "unknown"))]


def _diverged_list(results: dict, some_completed: bool) -> list[str]:
    runs = diverged(results)
    head = ("Left out of the means above:" if some_completed
            else f"Every run diverged ({len(runs)} of {len(runs)}): there is no completed run to average, compare "
                 "or plot.")
    return [head, "", *(f"- {markdown(diverged_line(run['preset'], run))}" for run in runs), ""] if runs else []


def _accuracy(groups: dict[str, list[dict]], n_epochs: int, figure: str) -> list[str]:
    return [
        f"![validation accuracy]({figure})",
        "",
        "## Accuracy over seeds",
        "",
        "Accuracy in percent as mean ± std over the n seeds"
        + (f"; gain is mean validation accuracy minus `{BASELINE}`'s, in percentage points." if BASELINE in groups
           else "."),
        "",
        *_results_table(groups, reported_epochs(n_epochs)),
        "",
    ]


def _reference(groups: dict[str, list[dict]], n_epochs: int) -> list[str]:
    return [
        "## Against the public Keras reference",
        "",
        "Validation accuracy of the public single-seed Keras runs, and our mean at the same epoch; "
        "Δ is ours minus Keras in percentage points.",
        "",
        *_reference_table(groups, n_epochs),
        "",
    ]


def write_markdown(results: dict, path: Path, figure: str) -> Path:
    """Write the report: the figure (a path relative to the report), results, Keras comparison, provenance."""
    groups, n_epochs = group_runs(results), num_epochs(results)
    lines = [
        "# normlab reproduce",
        "",
        *(_accuracy(groups, n_epochs, figure) if groups else []),
        *_diverged_list(results, some_completed=bool(groups)),
        *(_reference(groups, n_epochs) if groups else []),
        "## Provenance",
        "",
        *_provenance(results.get("provenance") or {}),
    ]
    return write_text(path, "\n".join(lines) + "\n")
