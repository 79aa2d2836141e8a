"""What every bench child shares: its options, the study's data, epoch-time summary, peak RSS, the JSON result.

Imports nothing but numpy and normlab's data layer, so a Keras or PyTorch child does not pay for JAX. Importing
normlab changes no setting (``runtime.configure`` is explicit), so a peer runs with ``XLA_FLAGS`` as the user set
them, and each framework runs as its users run it.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import threading
from pathlib import Path

import numpy as np

from normlab.files import MiB, read_json, write_text

MODEL_BYTES = 16 * MiB  # a model's description and study config: a few kB


def child_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", type=Path, required=True,
                        help="JSON from the parent: the preset's name, its study config and its layers (describe)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--subset", type=int, help="train on the first N training images")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    return parser


def read_model(args, preset: str | None = None) -> dict:
    """``{"preset", "config", "description"}``: normlab rebuilds the model from its study, a peer from the layers.

    Another ``preset``'s is read from the same folder, where the parent writes each model it hands out.
    """
    return read_json(args.model if preset is None else args.model.with_name(f"{preset}.json"), MODEL_BYTES)


def load_arrays(args):
    """The study's split (images, int labels): train is the first ``--subset`` of the training images if given."""
    from normlab.data import load
    config = read_model(args)["config"]
    data = load(config["data"], data_dir=args.data_dir, download=False, val_split=config["val_split"])
    n = len(data.y_train) if args.subset is None else args.subset
    return data, data.x_train[:n], data.y_train[:n].astype(np.int64), data.x_val, data.y_val.astype(np.int64)


def peak_rss_mib() -> float:
    """Peak resident set of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_mib(pid: str) -> tuple[float, float]:
    """(RSS, PSS) of one process; PSS counts a page shared by n processes (jaxlib's code, say) as 1/n."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            fields = dict(line.split(":", 1) for line in rollup if line.startswith(("Rss:", "Pss:")))
        return int(fields["Rss"].split()[0]) / 1024, int(fields["Pss"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return 0.0, 0.0


def _descendants(pid: int) -> list[str]:
    children: dict[str, list[str]] = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                children.setdefault(stat.read().rsplit(")", 1)[1].split()[1], []).append(entry)
        except (OSError, IndexError):
            continue
    found, queue = [], [str(pid)]
    while queue:
        kids = children.get(queue.pop(), [])
        found += kids
        queue += kids
    return found


class PeakTreeRss:
    """Peak memory of this process and its descendants together, sampled every 0.2 s by a thread.

    A study trains in worker processes; ``ru_maxrss`` sees one process only and would miss them. ``peak_mib``
    sums PSS (shared pages split between their users: the tree's real footprint), ``peak_rss_sum_mib`` sums
    RSS (shared pages counted once per process: an upper bound).
    """

    def __enter__(self):
        self.peak_mib, self.peak_rss_sum_mib, self._done = 0.0, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            pids = [str(os.getpid()), *_descendants(os.getpid())]
            rss, pss = (sum(column) for column in zip(*(_memory_mib(pid) for pid in pids)))
            self.peak_mib, self.peak_rss_sum_mib = max(self.peak_mib, pss), max(self.peak_rss_sum_mib, rss)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        if not self.peak_mib:  # ended before the first sample
            self.peak_mib = self.peak_rss_sum_mib = peak_rss_mib()


def summarize(epoch_times: list[float], n_train: int, compile_s: float | None = None) -> dict:
    """Steady epoch = median of epochs 2..E; warm-up = epoch 1 minus it, unless the framework compiled apart.

    With an explicit ``compile_s`` (ahead-of-time compilation) every epoch is steady.
    """
    if compile_s is not None:
        steady, method = epoch_times, "explicit (ahead-of-time compile before epoch 1)"
    elif len(epoch_times) > 1:
        steady, method = epoch_times[1:], "first epoch minus median steady epoch"
    else:
        steady, method = epoch_times, "unknown: one epoch only, so epoch_s includes warm-up"
    epoch_s = statistics.median(steady)
    if compile_s is None and len(epoch_times) > 1:
        compile_s = epoch_times[0] - epoch_s
    return {"epoch_times_s": epoch_times, "epoch_s": epoch_s, "compile_s": compile_s, "compile_method": method,
            "samples_per_s": n_train / epoch_s, "n_train": n_train}


def write_result(path: Path, result: dict) -> None:
    """Add this process' peak RSS (unless measured earlier) and write the result atomically."""
    result.setdefault("peak_rss_mib", peak_rss_mib())
    result.setdefault("xla_flags", os.environ.get("XLA_FLAGS", ""))
    result.setdefault("python", sys.version.split()[0])
    write_text(path, json.dumps(result, indent=2))
