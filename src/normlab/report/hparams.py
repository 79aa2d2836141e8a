"""TensorBoard HParams summaries, so the HParams tab compares a sweep's trials side by side."""

import time
from pathlib import Path

from normlab.report.literal import printable
from normlab.report.results_json import Run, runs
from normlab.report.tensorboard import events_writer, run_directory
# after normlab.report.tensorboard, which imports tensorboardX without torch
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.summary import hparams as hparams_summaries, scalar


def _hparam(value):
    return value if isinstance(value, (int, float, bool)) else printable(value)


def _metrics(run: Run) -> dict[str, float]:
    """Final val/test accuracy of a completed run; the epoch a diverged one stopped at (when recorded)."""
    if not run.diverged:
        return {"hparam/val_accuracy": run.final_val_accuracy, "hparam/test_accuracy": run.test["accuracy"]}
    return {} if run.diverged_epoch is None else {"hparam/diverged_epoch": float(run.diverged_epoch)}


def write_hparams(results_list: list[dict], root: Path) -> Path:
    """One run per (trial, preset, seed): its swept values + preset + seed, and final val/test metrics."""
    for results in results_list:
        trial = (results.get("study") or {}).get("trial", "run")
        for run in runs(results):
            hparams = {printable(k): _hparam(v)
                       for k, v in {**run.setting, "preset": run.preset, "seed": run.seed}.items()}
            metrics = _metrics(run)
            writer = events_writer(run_directory(root, trial, run.preset, f"seed{run.seed}"))
            try:  # what tensorboardX's SummaryWriter.add_hparams writes
                for summary in (*hparams_summaries(hparams, metrics), *(scalar(k, v) for k, v in metrics.items())):
                    writer.write_event(Event(wall_time=time.time(), summary=summary))
            finally:
                writer.close()
    return root
