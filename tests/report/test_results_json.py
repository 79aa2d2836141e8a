"""`normlab report` on hostile results.json files: one ConfigError line each, never a traceback, never a hang.

Each case breaks one field of a valid record; the fuzz tests mutate valid records at random and allow exactly two
outcomes: a written report, or a ConfigError.
"""

import copy
import json
import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from normlab import atomic
from normlab.errors import ConfigError
from normlab.report import results_json, write_all
from normlab.report.hparams import write_hparams
from normlab.report.html import report_command, write_markdown_summary
from normlab.report.results_json import find_results, load_results

FUZZ_EXAMPLES = int(os.environ.get("NORMLAB_FUZZ_EXAMPLES", "1000"))
FLOAT32_MAX = 3.4028234663852886e38  # written out: the bound is ours to choose, not numpy's to change


def run(preset="baseline", seed=0, epochs=2, **changes) -> dict:
    val = [0.7 + 0.05 * e for e in range(epochs)]
    record = {"preset": preset, "seed": seed, "status": "ok", "diverged_epoch": None,
              "setting": {"preset": preset, "learning_rate": 0.01},
              "history": {"loss": [0.5] * epochs, "accuracy": val, "val_loss": [0.6] * epochs, "val_accuracy": val},
              "test": {"loss": 0.4, "accuracy": 0.8}, "time": {"compile_s": 1.0, "train_s": 2.0},
              "params": {"total": 10}}
    record.update(changes)
    return record


def valid() -> dict:
    return {"provenance": {"git_commit": "abc", "timestamp": "t"}, "config": {"epochs": 2},
            "study": {"name": "s", "trial": "0001"},
            "data": {"name": "own.npz", "source": "/d/own.npz", "sha256": "0" * 64, "verified": False,
                     "image_shape": [4, 4, 3], "classes": 2, "class_names": ["a", "b"], "dtype": "float32",
                     "splits": {"train": 8, "validation": 2, "test": 2}, "subset": 8},
            "preprocessing": {"scale": 1.0, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "runs": [run(), run(seed=1), run("bn-after"),
                     run("bn-after", 1, epochs=1, status="diverged", diverged_epoch=2, test=None)]}


def history(**changes) -> dict:
    return {**run()["history"], **changes}


def one_line_error(path) -> str:
    with pytest.raises(ConfigError) as caught:
        report_command([path])
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message
    return message


BAD_RUNS = {
    "run not an object": [1, 2],
    "preset missing": {k: v for k, v in run().items() if k != "preset"},
    "preset empty": run(preset=""),
    "preset a number": run(preset=3),
    "preset a lone surrogate": run(preset="a\ud800"),
    "seed a bool": run(seed=True),
    "seed a float": run(seed=1.0),
    "seed text": run(seed="0"),
    "seed beyond 64 bits": run(seed=2**63),
    "status unknown": run(status="crashed"),
    "status a list": run(status=["ok"]),
    "diverged_epoch 0": run(status="diverged", diverged_epoch=0, test=None),
    "diverged_epoch a bool": run(status="diverged", diverged_epoch=True, test=None),
    "diverged_epoch text": run(status="diverged", diverged_epoch="3", test=None),
    "diverged_epoch huge": run(status="diverged", diverged_epoch=10**400, test=None),
    "history a list": run(history=[1, 2]),
    "history key missing": run(history={k: v for k, v in history().items() if k != "val_loss"}),
    "history a string": run(history=history(loss="0.5")),
    "history ragged": run(history=history(loss=[0.5])),
    "history text value": run(history=history(loss=["0.5", 0.5])),
    "history bool value": run(history=history(val_loss=[True, 0.5])),
    "history nested list": run(history=history(loss=[[0.5], 0.5])),
    "history beyond float32": run(history=history(val_loss=[1e39, 0.5])),
    "history huge int": run(history=history(val_loss=[10**400, 0.5])),
    "accuracy above 1": run(history=history(accuracy=[1.5, 0.5])),
    "accuracy below 0": run(history=history(val_accuracy=[-0.1, 0.5])),
    "completed without epochs": run(epochs=0),
    "completed without test": run(test=None),
    "test accuracy text": run(test={"loss": 0.4, "accuracy": "0.8"}),
    "test loss missing": run(test={"accuracy": 0.8}),
    "test a list": run(test=[0.4, 0.8]),
    "setting a list": run(setting=["lr", 0.1]),
    "setting value a list": run(setting={"preset": "baseline", "lr": [0.1]}),
    "setting value an object": run(setting={"preset": "baseline", "lr": {"a": 1}}),
    "setting value too large": run(setting={"preset": "baseline", "lr": 10**400}),
    "setting key a surrogate": run(setting={"\udc80": 1}),
    "time a list": run(time=[1, 2]),
    "time seconds text": run(time={"compile_s": "1", "train_s": 2.0}),
    "params a number": run(params=10),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_run_is_a_one_line_config_error(tmp_path, case):
    results = valid()
    results["runs"][1] = BAD_RUNS[case]
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert "run 1 " in one_line_error(tmp_path)
    assert not (tmp_path / "summary.html").exists() and not (tmp_path / "summary.md").exists()


BAD_FILES = {
    "empty": b"",
    "not JSON": b"{runs: []}",
    "not UTF-8": b'{"runs": "\xff"}',
    "a list": b"[1, 2]",
    "no runs": b'{"runs": []}',
    "runs an object": b'{"runs": {"0": {}}}',
    "NaN token": json.dumps(valid()).replace("0.4", "NaN", 1).encode(),
    "Infinity token": json.dumps(valid()).replace("0.4", "-Infinity", 1).encode(),
    "1e400, which parses as inf": json.dumps(valid()).replace("0.6", "1e400", 1).encode(),
    "nested 100,000 deep": b'{"runs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
    "nested 200 deep config": json.dumps({**valid(), "config": json.loads("[" * 200 + "]" * 200)}).encode(),
    "int of 5,000 digits": b'{"runs": [' + b"9" * 5000 + b"]}",
    "provenance a list": json.dumps({**valid(), "provenance": ["abc"]}).encode(),
    "study a string": json.dumps({**valid(), "study": "s"}).encode(),
    "study trial a list": json.dumps({**valid(), "study": {"trial": ["../x"]}}).encode(),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_a_one_line_config_error(tmp_path, case):
    (tmp_path / "results.json").write_bytes(BAD_FILES[case])
    one_line_error(tmp_path)


def test_valid_results_load_unchanged(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(valid()), encoding="utf-8")
    assert load_results(tmp_path / "results.json") == valid()


def test_runs_are_typed_records_with_the_defaults_of_older_files():
    old = {k: v for k, v in run().items() if k not in ("status", "diverged_epoch", "setting", "params")}
    records = results_json.runs({"runs": [old, run(setting=None), valid()["runs"][3]]})
    assert [(r.status, r.diverged, r.setting) for r in records[:2]] == [("ok", False, {})] * 2
    assert records[0].params is None and records[1].params == {"total": 10}
    assert records[0].final_val_accuracy == old["history"]["val_accuracy"][-1] and records[0].seed == 0
    assert (records[2].diverged, records[2].diverged_epoch, records[2].test) == (True, 2, None)


def test_extreme_but_valid_values_make_a_report(tmp_path):
    """The bounds themselves are allowed: float32's largest loss, accuracies 0 and 1, the smallest spreads."""
    results = valid()
    results["runs"][0]["history"]["val_loss"] = [FLOAT32_MAX, -FLOAT32_MAX]
    results["runs"][0]["history"]["val_accuracy"] = [0.0, 5e-324]
    results["runs"][1]["history"]["val_accuracy"] = [1.0, 0.0]
    results["runs"][2]["history"]["val_accuracy"] = [0.0, 1e-200]
    results["runs"][2]["test"]["accuracy"] = 0.0
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert report_command([tmp_path]).exists()


def test_oversized_file_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(results_json, "MAX_BYTES", 100)
    (tmp_path / "results.json").write_text(json.dumps(valid()), encoding="utf-8")
    assert "more than the 100" in one_line_error(tmp_path)


def within(seconds: float, call):
    """call() on a daemon thread: fail (rather than hang the suite) if it has not returned in time."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(value=call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    return outcome.get("value")


def test_symlink_to_dev_zero_and_fifo_do_not_hang(tmp_path):
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "results.json").symlink_to("/dev/zero")
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "results.json")
    for folder in ("zero", "fifo"):
        assert "not a regular file" in within(10, lambda: one_line_error(tmp_path / folder))


def test_find_results_skips_what_is_not_a_regular_file_and_survives_link_loops(tmp_path):
    trial = tmp_path / "trials" / "0001"
    trial.mkdir(parents=True)
    (trial / "results.json").write_text(json.dumps(valid()), encoding="utf-8")
    (tmp_path / "trials" / "loop").symlink_to(tmp_path)  # trials/loop/trials/loop/... without end
    (tmp_path / "trials" / "fifo").mkdir()
    os.mkfifo(tmp_path / "trials" / "fifo" / "results.json")
    (tmp_path / "trials" / "dir").mkdir()
    (tmp_path / "trials" / "dir" / "results.json").mkdir()
    assert within(10, lambda: find_results(tmp_path)) == [trial / "results.json"]
    assert within(30, lambda: report_command([tmp_path])).exists()


def test_messages_about_odd_folder_names_stay_on_one_line(tmp_path):
    folder = tmp_path / os.fsdecode(b"new\nline \x1b[31m\xff")
    folder.mkdir()
    message = one_line_error(folder)
    assert "\\n" in message and "\\x1b" in message and "\ufffd" in message
    message.encode("utf-8")  # printable whatever the terminal


# A valid record, then one to three kinds of damage at random places: a value replaced by junk, a key dropped or
# added, a list cut or extended. Junk is any JSON value, NaN and ±inf included, plus strings that mean something
# somewhere (Markdown, mathtext, paths, rich markup, lone surrogates).
SPECIAL_TEXT = st.sampled_from(["", "$\\foo$", "_x", "../../x", "/etc", "..", "a|b", "<b>&", "a\nb", "\ud800",
                                "[bold]x[/]", "x" * 300, "ok", "diverged", "baseline"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-2, 3) | st.floats() | SPECIAL_TEXT
           | st.text(max_size=8) | st.sampled_from([0.0, 1.0, 5e-324, FLOAT32_MAX, 1e39, 10**400]))
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4) | SPECIAL_TEXT, inner, max_size=3), max_leaves=6)
DAMAGE = ("replace", "replace", "drop", "add", "cut", "extend")
ADDED_KEY = st.text(max_size=6) | st.sampled_from(["status", "test", "setting", "time"])


def locations(value, where=()):
    """Every container in ``value`` as a path of keys and indices, the root first."""
    if isinstance(value, (dict, list)):
        yield where
        for key, item in (value.items() if isinstance(value, dict) else enumerate(value)):
            yield from locations(item, (*where, key))


@st.composite
def damaged(draw) -> dict:
    """A valid record with one to three kinds of damage: mostly unusable, sometimes still valid."""
    results = valid()
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(locations(results))))
        container = results
        for key in where:
            container = container[key]
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        damage = draw(st.sampled_from(DAMAGE))
        if damage == "replace" and keys:
            container[draw(st.sampled_from(keys))] = draw(JUNK)
        elif damage == "drop" and keys:
            del container[draw(st.sampled_from(keys))]
        elif damage == "add" and isinstance(container, dict):
            container[draw(ADDED_KEY)] = draw(JUNK)
        elif damage == "cut" and isinstance(container, list):
            del container[draw(st.integers(0, len(container))):]
        elif isinstance(container, list):
            container.append(draw(JUNK))
    return results


NAME = SPECIAL_TEXT | st.text(max_size=8)


# Built once, here: strategies built inside ``plausible`` and ``damaged`` at every draw made generating the fuzz
# examples cost twice as much (1,000 examples: 20 s -> 9 s).
PRESETS = st.lists(NAME, min_size=1, max_size=2, unique=True)
SEEDS = st.lists(st.integers(-3, 3) | st.integers(), min_size=1, max_size=2)
HISTORIES = {(accuracy, epochs): st.lists(st.floats(0, 1) if accuracy else st.floats(-FLOAT32_MAX, FLOAT32_MAX),
                                          min_size=epochs, max_size=epochs)
             for accuracy in (False, True) for epochs in range(4)}
SETTINGS = st.dictionaries(NAME, NAME | st.booleans() | st.integers(-3, 3) | st.sampled_from(
    [1e-3, 0.1, 10.0, 5e-324, FLOAT32_MAX]), max_size=2)


@st.composite
def plausible(draw) -> dict:
    """Well-formed records with odd content: user text everywhere, any status mix, unequal histories, extremes."""
    runs = []
    for preset in draw(PRESETS):
        for seed in draw(SEEDS):
            epochs = draw(st.integers(0, 3))
            status = "diverged" if epochs == 0 or draw(st.booleans()) else "ok"
            history = {k: draw(HISTORIES[k.endswith("accuracy"), epochs])
                       for k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            setting = draw(SETTINGS)
            runs.append({"preset": preset, "seed": seed, "status": status, "history": history, "setting": setting,
                         "diverged_epoch": epochs + 1 if status == "diverged" else None,
                         "test": {"loss": draw(st.floats(0, 10)), "accuracy": draw(st.floats(0, 1))}
                         if status == "ok" else None})
    return {"study": {"trial": draw(NAME)}, "provenance": {"git_commit": draw(NAME)}, "runs": runs}


RECORDS = damaged() | plausible()


@st.composite
def results_files(draw) -> bytes:
    """A damaged or odd record as results.json bytes; one in twenty cut anywhere, like a half-written file."""
    text = json.dumps(draw(RECORDS), allow_nan=True)
    if not draw(st.integers(0, 19)):
        text = text[:draw(st.integers(0, len(text)))]
    return text.encode("utf-8", errors="surrogatepass")


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])
@given(blob=results_files())
def test_fuzz_load_results_and_markdown_raise_only_config_errors(tmp_path, blob, monkeypatch):
    """Many examples, no figures: loading plus every table the report shows (the Markdown twin)."""
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: None)  # what is written counts here, not that it is durable
    path = tmp_path / "results.json"
    path.write_bytes(blob)
    try:
        results = load_results(path)
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    original = copy.deepcopy(results)
    write_markdown_summary([results], tmp_path / "summary.md")
    assert results == original


@pytest.mark.fuzz
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # random text meets DejaVu Sans: shown as boxes
@settings(max_examples=min(FUZZ_EXAMPLES, 20), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(blob=results_files())
def test_fuzz_report_command_writes_a_report_or_raises_a_config_error(tmp_path_factory, blob):
    """Few examples, every writer: report_command's page and twin, then what a sweep (TensorBoard HParams) and
    reproduce (write_all) write from the same runs; each example renders up to four figures."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "results.json").write_bytes(blob)
    try:
        page = report_command([folder])
    except ConfigError as error:
        assert "\n" not in str(error)
        return
    assert page.read_bytes().startswith(b"<!DOCTYPE html>") and page.with_suffix(".md").exists()
    results = load_results(folder / "results.json")
    write_hparams([results], folder / "hparams")
    write_all(results, folder / "reproduce")
