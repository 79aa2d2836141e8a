"""report.md: what the runs trained on, their numbers as tables a reader can check against the figure, and — for
the study itself (``dataset.is_the_study``) — against the published Keras run.

When every run diverged the report says so and lists them; there is nothing to tabulate or compare.
"""

from pathlib import Path

from normlab.files import write_text
from normlab.report.dataset import describe, differences, is_the_study
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


def _header(results: dict) -> list[str]:
    """The data, the images of each split the runs used, the preprocessing, and whether Keras' numbers apply."""
    different = differences(results)
    compared = "yes (the study's data and settings)" if not different else f"no ({', '.join(different)})"
    return [*(f"- {what}: {markdown(text)}" for what, text in describe(results).items()),
            f"- compared with the published Keras run: {markdown(compared)}", ""]


def _diverged_list(results: dict, some_completed: bool) -> list[str]:
    bad = [run for run in runs(results) if run.diverged]
    head = ("Left out of the means above:" if some_completed
            else f"Every run diverged ({len(bad)} of {len(bad)}): there is no completed run to average, compare "
                 "or plot.")
    return [head, "", *(f"- {markdown(diverged_line(run.preset, run))}" for run in bad), ""] if bad else []


def write_markdown(results: dict, path: Path, figure: str) -> Path:
    """Write the report: its data, the figure (a path relative to the report), results, the Keras comparison
    where the runs are the study, provenance."""
    groups = group_runs(results)
    lines = [
        "# normlab reproduce",
        "",
        *_header(results),
        *([f"![validation accuracy]({figure})", "", *to_markdown(accuracy_table(groups)), ""] if groups else []),
        *_diverged_list(results, some_completed=bool(groups)),
        *([*to_markdown(reference_table(groups)), ""] if groups and is_the_study(results) else []),
        "## Provenance",
        "",
        *_provenance(results.get("provenance") or {}),
    ]
    return write_text(path, "\n".join(lines) + "\n")
