"""TensorBoard event files: one run directory per preset and seed, so TensorBoard's run selector compares them."""

from pathlib import Path

from tensorboardX import SummaryWriter

# Keras history key -> TensorBoard tag; the "train/" and "val/" prefixes put each pair on one dashboard card.
TAGS = {"loss": "train/loss", "accuracy": "train/accuracy", "val_loss": "val/loss", "val_accuracy": "val/accuracy"}


def write_tensorboard(results: dict, root: Path) -> list[Path]:
    """Log each run's history at global step = 1-based epoch and its test metrics at the last epoch."""
    run_dirs = []
    for run in results["runs"]:
        run_dir = root / run["preset"] / f"seed{run['seed']}"
        with SummaryWriter(logdir=str(run_dir)) as writer:
            for key, tag in TAGS.items():
                for epoch, value in enumerate(run["history"][key], start=1):
                    writer.add_scalar(tag, value, epoch)
            last = len(run["history"]["loss"])
            for key, value in (run["test"] or {}).items():  # a diverged run has no test result
                writer.add_scalar(f"test/{key}", value, last)
        run_dirs.append(run_dir)
    return run_dirs
