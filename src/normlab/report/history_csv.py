"""history.csv: every (preset, seed, epoch) as one flat row, for spreadsheets and pandas."""

import csv
import io
from pathlib import Path

from normlab.files import write_text
from normlab.report.results_json import HISTORY_KEYS, runs


def write_history_csv(results: dict, path: Path) -> Path:
    """Write one row per preset, seed and 1-based epoch with the four Keras history metrics (UTF-8, atomic; a run
    that diverged at epoch 1 has no row)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(("preset", "seed", "epoch", *HISTORY_KEYS))
    for run in runs(results):
        columns = zip(*(run.history[key] for key in HISTORY_KEYS))
        for epoch, values in enumerate(columns, start=1):
            writer.writerow((run.preset, run.seed, epoch, *values))
    return write_text(path, text.getvalue())
