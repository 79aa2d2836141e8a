"""TensorBoard HParams summaries, so the HParams tab compares a sweep's trials side by side."""

from pathlib import Path

from tensorboardX import SummaryWriter


def _hparam(value):
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def write_hparams(results_list: list[dict], root: Path) -> Path:
    """One run per (trial, preset, seed): its swept values + preset + seed, and final val/test metrics."""
    for results in results_list:
        trial = results.get("study", {}).get("trial", "run")
        for run in results["runs"]:
            if run.get("status") == "diverged":
                metrics = {"hparam/diverged_epoch": float(run["diverged_epoch"])}
            else:
                metrics = {"hparam/val_accuracy": run["history"]["val_accuracy"][-1],
                           "hparam/test_accuracy": run["test"]["accuracy"]}
            hparams = {k: _hparam(v) for k, v in {**run.get("setting", {}), "preset": run["preset"],
                                                   "seed": run["seed"]}.items()}
            with SummaryWriter(logdir=str(root / trial / run["preset"] / f"seed{run['seed']}")) as writer:
                writer.add_hparams(hparams, metrics, name=".")
    return root
