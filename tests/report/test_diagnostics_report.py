"""diagnostics.json as a report, on a small synthetic file: figures, numbers checked against NumPy and SciPy, the page
section, `normlab report` with and without one, and bad files as one-line ConfigErrors.

2 presets × 3 seeds × 2 epochs of 130 steps, measured as `normlab diagnose` does: every 50 steps from each epoch's
start. The baseline has no BN (train_eval_gap null), its seed 2 has a null at step 130 and its seed 3 diverged at the
last step.
"""

import copy
import html
import json
import math
import sys
import warnings

import numpy as np
import pytest
from scipy import stats

from normlab.errors import ConfigError
from normlab.report.diagnostics import FIGURES, TITLE, figures, findings, section_html, write_page
from normlab.report.diagnostics_json import MAX_STEPS, load_diagnostics
from normlab.report.html import BN_EXPLANATION, report_command
from normlab.report.page import img
from normlab.report.table import MISSING
from report.test_outputs import run_dir

SEEDS, STEPS, EPOCHS, EVERY = [1, 2, 3], [0, 50, 100, 130, 180, 230], [1, 2], 50
LAYERS = ("dense", "dense_1")
PNG = b"\x89PNG\r\n\x1a\n"
PERCENT, PP = (".2f", 100), ("+.2f", 100)


def series(start: float, slope: float, length: int = len(STEPS)) -> list[list[float]]:
    """[seed][step]: a straight line per seed, wobbling by up to 0.01 differently for each seed, series and step."""
    return [[start + slope * t + 0.01 * math.sin(7 * s + 3 * t + 10 * start) for t in range(length)]
            for s in range(len(SEEDS))]


def make_preset(offset: float, bn: bool) -> dict:
    return {
        "seeds": SEEDS, "has_bn": bn, "steps": STEPS, "epochs": EPOCHS,
        "val_accuracy": series(0.5 + offset, 0.05),
        "percentiles": {"layer": "dense_1", "unit": 0, "p15": series(-1, -0.2 * (not bn)), "p50": series(0, 0.1),
                        "p85": series(1, 0.3 * (not bn))},
        "ics": {layer: {"l2": series(0.2 + i - offset, 0.01), "cosine": series(0.9, -0.02)}
                for i, layer in enumerate(LAYERS)},
        "landscape": {"loss_min": series(2.0, -0.3), "loss_max": series(2.5 - offset, -0.2)},
        "gradient_predictiveness": {"min": series(0.1, 0.01), "max": series(1.0 - offset, 0.1)},
        "beta_smoothness": series(5.0 - offset, 1.0),
        "history": {k: series(0.5, 0.1, len(EPOCHS)) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
        "train_eval_gap": {"batch_stats": series(0.80, 0.01, 2), "moving": series(0.82, 0.02, 2),
                           "precise": series(0.83, 0.02, 2)} if bn else None,
        "time": {"compile_s": 1.0, "train_s": 2.0},
    }


def make_diagnostics(names=("baseline", "bn-after")) -> dict:
    presets = {name: make_preset(0.1 * i, bn=i > 0) for i, name in enumerate(names)}
    baseline = presets[names[0]]
    baseline["val_accuracy"][1][3] = None
    for key in ("val_accuracy", "beta_smoothness"):
        baseline[key][2][-1] = None
    return {"schema": "normlab.diagnostics/1",
            "provenance": {"git_commit": "abc1234", "timestamp": "2024-01-01T00:00:00Z", "versions": {"jax": "0.4"},
                           "device": "cpu"},
            "config": {"learning_rate": 0.01, "batch_size": 32, "epochs": 2, "bn_momentum": 0.99, "every": EVERY,
                       "etas": [0.01, 0.1, 1.0], "precise_batches": 100,
                       "probe": "validation images 0..999, BN in training mode (statistics of those 1,000)"},
            "presets": presets}


DIAGNOSTICS = make_diagnostics()


@pytest.fixture
def drawn_quickly(monkeypatch):
    """The page tests check the page, not the figures: a stand-in PNG for each saves seconds of rendering."""
    monkeypatch.setattr(sys.modules["normlab.report.diagnostics"], "figures", lambda d: dict.fromkeys(FIGURES, PNG))


@pytest.fixture(scope="module")
def pngs() -> dict[str, bytes]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a step where a seed is null must not warn (nor crash)
        return figures(DIAGNOSTICS)


def rows(table) -> dict[tuple[str, str], tuple[str, ...]]:
    return {(row[0], row[1]): row[2:] for row in table.rows}


def expected(values, form: str = "#.4g", scale: float = 1.0) -> tuple[str, str, str]:
    """n, mean and 95% t interval over the finite values, computed here with NumPy and SciPy."""
    x = np.array([v for v in values if v is not None], dtype=np.float64)
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    text = lambda v: format(scale * v, form)  # noqa: E731
    return (str(len(x)) if len(x) == len(values) else f"{len(x)} of {len(values)}", text(x.mean()),
            f"{text(low)} – {text(high)}")


def test_every_figure_is_a_png(pngs):
    assert list(pngs) == ["accuracy.png", "percentiles.png", "ics.png", "landscape.png", "train_eval_gap.png"]
    assert all(png.startswith(PNG) for png in pngs.values())


def test_without_bn_there_is_no_train_eval_gap_figure_and_missing_measurements_are_skipped():
    diagnostics = make_diagnostics(("baseline",))
    del diagnostics["presets"]["baseline"]["ics"]
    diagnostics["presets"]["baseline"]["percentiles"] = None
    assert list(figures(diagnostics)) == ["accuracy.png", "landscape.png"]
    assert not any(measure.startswith("ICS") for measure, _ in rows(findings(diagnostics)))


def test_findings_match_numpy_and_scipy():
    found = rows(findings(DIAGNOSTICS))
    bn, base = DIAGNOSTICS["presets"]["bn-after"], DIAGNOSTICS["presets"]["baseline"]
    # three measurements an epoch: the fourth, at step 130, is the first of epoch 2, after one epoch of training
    assert found["validation accuracy %, step 130 (after epoch 1)", "bn-after"] == expected(
        [s[3] for s in bn["val_accuracy"]], *PERCENT)
    assert found["validation accuracy %, step 130 (after epoch 1)", "baseline"] == expected(  # "2 of 3": a null
        [s[3] for s in base["val_accuracy"]], *PERCENT)
    assert found["validation accuracy %, step 230 (last measured)", "baseline"] == expected(
        [s[-1] for s in base["val_accuracy"]], *PERCENT)
    for layer in LAYERS:
        for part, name in (("l2", "ICS ‖G − G′‖₂"), ("cosine", "ICS cos(G, G′)")):
            assert found[f"{name} of {layer}, mean over steps", "bn-after"] == expected(
                np.mean(bn["ics"][layer][part], axis=1))
    widths = np.array(bn["landscape"]["loss_max"]) - np.array(bn["landscape"]["loss_min"])
    assert found["loss range over η (max − min of L(w − ηg)), mean over steps", "bn-after"] == expected(
        widths.mean(axis=1))
    assert found["effective β-smoothness, mean over steps", "baseline"] == expected(  # the null left out
        [np.mean(s[:-1]) if s[-1] is None else np.mean(s) for s in base["beta_smoothness"]])
    gap = {k: np.array(v)[:, -1] for k, v in bn["train_eval_gap"].items()}
    assert found["last epoch: moving − batch-statistics accuracy, pp", "bn-after"] == expected(
        gap["moving"] - gap["batch_stats"], *PP)
    assert found["last epoch: precise − moving accuracy, pp", "bn-after"] == expected(
        gap["precise"] - gap["moving"], *PP)
    assert ("last epoch: precise − moving accuracy, pp", "baseline") not in found
    measures = [row[0] for row in findings(DIAGNOSTICS).rows]
    assert measures[:2] == ["validation accuracy %, step 130 (after epoch 1)"] * 2  # grouped: presets compare


def test_one_seed_has_a_mean_and_no_interval():
    diagnostics = copy.deepcopy(DIAGNOSTICS)
    for preset in diagnostics["presets"].values():
        preset["seeds"] = preset["seeds"][:1]
        _keep_first_seed(preset)
    cells = rows(findings(diagnostics))["validation accuracy %, step 230 (last measured)", "bn-after"]
    assert cells == ("1", f"{100 * DIAGNOSTICS['presets']['bn-after']['val_accuracy'][0][-1]:.2f}", MISSING)


def _keep_first_seed(node) -> None:
    """Cut every [seed][...] series below ``node`` to its first seed."""
    for key, value in node.items():
        if isinstance(value, list) and value and isinstance(value[0], list):
            node[key] = value[:1]
        elif isinstance(value, dict):
            _keep_first_seed(value)


def test_section_has_the_title_every_figure_and_escapes_preset_names(drawn_quickly):
    hostile = "<script>alert(1)</script>"
    section = section_html(make_diagnostics(("baseline", hostile)), img)
    assert section.startswith(f"<h2>{TITLE}</h2>") and section.count("<img ") == 5
    assert "<script" not in section and "&lt;script&gt;" in section
    assert "every 50 training steps" in section and "0.01, 0.1, 1" in section and "over 100 training batches" in section


def test_report_with_diagnostics_puts_the_measured_section_in_place_of_the_prose(tmp_path, drawn_quickly):
    plain = report_command([run_dir(tmp_path / "plain")]).read_text()
    folder = run_dir(tmp_path / "run")
    (folder / "diagnostics.json").write_text(json.dumps(DIAGNOSTICS))
    page = report_command([folder]).read_text()
    how, why = [html.escape(line) for line in BN_EXPLANATION[:3]], [html.escape(line) for line in BN_EXPLANATION[3:]]
    assert all(line in plain and line in page for line in how)
    assert TITLE not in plain and all(line in plain for line in why)
    assert TITLE in page and not any(line in page for line in why)
    assert page.index("How batch normalization works") < page.index(TITLE) < page.index("Configuration and prov")
    assert "The measurements in numbers" in (folder / "summary.md").read_text()


def test_diagnostics_page_stands_alone(tmp_path, drawn_quickly):
    text = write_page(DIAGNOSTICS, tmp_path / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and TITLE in text and "<details>" in text and "abc1234" in text
    assert text.count("<img ") == 5 and "How batch normalization works" not in text


def corrupt(change) -> str:
    diagnostics = copy.deepcopy(DIAGNOSTICS)
    change(diagnostics)
    return json.dumps(diagnostics)


def bn(d: dict) -> dict:
    return d["presets"]["bn-after"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"schema": "normlab.diagnostics/1", "config": NaN}', "not valid JSON"),
    ("[]", "schema"),
    (corrupt(lambda d: d.update(schema="normlab.diagnostics/2")), "schema"),
    (corrupt(lambda d: d["config"].pop("etas")), "needs a 'config'"),
    (corrupt(lambda d: d.update(presets={})), "needs 'presets'"),
    (corrupt(lambda d: bn(d)["val_accuracy"][1].pop()), "'val_accuracy' that is not 3 seeds × 6 steps"),
    (corrupt(lambda d: bn(d)["landscape"].update(loss_min="x")), "'landscape.loss_min'"),
    (corrupt(lambda d: bn(d)["ics"]["dense"]["l2"][0].__setitem__(0, "1")), "'ics.dense.l2'"),
    (corrupt(lambda d: bn(d)["train_eval_gap"]["precise"][0].__setitem__(0, True)), "train_eval_gap.precise"),
    (corrupt(lambda d: bn(d).update(ics=[1, 2])), "'ics' that is not an object"),
    (corrupt(lambda d: bn(d).update(percentiles={"p15": []})), "'percentiles' without"),
    (corrupt(lambda d: bn(d).update(steps=[0, 50, 50, 130, 180, 230])), "needs 'steps'"),
    (corrupt(lambda d: bn(d).update(steps=list(range(MAX_STEPS + 1)))), "needs 'steps': 1 to 100,000"),
    (corrupt(lambda d: bn(d).update(seeds=[])), "needs 'seeds'"),
    (corrupt(lambda d: bn(d)["beta_smoothness"][0].__setitem__(0, 1e39)), "'beta_smoothness'"),
    (corrupt(lambda d: d["presets"].update({"": bn(d)})), "without a name"),
    (corrupt(lambda d: d.update(preprocessing={"scale": 1 / 255})), "a 'preprocessing' but no 'data'"),
    (corrupt(lambda d: d.update(data={"name": "x\n" * 5000}, preprocessing={"scale": 1.0})), "a 'data' with a 'name'"),
])
def test_bad_diagnostics_is_a_one_line_config_error(tmp_path, content, message):
    folder = run_dir(tmp_path / "run")
    (folder / "diagnostics.json").write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        report_command([folder])
    assert "\n" not in str(error.value) and "diagnostics.json" in str(error.value)
    assert not (folder / "summary.html").exists()


def test_too_big_or_not_a_file_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["normlab.report.diagnostics_json"], "MAX_BYTES", 100)
    (tmp_path / "diagnostics.json").write_text(json.dumps(DIAGNOSTICS))
    with pytest.raises(ConfigError, match="more than the 100 expected"):
        load_diagnostics(tmp_path / "diagnostics.json")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_diagnostics(tmp_path / "folder.json")
