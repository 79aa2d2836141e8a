"""report.md: the study's numbers as tables a reader can check against the Keras reference and the figure.

When every run diverged the report says so and lists them; there is nothing to tabulate or compare.
"""

from pathlib import Path

from normlab.files import write_text
from normlab.report.literal import markdown
from normlab.report.results_json import runs
from normlab.report.stats import group_runs
from normlab.report.summary import accuracy_table, diverged_line, reference_table
from normlab.report.table import to_markdown


def _provenance(provenance: dict) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in (provenance.get("versions") or {}).items())
    return [f"- {what}: {markdown(value)}" for what, value in (
        ("git commit", provenance.get("git_commit", "unknown")), ("device", provenance.get("device", "unknown")),
        ("timestamp", provenance.get("timestamp", "unknown")), ("versions", versions or "unknown"))]


def _diverged_list(results: dict, some_completed: bool) -> list[str]:
    bad = [run for run in runs(results) if run.diverged]
    head = ("Left out of the means above:" if some_completed
            else f"Every run diverged ({len(bad)} of {len(bad)}): there is no completed run to average, compare "
                 "or plot.")
    return [head, "", *(f"- {markdown(diverged_line(run.preset, run))}" for run in bad), ""] if bad else []


def write_markdown(results: dict, path: Path, figure: str) -> Path:
    """Write the report: the figure (a path relative to the report), results, Keras comparison, provenance."""
    groups = group_runs(results)
    lines = [
        "# normlab reproduce",
        "",
        *([f"![validation accuracy]({figure})", "", *to_markdown(accuracy_table(groups)), ""] if groups else []),
        *_diverged_list(results, some_completed=bool(groups)),
        *([*to_markdown(reference_table(groups)), ""] if groups else []),
        "## Provenance",
        "",
        *_provenance(results.get("provenance") or {}),
    ]
    return write_text(path, "\n".join(lines) + "\n")
