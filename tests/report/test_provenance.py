"""What a run records of its data (results.json's ``data`` and ``preprocessing``), what every report says of them,
and when the comparison with the published Keras run appears: only for the study itself.

Through the real CLI on real Fashion-MNIST (a ``--subset`` run), on synthetic records (the study, and the study
with one thing changed), on files from before the record, and on hostile records.
"""

import copy
import hashlib
import json

import numpy as np
import pytest

from clitools import TINY, normlab, one_line_error, session_cache  # noqa: F401 (session_cache: autouse)
from normlab.data.fashion_mnist import CLASS_NAMES
from normlab.errors import ConfigError
from normlab.experiments import sweep
from normlab.experiments.config import StudyConfig
from normlab.experiments.study import parse
from normlab.report import write_all
from normlab.report.dataset import data_lines, differences, is_the_study
from normlab.report.html import report_command
from normlab.report.literal import markdown, terminal
from normlab.report.results_json import load_results, write_results

KERAS_HEADING = "## Against the public Keras reference"
KERAS_EPOCH_1 = {"baseline": 0.7160, "bn-after": 0.8230, "bn-before": 0.7812}  # the published runs, written out
STUDY_SPLITS = {"train": 55000, "validation": 5000, "test": 10000}


def digest(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes, as ``data.content_digest`` documents it (written anew)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update((np.dtype(a.dtype).str + str(tuple(a.shape))).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---- a real run: `normlab train --subset 500` on the real data ------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, real_data):
    """A finished ``train bn-after --subset 500 --epochs 1`` run and what it printed."""
    out = tmp_path_factory.mktemp("provenance") / "run"
    code, stdout, err = normlab("train", "bn-after", *TINY, "--out", out)
    assert code == 0, err
    return out, stdout


@pytest.mark.full_data
def test_results_json_records_the_arrays_the_run_used(trained, real_data):
    out, _ = trained
    record = json.loads((out / "results.json").read_text())
    used = (real_data.x_train[:500], real_data.y_train[:500], real_data.x_val, real_data.y_val, real_data.x_test,
            real_data.y_test)
    data = record["data"]
    assert data["sha256"] == digest(*used) != digest(*(getattr(real_data, name) for name in (
        "x_train", "y_train", "x_val", "y_val", "x_test", "y_test")))
    assert (data["name"], data["source"], data["verified"]) == ("fashion-mnist", real_data.source, True)
    assert (data["image_shape"], data["classes"], data["class_names"], data["dtype"]) == (
        [28, 28], 10, list(CLASS_NAMES), "uint8")
    assert data["splits"] == {"train": 500, "validation": 5000, "test": 10000} and data["subset"] == 500
    assert record["preprocessing"] == {"scale": 1 / 255}
    assert load_results(out / "results.json") == record


@pytest.mark.full_data
def test_a_subset_runs_report_says_so_and_has_no_keras_comparison(trained):
    out, _ = trained
    report = (out / "report.md").read_text()
    assert "- images: 500 training (a subset), 5,000 validation, 10,000 test\n" in report
    assert "- data: fashion-mnist, verified (content SHA-256 " in report
    assert "- preprocessing: pixels / 255 (uint8 images)\n" in report
    assert "- compared with the published Keras run: no (a subset of the training images)\n" in report
    assert KERAS_HEADING not in report and "Keras @1" not in report and "82.30" not in report


@pytest.mark.full_data
def test_the_terminal_says_what_the_run_trained_on(trained):
    out, stdout = trained
    sha = json.loads((out / "results.json").read_text())["data"]["sha256"]
    assert (f"data: fashion-mnist, verified (content SHA-256 {sha[:12]}…); images: 500 training (a subset), 5,000 "
            "validation, 10,000 test; preprocessing: pixels / 255 (uint8 images)") in stdout.splitlines()


@pytest.mark.full_data
def test_normlab_report_shows_the_data_in_its_header(trained, tmp_path):
    out, _ = trained
    code, _, err = normlab("report", out, "--out", tmp_path / "page.html")
    assert code == 0, err
    head = "data: fashion-mnist, verified (content SHA-256 "
    page, twin = (tmp_path / "page.html").read_text(), (tmp_path / "page.md").read_text()
    assert "500 training (a subset), 5,000 validation, 10,000 test" in page and head in page
    assert "500 training (a subset), 5,000 validation, 10,000 test" in twin and f"- {head}" in twin


# ---- synthetic records: the study, and the study with one thing changed ---------------------------------------------

def full_data(**changes) -> dict:
    """The record of the study's data: all of verified Fashion-MNIST (the digest is arbitrary here)."""
    return {"name": "fashion-mnist", "source": "/usr/share/datasets/fashion-mnist", "sha256": "ab" * 32,
            "verified": True, "image_shape": [28, 28], "classes": 10, "class_names": list(CLASS_NAMES),
            "dtype": "uint8", "splits": dict(STUDY_SPLITS), "subset": None, **changes}


def run(preset: str, seed: int, epochs: int) -> dict:
    val = [KERAS_EPOCH_1[preset] + 0.01 * (seed + 1) + 0.005 * e for e in range(epochs)]
    return {"preset": preset, "seed": seed, "status": "ok", "diverged_epoch": None,
            "history": {"loss": [0.5] * epochs, "accuracy": val, "val_loss": [0.6] * epochs, "val_accuracy": val},
            "test": {"loss": 0.4, "accuracy": val[-1]}, "time": {"compile_s": 1.0, "train_s": 2.0},
            "params": {"total": 10}}


def study(epochs: int = 10, data: dict | None = None, **settings) -> dict:
    """A results dict as `normlab reproduce` writes it for the study's presets with ``settings``."""
    return {"provenance": {"git_commit": "abc", "timestamp": "t"},
            "config": StudyConfig(epochs=epochs, **settings).as_dict(),
            "data": full_data() if data is None else data, "preprocessing": {"scale": 1 / 255},
            "runs": [run(preset, seed, epochs) for preset in KERAS_EPOCH_1 for seed in (0, 1)]}


def report_md(results: dict, folder) -> str:
    """report.md of ``results`` written as results.json and read back as every reader reads it."""
    write_results(results, folder / "results.json")
    write_all(load_results(folder / "results.json"), folder)
    return (folder / "report.md").read_text()


@pytest.mark.parametrize("epochs", [10, 1])
def test_the_study_is_compared_with_keras(tmp_path, epochs):
    results = study(epochs)
    report = report_md(results, tmp_path)
    assert is_the_study(results) and KERAS_HEADING in report
    assert "- compared with the published Keras run: yes (the study's data and settings)" in report
    for preset, keras in KERAS_EPOCH_1.items():
        ours = np.mean([r["history"]["val_accuracy"][0] for r in results["runs"] if r["preset"] == preset])
        row = next(line for line in report.splitlines() if line.startswith(f"| {preset} | {100 * keras:.2f} |"))
        assert f"| {100 * ours:.2f} | {100 * (ours - keras):+.2f} pp |" in row
        assert row.endswith("| — | — |") == (epochs < 10)


def with_data(**changes):
    return lambda results: results.update(data=full_data(**changes))


def with_config(**settings):
    """The study with ``settings``; a subset or validation split changes the recorded data as a run would."""
    def change(results):
        results["config"] = StudyConfig(epochs=10, **settings).as_dict()
        results["data"]["splits"] = results["config"]["data_splits"]
        results["data"]["subset"] = settings.get("subset")
    return change


NOT_THE_STUDY = {
    "--subset 500": with_config(subset=500),
    "other data": with_data(name="mnist"),
    "unverified data": with_data(verified=False),
    "other splits in the data": with_data(splits={"train": 50000, "validation": 10000, "test": 10000}),
    "a subset in the data only": with_data(subset=55000),
    "val_split 10000": with_config(val_split=10000),
    "learning rate 1e-2": with_config(learning_rate=0.01),
    "batch 64": with_config(batch_size=64),
    "adam": with_config(optimizer="adam"),
    "bn momentum 0.9": with_config(bn_momentum=0.9),
    "bn epsilon 1e-5": with_config(bn_epsilon=1e-5),
    "no shuffle": with_config(shuffle=False),
    "init_from": with_config(init_from="start.keras"),
    "lr_batch": with_config(lr_batch=256),
    "float32 images taken as given": lambda r: (r.update(preprocessing={"scale": 1.0}),
                                                r["data"].update(dtype="float32")),
    "per-channel normalization": lambda r: r.update(preprocessing={"scale": 1 / 255, "mean": [0.29], "std": [0.35]}),
    "a preset without a Keras run": lambda r: r["runs"].append(run("bn-after", 7, 10) | {"preset": "bn-after-noisy"}),
    "no learning rate recorded": lambda r: r["config"].pop("learning_rate"),
    "no config": lambda r: r.pop("config"),
}


@pytest.mark.parametrize("case", NOT_THE_STUDY)
def test_anything_but_the_study_has_no_keras_comparison(tmp_path, case):
    results = study()
    NOT_THE_STUDY[case](results)
    report = report_md(results, tmp_path)
    assert not is_the_study(results) and KERAS_HEADING not in report and "Keras @1" not in report
    why = markdown(f"no ({', '.join(differences(results))})")
    assert f"- compared with the published Keras run: {why}\n" in report and differences(results)


def test_the_header_shows_a_subset_other_data_and_normalization(tmp_path):
    results = study(data=full_data(name="own.npz", source="/data/own.npz", verified=False, dtype="float32",
                                   image_shape=[32, 32, 3], splits={"train": 100, "validation": 10, "test": 20},
                                   subset=100, sha256="0123456789ab" + "0" * 52))
    results["preprocessing"] = {"scale": 1.0, "mean": [0.5, 0.25, 0.125], "std": [0.2, 0.3, 0.4]}
    report = report_md(results, tmp_path)
    assert "- data: own.npz from /data/own.npz (content SHA-256 0123456789ab…)\n" in report
    assert "- images: 100 training (a subset), 10 validation, 20 test\n" in report
    assert ("- preprocessing: (as given − mean) / std per channel, mean \\[0.5, 0.25, 0.125\\], "
            "std \\[0.2, 0.3, 0.4\\] (float32 images)\n") in report


# ---- results.json from before the record ----------------------------------------------------------------------------

OLDEST_CONFIG = {"presets": list(KERAS_EPOCH_1), "seeds": 2, "learning_rate": 0.001, "batch_size": 32, "epochs": 10,
                 "optimizer": "sgd", "validation": "first 5,000 training images", "bn_momentum": 0.99,
                 "bn_epsilon": 0.001}  # what the first normlab wrote: no subset then


def legacy(config: dict | None) -> dict:
    results = study()
    del results["data"], results["preprocessing"]
    results["config"] = config
    return results


@pytest.mark.parametrize("config, the_study, images", [
    (OLDEST_CONFIG, True, "55,000 training, 5,000 validation"),
    ({**OLDEST_CONFIG, "subset": None, "shuffle": True, "init_from": None}, True, "55,000 training, 5,000 validation"),
    ({**OLDEST_CONFIG, "subset": 500}, False, "500 training (a subset), 5,000 validation"),
    ({**OLDEST_CONFIG, "val_split": 10000}, False, "50,000 training, 10,000 validation"),
    ({"epochs": 10}, False, "55,000 training, 5,000 validation"),
    (None, False, "55,000 training, 5,000 validation"),
])
def test_an_older_results_json_is_the_studys_fashion_mnist_as_its_config_says(tmp_path, config, the_study, images):
    results = legacy(config)
    report = report_md(results, tmp_path)
    assert is_the_study(results) == the_study and (KERAS_HEADING in report) == the_study
    assert "- data: fashion-mnist (a results.json from before runs recorded their data)\n" in report
    assert f"- images: {images}, 10,000 test\n" in report
    assert report_command([tmp_path]).read_text().count("from before runs recorded their data") == 1


# ---- a sweep: each trial records the data its own subset used -------------------------------------------------------

def test_each_sweep_trial_records_the_subset_it_trained_on(small_data, tmp_path):
    swept = parse('name = "s"\n[config]\npresets = ["bn-after"]\nseeds = 1\nepochs = 1\nworkers = 1\n'
                  '[sweep]\nsubset = [100, 300]\n', "s.toml")
    assert sweep.run(swept, tmp_path, sweep.trials(swept), small_data, 1, None, lambda line: None) == []
    for tid, overrides in sweep.trials(swept):
        n = overrides["subset"]
        record = load_results(tmp_path / "trials" / tid / "results.json")
        assert record["data"]["sha256"] == digest(small_data.x_train[:n], small_data.y_train[:n], small_data.x_val,
                                                  small_data.y_val, small_data.x_test, small_data.y_test)
        assert (record["data"]["name"], record["data"]["splits"]["train"], record["data"]["subset"]) == (
            "synthetic", n, n)
    page = report_command([tmp_path]).read_text()
    assert "images: 100 training (a subset)" in page and "images: 300 training (a subset)" in page
    assert page.count("(1 results file)") == 2


# ---- hostile records ------------------------------------------------------------------------------------------------

HOSTILE_NAME = "evil\x1b[31m\nname | [x](y) <b>&amp;"


def test_control_characters_and_markup_in_names_are_shown_literally(tmp_path):
    results = study(data=full_data(name=HOSTILE_NAME, source="/tmp/\x07bell\r", verified=False))
    write_results(results, tmp_path / "results.json")
    code, _, err = normlab("report", tmp_path)
    assert code == 0, err
    twin, page = (tmp_path / "summary.md").read_text(), (tmp_path / "summary.html").read_text()
    assert "- data: evil \\[31m name \\| \\[x\\](y) &lt;b&gt;&amp;amp; from /tmp/ bell (content SHA-256 " in twin
    assert "<li>data: evil [31m name | [x](y) &lt;b&gt;&amp;amp; from /tmp/ bell  (content SHA-256 " in page
    assert not any(c in twin + page for c in "\x1b\x07\r") and "<b>" not in page
    line = terminal(data_lines([results])[0])  # as the terminal shows it
    assert line.startswith("data: evil\\x1b[31m\\nname | [x](y) <b>&amp; from /tmp/\\x07bell\\r (content")
    assert line.isprintable()


def as_file(change) -> bytes:
    results = study()
    change(results)
    return json.dumps(results).encode()


@pytest.mark.parametrize("blob, message", [
    (as_file(lambda r: r["data"].update(name="x" * 10_000_000)), "'data' with a 'name'"),
    (as_file(lambda r: r["data"]["splits"].update(train=0.5)).replace(b'"train": 0.5', b'"train": NaN'),
     "not valid JSON"),
    (as_file(lambda r: r["data"].update(extra="@")).replace(b'"@"', b'{"a": ' * 1000 + b"1" + b"}" * 1000),
     "nested more than"),
])
def test_hostile_data_through_the_cli_is_a_one_line_error(tmp_path, blob, message):
    (tmp_path / "results.json").write_bytes(blob)
    code, _, err = normlab("report", tmp_path)
    one_line_error(code, err, message)
    assert not (tmp_path / "summary.html").exists()


BAD_DATA = {
    "data a list": lambda r: r.update(data=[1]),
    "preprocessing without data": lambda r: r.update(data=None),
    "data without preprocessing": lambda r: r.pop("preprocessing"),
    "name empty": lambda r: r["data"].update(name=""),
    "name a number": lambda r: r["data"].update(name=3),
    "name of 4,097 characters": lambda r: r["data"].update(name="n" * 4097),
    "name a lone surrogate": lambda r: r["data"].update(name="a\ud800"),
    "source missing": lambda r: r["data"].pop("source"),
    "sha256 short": lambda r: r["data"].update(sha256="abc"),
    "sha256 upper case": lambda r: r["data"].update(sha256="AB" * 32),
    "sha256 null": lambda r: r["data"].update(sha256=None),
    "verified text": lambda r: r["data"].update(verified="yes"),
    "image_shape empty": lambda r: r["data"].update(image_shape=[]),
    "image_shape of rank 4": lambda r: r["data"].update(image_shape=[28, 28, 1, 1]),
    "image_shape zero": lambda r: r["data"].update(image_shape=[0, 28]),
    "image_shape float": lambda r: r["data"].update(image_shape=[28.0, 28]),
    "1,000 channels": lambda r: r["data"].update(image_shape=[2, 2, 1000]),
    "classes zero": lambda r: r["data"].update(classes=0, class_names=[]),
    "class_names fewer than classes": lambda r: r["data"]["class_names"].pop(),
    "class name empty": lambda r: r["data"]["class_names"].__setitem__(0, ""),
    "dtype with spaces": lambda r: r["data"].update(dtype="uint8; rm -rf"),
    "splits without test": lambda r: r["data"]["splits"].pop("test"),
    "split negative": lambda r: r["data"]["splits"].update(train=-1),
    "split a float": lambda r: r["data"]["splits"].update(validation=1.5),
    "split the text NaN": lambda r: r["data"]["splits"].update(validation="NaN"),
    "split a bool": lambda r: r["data"]["splits"].update(test=True),
    "split beyond 2**53": lambda r: r["data"]["splits"].update(train=2**60),
    "subset zero": lambda r: r["data"].update(subset=0),
    "subset below the training split": lambda r: r["data"].update(subset=100),
    "preprocessing a list": lambda r: r.update(preprocessing=[1 / 255]),
    "scale zero": lambda r: r.update(preprocessing={"scale": 0}),
    "scale text": lambda r: r.update(preprocessing={"scale": "1/255"}),
    "scale beyond float32": lambda r: r.update(preprocessing={"scale": 1e39}),
    "an unknown preprocessing": lambda r: r.update(preprocessing={"scale": 1.0, "normalize": True}),
    "mean without std": lambda r: r.update(preprocessing={"scale": 1.0, "mean": [0.5]}),
    "mean for 3 channels of 1": lambda r: r.update(preprocessing={"scale": 1.0, "mean": [0.5] * 3, "std": [1.0] * 3}),
    "std zero": lambda r: r.update(preprocessing={"scale": 1.0, "mean": [0.5], "std": [0.0]}),
}


@pytest.mark.parametrize("case", BAD_DATA)
def test_a_bad_data_record_is_a_one_line_config_error(tmp_path, case):
    results = study()
    BAD_DATA[case](results)
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_results(tmp_path / "results.json")
    assert "\n" not in str(caught.value) and ("'data'" in str(caught.value) or "'preprocessing'" in str(caught.value))


@pytest.mark.parametrize("config", [{"subset": "500"}, {"subset": 0}, {"val_split": 1.5}, {"data": ""},
                                    {"data": "d" * 5000}, {"data": ["fashion-mnist"]}])
def test_an_older_file_whose_config_cannot_say_its_data_is_a_one_line_config_error(tmp_path, config):
    (tmp_path / "results.json").write_text(json.dumps(legacy({**OLDEST_CONFIG, **config})), encoding="utf-8")
    with pytest.raises(ConfigError, match="has no 'data' and a config"):
        load_results(tmp_path / "results.json")


def test_unknown_keys_of_the_data_record_are_kept_and_not_shown(tmp_path):
    """A newer ``Dataset.provenance()`` may add keys: an older report reads the file and shows what it knows."""
    results = study()
    results["data"]["licence"] = {"deep": [[["CC BY 4.0"]]]}
    original = copy.deepcopy(results)
    report = report_md(results, tmp_path)
    assert load_results(tmp_path / "results.json") == original and "CC BY" not in report.split("## Provenance")[0]
