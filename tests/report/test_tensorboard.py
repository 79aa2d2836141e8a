"""Live TensorBoard: each epoch's scalars on disk as it ends, diverged seeds cut as in results.json, a resumed run
with every step exactly once, and run directories that never leave their root. Event files are read back here
from their bytes (TFRecord framing and the few Event fields involved), independently of the writer."""

import os
import struct
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from normlab.experiments.config import StudyConfig
from normlab.experiments.reproduce import reproduce
from normlab.report.tensorboard import LiveTensorBoard
from normlab.train.loop import EpochEvent

TAGS = {"train/loss", "train/accuracy", "val/loss", "val/accuracy"}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, raw value) of a protobuf message: enough of the wire format to read Event scalars."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            size = {1: 8, 5: 4}[wire]
            value, i = buf[i:i + size], i + size
        yield key >> 3, value


def _values(run_dir):
    """(step, Summary.Value fields) of every value in the run's event files, in order."""
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (size,) = struct.unpack_from("<Q", data, i)
            event = dict(_fields(data[i + 12:i + 12 + size]))  # Event: step = 2, summary = 5
            i += 12 + size + 4
            for _, value in _fields(event.get(5, b"")):  # Summary.value = 1: Value(tag = 1, simple_value = 2)
                yield event[2], dict(_fields(value))
        assert i == len(data)


def read_scalars(run_dir) -> dict[str, dict[int, float]]:
    """tag -> {step: value}, over all the run's event files; a step logged twice for a tag fails the test."""
    scalars: dict[str, dict[int, float]] = {}
    for step, value in _values(run_dir):
        steps = scalars.setdefault(value[1].decode(), {})
        assert step not in steps, f"{value[1]} logged twice at step {step}"
        steps[step] = struct.unpack("<f", value[2])[0]
    return scalars


def epoch(job, seeds, n, loss, stage="trained"):
    """An epoch event with one loss per seed; the other metrics follow from it."""
    loss = np.asarray(loss, np.float64)
    metrics = {"loss": loss, "accuracy": 1 - loss / 4, "val_loss": loss + 0.1, "val_accuracy": 1 - loss / 3}
    return EpochEvent(seeds, n, metrics, 1.0, stage, job)


def test_each_epoch_is_on_disk_as_it_ends_and_the_test_at_the_last(tmp_path):
    job = SimpleNamespace(preset="bn-after", folder=tmp_path)
    with LiveTensorBoard() as log:
        for n in (1, 2, 3):
            log(epoch(job, [3, 4], n, [1.0 / n, 2.0 / n]))
            assert set(read_scalars(tmp_path / "tensorboard" / "bn-after" / "seed4")["val/loss"]) == set(range(1, n + 1))
        log(EpochEvent([3, 4], 3, {"loss": np.array([0.3, 0.4]), "accuracy": np.array([0.9, 0.8])}, stage="test",
                       job=job))
    for i, seed in enumerate((3, 4)):
        scalars = read_scalars(tmp_path / "tensorboard" / "bn-after" / f"seed{seed}")
        assert set(scalars) == TAGS | {"test/loss", "test/accuracy"}
        assert scalars["train/loss"] == pytest.approx({n: (1.0 + i) / n for n in (1, 2, 3)})
        assert scalars["test/accuracy"] == pytest.approx({3: (0.9, 0.8)[i]})


def test_a_diverged_seed_logs_the_epochs_before_it_and_no_test(tmp_path):
    job = SimpleNamespace(preset="baseline", folder=tmp_path)
    with LiveTensorBoard() as log:
        log(epoch(job, [0, 1], 1, [1.0, 1.0]))
        log(epoch(job, [0, 1], 2, [0.5, np.nan]))
        log(epoch(job, [0, 1], 3, [0.4, 0.7]))  # finite again: still diverged, as results.json keeps it
        log(EpochEvent([0, 1], 3, {"loss": np.array([0.3, np.nan]), "accuracy": np.array([0.9, 0.1])}, stage="test",
                       job=job))
    ok, diverged = (read_scalars(tmp_path / "tensorboard" / "baseline" / f"seed{s}") for s in (0, 1))
    assert set(ok["val/accuracy"]) == {1, 2, 3} and set(ok["test/loss"]) == {3}
    assert set(diverged) == TAGS and set(diverged["val/accuracy"]) == {1}


def test_a_resumed_run_has_every_step_once(tmp_path):
    """Killed after logging epoch 3 but before its checkpoint: the resumed process replays the 2 restored epochs
    and trains epoch 3 again; nothing of the first attempt is left to double a step."""
    job = SimpleNamespace(preset="bn-before", folder=tmp_path)
    with LiveTensorBoard() as log:
        for n in (1, 2, 3):
            log(epoch(job, [0], n, [1.0 / n]))
    with LiveTensorBoard() as log:
        for n in (1, 2):
            log(epoch(job, [0], n, [1.0 / n], stage="restored"))
        for n in (3, 4):
            log(epoch(job, [0], n, [1.0 / n]))
    run_dir = tmp_path / "tensorboard" / "bn-before" / "seed0"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert read_scalars(run_dir)["train/loss"] == pytest.approx({n: 1.0 / n for n in (1, 2, 3, 4)})


def test_a_job_without_a_run_folder_is_not_logged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with LiveTensorBoard() as log:
        log(epoch(SimpleNamespace(preset="baseline", folder=None), [0], 1, [1.0]))
        log(epoch(None, [0], 1, [1.0]))
    assert os.listdir(tmp_path) == []


def test_run_directories_never_leave_their_root(tmp_path):
    names = ["../../x", "/etc", "..", ".", "", "a/b", "a\\b", ".hidden", "seed\x00", "x" * 300, "\udcff", "ok-name_1.0"]
    folder = tmp_path / "deep" / "er"
    with LiveTensorBoard() as log:
        for name in names:
            log(epoch(SimpleNamespace(preset=name, folder=folder), [7], 1, [1.0]))
    walked = {os.path.relpath(os.path.join(d, n), tmp_path) for d, dirs, files in os.walk(tmp_path)
              for n in dirs + files}
    assert {p for p in walked if not p.startswith("deep/er/tensorboard/")} == {"deep", "deep/er", "deep/er/tensorboard"}
    assert len(list((folder / "tensorboard").iterdir())) == len(names)  # one folder per preset, none merged
    assert all(p.name == "seed7" for p in (folder / "tensorboard").glob("*/*"))


def test_reproduce_logs_live_and_a_resumed_study_keeps_every_step_once(small_data, tmp_path):
    config = StudyConfig(presets=("bn-after",), seeds=2, epochs=1, workers=1)
    with LiveTensorBoard() as log:
        reproduce(small_data, config, tmp_path, on_epoch=log)
    with LiveTensorBoard() as log:
        results = reproduce(small_data, replace(config, epochs=2), tmp_path, resume=True, on_epoch=log)
    for run in results["runs"]:
        scalars = read_scalars(tmp_path / "tensorboard" / "bn-after" / f"seed{run['seed']}")
        assert scalars["val/accuracy"] == pytest.approx(dict(enumerate(run["history"]["val_accuracy"], 1)))
        assert scalars["test/loss"] == pytest.approx({2: run["test"]["loss"]})


def read_histograms(run_dir) -> dict[str, dict[int, dict]]:
    """tag -> {step: {"min", "max", "num", "sum"}}: HistogramProto's fields 1-4 (doubles) of each Value.histo (5)."""
    found: dict[str, dict[int, dict]] = {}
    for step, value in _values(run_dir):
        histo = dict(_fields(value[5]))
        found.setdefault(value[1].decode(), {})[step] = {
            name: struct.unpack("<d", histo[field])[0] if field in histo else 0.0
            for field, name in zip((1, 2, 3, 4), ("min", "max", "num", "sum"))}
    return found


def test_histograms_hold_the_finite_values_and_skip_a_tag_with_none(tmp_path):
    rng = np.random.default_rng(0)
    activations = rng.normal(size=(50, 7)).astype(np.float32)
    gradients = activations.copy()
    gradients[0, :3] = [np.nan, np.inf, -np.inf]
    with LiveTensorBoard() as log:
        for step in (1, 2):
            log.histograms(tmp_path, "bn-after", 3, step, {"activations/dense": activations * step,
                                                            "gradients/dense/kernel": gradients,
                                                            "gradients/dense/bias": np.full(4, np.nan)})
    found = read_histograms(tmp_path / "tensorboard" / "bn-after" / "seed3")
    assert set(found) == {"activations/dense", "gradients/dense/kernel"} and set(found["activations/dense"]) == {1, 2}
    finite = gradients[np.isfinite(gradients)].astype(np.float64)
    assert found["gradients/dense/kernel"][2] == pytest.approx(
        {"min": finite.min(), "max": finite.max(), "num": finite.size, "sum": finite.sum()})
    assert found["activations/dense"][2]["max"] == pytest.approx(2 * float(activations.max()))
