"""What a finished command leaves, as Python objects: arrays, tables that show themselves in a notebook, and
matplotlib figures. Each wraps the files of its run folder (results.json, a sweep's trials, diagnostics.json), read
through the same checked readers as ``normlab report``, so a notebook and the report never disagree."""

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from normlab.errors import ConfigError, shown
from normlab.api.command import option_name, path_of, public
from normlab.files import display
from normlab.rundir import holds
from normlab.report.results_json import HISTORY_KEYS, Run, find_results, load_results, runs
from normlab.report.table import Table, to_html, to_markdown

if TYPE_CHECKING:  # imported where it is returned: loading results needs no model
    from normlab.api.model import Model

RESULTS, DIAGNOSTICS = "results.json", "diagnostics.json"


def _tables_html(tables: list[Table]) -> str:
    return "".join(to_html(table) for table in tables)


def _tables_text(tables: list[Table]) -> str:
    return "\n".join(line for table in tables for line in [*to_markdown(table), ""]).rstrip()


def _frame(rows: list[dict]):
    """A pandas DataFrame of ``rows``; pandas is optional, so its absence is a one-line error."""
    try:
        import pandas
    except ImportError:
        raise ConfigError("to_pandas needs pandas: pip install pandas") from None
    return pandas.DataFrame(rows)


class Results:
    """A train or reproduce run: every preset's seeds, their histories and test scores.

    >>> results = normlab.load("runs/doc-train")
    >>> results.presets, results.history["bn-after"]["val_accuracy"].shape
    (['bn-after'], (1, 1))
    """

    def __init__(self, record: dict, folder: Path | None = None):
        self.record, self.folder = record, None if folder is None else Path(folder)

    @classmethod
    def read(cls, folder) -> "Results":
        """The results.json of a run folder (checked: a foreign or damaged file is a one-line error)."""
        return cls(load_results(Path(folder) / RESULTS), folder)

    @property
    def config(self) -> dict:
        """The study's settings, as results.json records them."""
        return self.record.get("config") or {}

    @property
    def provenance(self) -> dict:
        """Where the numbers come from: git commit, versions, device, time."""
        return self.record.get("provenance") or {}

    @functools.cached_property
    def runs(self) -> list[Run]:
        """One record per preset and seed, in file order (read once: history, test and seeds all go through it)."""
        return runs(self.record)

    @property
    def presets(self) -> list[str]:
        """The models, in the order they were trained."""
        return list(dict.fromkeys(run.preset for run in self.runs))

    @property
    def history(self) -> dict[str, dict[str, np.ndarray]]:
        """preset -> metric (loss, accuracy, val_loss, val_accuracy) -> array (seeds, epochs); a seed that
        diverged is NaN from its first non-finite epoch on."""
        out = {}
        for preset in self.presets:
            mine = [run for run in self.runs if run.preset == preset]
            epochs = max(len(run.history["loss"]) for run in mine)
            out[preset] = {key: np.array([run.history[key] + [np.nan] * (epochs - len(run.history[key]))
                                          for run in mine], np.float64) for key in HISTORY_KEYS}
        return out

    @property
    def test(self) -> dict[str, dict[str, np.ndarray]]:
        """preset -> "loss" / "accuracy" -> array (seeds,) on the 10,000 test images; NaN for a diverged seed."""
        return {preset: {key: np.array([np.nan if run.test is None else run.test[key]
                                        for run in self.runs if run.preset == preset]) for key in ("loss", "accuracy")}
                for preset in self.presets}

    @property
    def seeds(self) -> dict[str, list[int]]:
        """preset -> its seeds, in the order of the rows of ``history`` and ``test``."""
        return {preset: [run.seed for run in self.runs if run.preset == preset] for preset in self.presets}

    @property
    def tensorboard(self) -> Path | None:
        """The TensorBoard log folder (``%tensorboard --logdir`` it in a notebook), if the run has one."""
        logs = None if self.folder is None else self.folder / "tensorboard"
        return logs if logs is not None and logs.is_dir() else None

    def model(self, preset: str | None = None, seed: int | None = None) -> "Model":
        """A run's trained model, a ``normlab.Model`` with its final weights (the last epoch's checkpoint) and the
        run's preprocessing, ready to ``predict``; the first seed by default, the preset when there is one.

        >>> results = normlab.load("runs/doc-train")
        >>> trained = results.model("bn-after", seed=0)
        >>> trained
        <normlab.Model 'bn-after': 7 layers, 271,346 params, with weights>
        >>> fashion = normlab.data()
        >>> accuracy = float((trained.predict(fashion.x_test).argmax(axis=1) == fashion.y_test).mean())
        >>> abs(accuracy - float(results.test["bn-after"]["accuracy"][0])) < 0.001
        True
        """
        from normlab.api.model import Model
        from normlab.interop.preprocessing import of_run
        from normlab.interop.trained import final_weights, one_run
        if self.folder is None:
            raise ConfigError("these results are not in a run folder: its checkpoints hold the trained weights")
        if preset is None:
            if len(self.presets) > 1:
                raise ConfigError(f"{display(self.folder)} trained {', '.join(self.presets)}: choose one with "
                                  f"{option_name('preset')}")
            preset = next(iter(self.presets), None)
        if seed is not None and type(seed) is not int:
            raise ConfigError(f"{option_name('seed')} must be an int, one of the run's seeds, got {shown(seed)}")
        config, run = one_run(self.folder, preset, seed)  # an unknown preset or seed: says which there are
        weights = final_weights(self.folder, config, run)
        return Model(weights.model, weights, of_run(self.folder))

    def tables(self) -> list[Table]:
        """Final accuracy with 95% intervals, then accuracy at the reported epochs with the gain over the baseline."""
        from normlab.report.stats import group_runs
        from normlab.report.summary import accuracy_table, final_table, group_settings
        groups = group_runs(self.record)
        return [final_table(group_settings([self.record])), *([accuracy_table(groups)] if groups else [])]

    def plot(self, metric: str = "curves"):
        """A matplotlib Figure: ``"curves"`` (training and validation accuracy and loss, 2×2) or one of
        loss, accuracy, val_loss, val_accuracy; mean over seeds with a ± 1 std band."""
        from normlab.report.plots import learning_curves_figure, metric_figure
        from normlab.report.stats import group_runs
        if metric != "curves" and metric not in HISTORY_KEYS:
            raise ConfigError(f"plot: metric must be curves or one of {', '.join(HISTORY_KEYS)}, got {metric!r}")
        groups = group_runs(self.record)
        return learning_curves_figure(groups) if metric == "curves" else metric_figure(groups, metric)

    def to_pandas(self):
        """One row per preset, seed and epoch: the four metrics, the run's status and its setting."""
        return _frame([{"preset": run.preset, "seed": run.seed, "epoch": epoch + 1, "status": run.status,
                        **run.setting, **{key: run.history[key][epoch] for key in HISTORY_KEYS}}
                       for run in self.runs for epoch in range(len(run.history["loss"]))])

    def _repr_html_(self) -> str:
        return f"<p>{_where(self.folder)}</p>" + _tables_html(self.tables())

    def __str__(self) -> str:
        return _tables_text(self.tables())

    def __repr__(self) -> str:
        epochs = max((len(run.history["loss"]) for run in self.runs), default=0)
        return (f"<normlab.Results {_where(self.folder)}: {len(self.presets)} preset(s), "
                f"{len(self.runs)} run(s) of up to {epochs} epoch(s)>")


def _where(folder: Path | None) -> str:
    return "in memory" if folder is None else display(folder)


class Sweep:
    """A study's sweep (``normlab.run``): every trial's results, grouped by setting like ``normlab report``.

    >>> sweep = normlab.load("runs/doc-sweep")
    >>> sorted(sweep.trials)
    ['000-learning_rate=0.001', '001-learning_rate=0.01']
    """

    def __init__(self, folder):
        self.folder = Path(folder)

    @property
    def trials(self) -> dict[str, Results]:
        """trial id -> its Results, for the trials that finished."""
        found = {}
        for path in find_results(self.folder / "trials") if (self.folder / "trials").is_dir() else []:
            found[path.parent.name] = Results(load_results(path), path.parent)
        return dict(sorted(found.items()))

    def _groups(self) -> tuple[list[dict], dict]:
        from normlab.report.summary import group_settings
        records = [trial.record for trial in self.trials.values()]
        if not records:
            raise ConfigError(f"{display(self.folder)} holds no finished trial yet")
        return records, group_settings(records)

    def tables(self) -> list[Table]:
        """Final accuracy per setting with 95% intervals, and each setting against its control (Welch's t-test)."""
        from normlab.report.summary import control_table, controls, final_table
        _, groups = self._groups()
        return [final_table(groups), control_table(groups, controls(groups))]

    def plot(self, key: str | None = None):
        """Final validation accuracy against a swept value (the first swept key by default), error bars 95% CI."""
        from normlab.report.html import sweep_figures
        figures = sweep_figures(*self._groups())
        if not figures:
            raise ConfigError("this sweep varies no numeric value to plot against")
        if key is None:
            return next(iter(figures.values()))
        if key not in figures:
            raise ConfigError(f"plot: {key!r} is not swept here; swept: {', '.join(figures)}")
        return figures[key]

    def to_pandas(self):
        """One row per trial, preset, seed and epoch (the trial id, then ``Results.to_pandas``' columns)."""
        return _frame([{"trial": tid, **row} for tid, trial in self.trials.items()
                       for row in trial.to_pandas().to_dict("records")])

    def _repr_html_(self) -> str:
        return f"<p>{display(self.folder)}: {len(self.trials)} finished trial(s)</p>" + _tables_html(self.tables())

    def __str__(self) -> str:
        return _tables_text(self.tables())

    def __repr__(self) -> str:
        return f"<normlab.Sweep {display(self.folder)}: {len(self.trials)} finished trial(s)>"


class Diagnosis:
    """What ``normlab.diagnose`` measured (its diagnostics.json): figures drawn like the papers' and a table.

    >>> diagnosis = normlab.load("runs/doc-diagnose")
    >>> list(diagnosis.diagnostics["presets"])
    ['baseline', 'bn-after']
    """

    def __init__(self, diagnostics: dict, folder: Path | None = None):
        self.diagnostics, self.folder = diagnostics, None if folder is None else Path(folder)

    @classmethod
    def read(cls, folder) -> "Diagnosis":
        """The diagnostics.json of a diagnose folder (checked)."""
        from normlab.report.diagnostics_json import load_diagnostics
        return cls(load_diagnostics(Path(folder) / DIAGNOSTICS), folder)

    def findings(self) -> Table:
        """Every measured quantity per preset: mean and 95% CI over seeds."""
        from normlab.report.diagnostics import findings
        return findings(self.diagnostics)

    def figures(self) -> dict[str, object]:
        """Figure name -> matplotlib Figure, for every figure some preset has data for."""
        from normlab.report.diagnostics import FIGURES
        presets = self.diagnostics["presets"]
        return {name[:-4]: fig for name, draw in FIGURES.items() if (fig := draw(presets)) is not None}

    def plot(self, name: str = "landscape"):
        """One figure: accuracy, percentiles, ics, landscape or train_eval_gap."""
        figures = self.figures()
        if name not in figures:
            raise ConfigError(f"plot: no figure {name!r} here; there are: {', '.join(figures)}")
        return figures[name]

    def _repr_html_(self) -> str:
        return f"<p>{_where(self.folder)}</p>" + to_html(self.findings())

    def __str__(self) -> str:
        return _tables_text([self.findings()])

    def __repr__(self) -> str:
        return f"<normlab.Diagnosis {_where(self.folder)}: presets {', '.join(self.diagnostics['presets'])}>"


@public
def load(folder) -> Results | Sweep | Diagnosis:
    """What a run folder holds: a train or reproduce run's Results, a sweep, or a diagnosis.

    >>> normlab.load("runs/doc-train")
    <normlab.Results runs/doc-train: 1 preset(s), 1 run(s) of up to 1 epoch(s)>
    """
    folder = path_of(folder, "folder", required=True)
    if not folder.is_dir():
        raise ConfigError(f"{display(folder)} is not a folder")
    held = holds(folder)
    if held == "sweep":
        return Sweep(folder)
    if held == "diagnosis":
        return Diagnosis.read(folder)
    if (folder / RESULTS).is_file():
        return Results.read(folder)
    raise ConfigError(f"{display(folder)} holds no results.json or diagnostics.json: not a finished run, sweep or "
                      "diagnosis")
