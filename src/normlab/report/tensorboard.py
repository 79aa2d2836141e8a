"""TensorBoard event files, written live: one run directory per preset and seed, so TensorBoard's run selector
compares them while training goes on.

``LiveTensorBoard`` is an ``on_epoch`` hook: each epoch's scalars land in ``FOLDER/tensorboard/PRESET/seedN`` of
its job's run folder as the epoch ends, at global step = 1-based epoch, and the test metrics at the last epoch
once the job is finished. A seed that diverged logs nothing from its first non-finite loss on, and no test, as
results.json keeps it. Resuming, a run's event file is written whole again: its old event files go when the
first event of the run arrives, and the epochs a checkpoint restored come first (``fit`` replays them), so no
step is missing or logged twice. Directory names come from user text (preset names), so each passes through
`literal.path_component` and stays inside the root. Event files are appended to as tensorboardX writes them.
"""

import importlib
import secrets
import sys
import time
from pathlib import Path

import numpy as np


def _import_tensorboardx_without_torch() -> None:
    """tensorboardX's writer module imports torch when it is installed (the dev and bench extras), only to accept
    torch tensors, which we never pass: 3.5 of the 8 s of imports of a `normlab train` start (2-core EPYC, torch
    2.13). A ``None`` in ``sys.modules`` makes that ``import torch`` raise the ImportError tensorboardX expects
    without torch; the entry goes at once, so torch stays importable (unless already imported: then it is used)."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None
    try:
        importlib.import_module("tensorboardX")
    finally:
        if hide:
            del sys.modules["torch"]


_import_tensorboardx_without_torch()
from tensorboardX.event_file_writer import EventsWriter  # noqa: E402
from tensorboardX.proto.event_pb2 import Event  # noqa: E402
from tensorboardX.summary import histogram, scalar  # noqa: E402

from normlab.report.literal import path_component  # noqa: E402
from normlab.train.loop import finite  # noqa: E402

# Keras history key -> TensorBoard tag; the "train/" and "val/" prefixes put each pair on one dashboard card.
TAGS = {"loss": "train/loss", "accuracy": "train/accuracy", "val_loss": "val/loss", "val_accuracy": "val/accuracy"}
TEST_KEYS = ("loss", "accuracy")
HISTOGRAM_BINS = 64


def events_writer(run_dir: Path) -> EventsWriter:
    """A new event file in ``run_dir`` (created if need be). tensorboardX opens it with a plain ``open``, which
    follows a link, and names it by the second and the host name, which anyone can guess: a random token at the
    end of its name leaves nothing to plant a link at. TensorBoard reads every file with "tfevents" in its name."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return EventsWriter(str(run_dir / "events"), filename_suffix=f".{secrets.token_hex(8)}")


def run_directory(root: Path, *names) -> Path:
    """root/NAME/…, one safe component per name: "../x", "/etc" or ".." cannot climb out of root."""
    return Path(root).joinpath(*map(path_component, names))


class LiveTensorBoard:
    """The hook (``fit``'s ``EpochEvent``s, with a ``job`` that has ``preset`` and run ``folder``), as a context
    manager that closes what is still open; events of a job without a run folder are not logged.

    Written synchronously, one flush per event: tensorboardX's ``SummaryWriter`` queues events for a thread that
    writes them at most every 2 minutes, and its ``flush()`` misses what is still queued.
    """

    def __init__(self):
        self.writers: dict[Path, EventsWriter] = {}
        self.diverged: set[Path] = set()

    def __call__(self, event) -> None:
        if event.job is None or event.job.folder is None:
            return
        for i, seed in enumerate(event.seeds):
            run_dir = run_directory(Path(event.job.folder) / "tensorboard", event.job.preset, f"seed{seed}")
            values = {key: float(np.asarray(value)[i]) for key, value in event.metrics.items()}
            if event.stage == "test":
                if run_dir not in self.diverged:  # only the metrics results.json defines
                    self._write(run_dir, event.epoch, {f"test/{key}": values[key] for key in TEST_KEYS})
                self.diverged.discard(run_dir)
                if run_dir in self.writers:
                    self.writers.pop(run_dir).close()
            elif run_dir not in self.diverged:
                if finite(values):
                    self._write(run_dir, event.epoch, {tag: values[key] for key, tag in TAGS.items()})
                else:
                    self.diverged.add(run_dir)

    def histograms(self, folder: Path, preset: str, seed: int, step: int, arrays: dict[str, np.ndarray]) -> None:
        """One histogram per tag (``activations/LAYER``, ``gradients/LAYER/VARIABLE``) at ``step``, in the run
        directory of ``preset`` and ``seed``; non-finite values are left out (NaN has no bin), and so is a tag that
        has no finite value left (a diverged seed)."""
        finite_values = {tag: values[np.isfinite(values)].astype(np.float64) for tag, values in arrays.items()}
        self._write(run_directory(Path(folder) / "tensorboard", preset, f"seed{seed}"), step,
                    {tag: histogram(tag, values, HISTOGRAM_BINS)
                     for tag, values in finite_values.items() if values.size})

    def _write(self, run_dir: Path, step: int, values: dict) -> None:
        """Scalars (floats) or ready summaries (histograms) under their tags."""
        if run_dir not in self.writers:  # this process logs the run from its first epoch: older files go
            for old in run_dir.glob("events.out.tfevents.*"):
                old.unlink()
            self.writers[run_dir] = events_writer(run_dir)
        writer = self.writers[run_dir]
        for tag, value in values.items():
            summary = scalar(tag, value) if isinstance(value, float) else value
            writer.write_event(Event(wall_time=time.time(), step=step, summary=summary))
        writer.flush()

    def __enter__(self) -> "LiveTensorBoard":
        return self

    def __exit__(self, *exc) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
