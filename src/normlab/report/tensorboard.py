"""TensorBoard event files: one run directory per preset and seed, so TensorBoard's run selector compares them.

Directory names come from user text (preset names), so each passes through `literal.path_component` and stays
inside ``root``. Event files are appended as tensorboardX writes them; they cannot be written atomically.
"""

from pathlib import Path

from tensorboardX import SummaryWriter

from normlab.report.literal import path_component

# Keras history key -> TensorBoard tag; the "train/" and "val/" prefixes put each pair on one dashboard card.
TEST_KEYS = ("loss", "accuracy")
TAGS = {"loss": "train/loss", "accuracy": "train/accuracy", "val_loss": "val/loss", "val_accuracy": "val/accuracy"}


def run_directory(root: Path, *names) -> Path:
    """root/NAME/…, one safe component per name: "../x", "/etc" or ".." cannot climb out of root."""
    return Path(root).joinpath(*map(path_component, names))


def write_tensorboard(results: dict, root: Path) -> list[Path]:
    """Log each run's history at global step = 1-based epoch and its test metrics at the last epoch; a run that
    diverged at epoch 1 has an empty history and no test, so its directory holds no scalar."""
    run_dirs = []
    for run in results["runs"]:
        run_dir = run_directory(root, run["preset"], f"seed{run['seed']}")
        with SummaryWriter(logdir=str(run_dir)) as writer:
            for key, tag in TAGS.items():
                for epoch, value in enumerate(run["history"][key], start=1):
                    writer.add_scalar(tag, value, epoch)
            last = len(run["history"]["loss"])
            test = run.get("test") or {}  # a diverged run has no test result
            for key in TEST_KEYS:  # only the metrics results.json defines; other keys are not ours to log
                if key in test:
                    writer.add_scalar(f"test/{key}", test[key], last)
        run_dirs.append(run_dir)
    return run_dirs
