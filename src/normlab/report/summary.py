"""Every table normlab shows, built once as a `table.Table`: report.md, report.html, its Markdown twin, the terminal.

A study from `reproduce` is tabulated per preset; `normlab report` and a sweep group runs by *setting*: the preset
plus the values a sweep varied ("bn-after lr=0.01"). Numbers come from `stats`; cells are formatted here, once,
with MISSING where a quantity is undefined.
"""

import numpy as np

from normlab.errors import ConfigError
from normlab.report.results_json import Run, runs
from normlab.report.stats import (BASELINE, Summary, gain_pp, hedges_g, history_stats, num_epochs, reach_summary,
                                  summarize, test_stats, welch)
from normlab.report.table import MISSING, Table, columns

# Validation accuracy of the public single-seed Keras runs at epochs 1 and 10: what we aim to reproduce.
REFERENCE_VAL_ACCURACY = {
    "baseline": {1: 0.7160, 10: 0.8396},
    "bn-after": {1: 0.8230, 10: 0.8750},
    "bn-before": {1: 0.7812, 10: 0.8660},
}
REACH = 0.85
SHORT = {"learning_rate": "lr", "batch_size": "batch"}


def reported_epochs(n_epochs: int) -> list[int]:
    """Epochs 1, 5 and 10 where the study reached them, plus the last one: early, middle and final behaviour."""
    return sorted({e for e in (1, 5, 10) if e <= n_epochs} | {n_epochs})


def _percent(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _signed(value: float | None, unit: str = "") -> str:
    return MISSING if value is None else f"{value:+.2f}{unit}"


def _preset_cells(groups: dict[str, list[Run]], preset: str, epochs) -> list[str]:
    """Preset, n, validation accuracy at each epoch and test accuracy, as % mean ± std over the seeds."""
    mean, std = history_stats(groups[preset], "val_accuracy")
    return [preset, str(len(groups[preset])), *(_percent(mean[e - 1], std[e - 1]) for e in epochs),
            _percent(*test_stats(groups[preset]))]


def accuracy_table(groups: dict[str, list[Run]]) -> Table:
    """report.md's results: accuracy at the reported epochs and, with a baseline, the gain over it."""
    epochs, has_baseline = reported_epochs(num_epochs(groups)), BASELINE in groups
    gains = [f"gain @{e}" for e in epochs] if has_baseline else []
    rows = [(*_preset_cells(groups, preset, epochs),
             *(_signed(gain_pp(groups, preset, e), " pp") for e in epochs if has_baseline)) for preset in groups]
    return Table("Accuracy over seeds",
                 columns(("preset",), ("n", *(f"val acc @{e}" for e in epochs), "test acc", *gains)), tuple(rows),
                 "Accuracy in percent as mean ± std over the n seeds"
                 + (f"; gain is mean validation accuracy minus `{BASELINE}`'s, in percentage points." if has_baseline
                    else "."))


def reference_table(groups: dict[str, list[Run]]) -> Table:
    """Ours minus Keras at the same epoch; an epoch the study did not reach is left blank, not compared."""
    n_epochs, rows = num_epochs(groups), []
    for preset in (p for p in groups if p in REFERENCE_VAL_ACCURACY):
        mean, _ = history_stats(groups[preset], "val_accuracy")
        row = [preset]
        for e, reference in REFERENCE_VAL_ACCURACY[preset].items():
            reached = e <= n_epochs
            row += [f"{100 * reference:.2f}", f"{100 * mean[e - 1]:.2f}" if reached else MISSING,
                    _signed(100 * (mean[e - 1] - reference), " pp") if reached else MISSING]
        rows.append(tuple(row))
    return Table("Against the public Keras reference",
                 columns(("preset",), tuple(f"{what} @{e}" for e in (1, 10) for what in ("Keras", "ours", "Δ"))),
                 tuple(rows), "Validation accuracy of the public single-seed Keras runs, and our mean at the same "
                 "epoch; Δ is ours minus Keras in percentage points.",
                 empty="No preset of this study has a Keras reference.")


def terminal_table(groups: dict[str, list[Run]]) -> Table:
    """What `reproduce` prints when it is done: final accuracy, the gain at the first and last epoch, and time."""
    final = num_epochs(groups)
    rows = [(*_preset_cells(groups, preset, [final]), *(_signed(gain_pp(groups, preset, e)) for e in (1, final)),
             *(f"{np.mean([run.time[key] for run in group]):.1f}" for key in ("compile_s", "train_s")))
            for preset, group in groups.items()]
    return Table(f"after {final} epochs, % mean ± std over seeds; gain vs baseline in pp",
                 columns(("preset",), ("n", "val acc", "test acc", "gain ep 1", "gain final", "compile s",
                                       "train s")), tuple(rows))


def diverged_line(name: str, run: Run) -> str:
    """'NAME seed S diverged at epoch E (non-finite loss)': how every report names a diverged run."""
    epoch = "?" if run.diverged_epoch is None else run.diverged_epoch
    return f"{name} seed {run.seed} diverged at epoch {epoch} (non-finite loss)"


def value_text(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def sort_key(v):
    """Numbers first, in order, then everything else by its text."""
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def label(setting: dict, skip: str = "") -> str:
    """'bn-after lr=0.01': the preset, then every other swept value (except ``skip``)."""
    rest = [f"{SHORT.get(k, k)}={value_text(v)}" for k, v in setting.items() if k not in ("preset", skip)]
    return " ".join([setting["preset"], *rest])


def group_settings(results_list: list[dict]) -> dict[str, dict]:
    """label -> {"setting", "ok": runs, "diverged": runs}; presets in order of appearance, swept values sorted."""
    groups, rank = {}, {}
    for run in (run for results in results_list for run in runs(results)):
        setting = {"preset": run.preset, **{k: v for k, v in run.setting.items() if k != "preset"}}
        rank.setdefault(run.preset, len(rank))
        group = groups.setdefault(label(setting), {"setting": setting, "ok": [], "diverged": []})
        group["diverged" if run.diverged else "ok"].append(run)
    order = lambda item: (rank[item[1]["setting"]["preset"]],  # noqa: E731
                          [(k, sort_key(v)) for k, v in sorted(item[1]["setting"].items()) if k != "preset"])
    return dict(sorted(groups.items(), key=order))


def controls(groups: dict[str, dict], control: str | None = None) -> dict[str, str | None]:
    """Each setting's control: ``control`` if it names a setting; else that preset (default: baseline) at the
    same other swept values; without a ``control`` and without such a baseline, the first setting."""
    if control in groups:
        return dict.fromkeys(groups, control)
    if control is not None and control not in {g["setting"]["preset"] for g in groups.values()}:
        raise ConfigError(f"control {control!r} is neither a setting nor a preset of these runs "
                          f"(settings: {', '.join(map(repr, groups))})")
    found = {name: label({**g["setting"], "preset": control or BASELINE}) for name, g in groups.items()}
    fallback = None if control else next(iter(groups))
    return {name: other if other in groups else fallback for name, other in found.items()}


def final_accuracies(group: dict) -> dict[str, list[float]]:
    """Final validation and test accuracy of a setting's completed runs."""
    return {"validation": [run.final_val_accuracy for run in group["ok"]],
            "test": [run.test["accuracy"] for run in group["ok"]]}


def _cells(s: Summary) -> list[str]:
    """'mean ± std' and 'low – high' in %, MISSING where undefined."""
    pm = MISSING if s.mean is None else f"{100 * s.mean:.2f}" + ("" if s.std is None else f" ± {100 * s.std:.2f}")
    return [pm, MISSING if s.ci is None else f"{100 * s.ci[0]:.2f} – {100 * s.ci[1]:.2f}"]


def _final_row(name: str, group: dict) -> tuple[str, ...]:
    n, bad = len(group["ok"]) + len(group["diverged"]), len(group["diverged"])
    mean, reached, total = reach_summary([r.history["val_accuracy"] for r in group["ok"]], REACH)
    return (name, f"{n} ({bad} diverged)" if bad else str(n),
            *(cell for values in final_accuracies(group).values() for cell in _cells(summarize(values))),
            f"{MISSING if mean is None else f'{mean:.1f}'} ({reached}/{total})")


def final_table(groups: dict[str, dict]) -> Table:
    """Final accuracy per setting: mean ± std, 95% CI and the epochs it took to reach REACH."""
    return Table("Final accuracy",
                 columns(("setting",), ("n", "val acc %", "val 95% CI", "test acc %", "test 95% CI",
                                        f"epochs to {REACH:.0%} val")),
                 tuple(_final_row(name, g) for name, g in groups.items()),
                 "Accuracy in % after the last epoch: mean ± sample std (ddof=1) and the 95% confidence interval of "
                 "the mean (Student's t; none for one seed) over the seeds that did not diverge; n counts every "
                 f"seed. The last column is the mean first epoch with validation accuracy ≥ {REACH:.0%} "
                 "(runs that reached it/runs).")


def _control_row(name: str, control: str, metric: str, ours: list[float], theirs: list[float]) -> tuple[str, ...]:
    a, b, test, g = summarize(ours), summarize(theirs), welch(ours, theirs), hedges_g(ours, theirs)
    delta = MISSING if a.mean is None or b.mean is None else f"{100 * (a.mean - b.mean):+.2f}"
    tested = [f"{test.t:+.2f}", f"{test.df:.1f}", f"{test.p:.3g}"] if test else [MISSING] * 3
    return (name, control, metric, delta, *tested, _signed(g))


def control_table(groups: dict[str, dict], control_of: dict[str, str | None]) -> Table:
    """Each setting against its control (see `controls`), final validation and test accuracy; no rows when no
    setting has a control other than itself."""
    rows = [_control_row(name, control, metric, ours, final_accuracies(groups[control])[metric])
            for name, g in groups.items() if (control := control_of[name]) not in (None, name)
            for metric, ours in final_accuracies(g).items()]
    return Table("Against the control",
                 columns(("setting", "control", "metric"), ("Δ pp", "t", "df", "p", "Hedges' g")), tuple(rows),
                 "Δ = setting − control in percentage points of final accuracy; Welch's unequal-variance t-test "
                 "(t, Welch–Satterthwaite df, two-sided p) and Hedges' g (Cohen's d over the pooled std, "
                 f"small-sample corrected). {MISSING}: fewer than two runs, or no variance in either group.")
