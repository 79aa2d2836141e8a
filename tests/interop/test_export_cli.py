"""`normlab export`, `evaluate`, `train --init-from` and `summary --folded` on a real run: a model that leaves
normlab scores in plain Keras and in onnxruntime, on the test images as stored (uint8), what normlab recorded, and
comes back unchanged."""

import json
import shutil

import jax
import numpy as np
import pytest

from agreement import assert_accuracy_agrees, assert_same_predictions
from normlab.cli import main
from normlab.interop.keras_io import load_keras
from normlab.interop.model_files import initial, read
from normlab.interop.safetensors_io import read_safetensors
from normlab.interop.trained import final_weights, one_run
from normlab.nn.models import apply
from normlab.train.step import scale_pixels

pytestmark = pytest.mark.full_data


@pytest.fixture(scope="module")
def run_dir(real_data, tmp_path_factory):
    """bn-before after one epoch on 2,048 images: trained enough that its batch norms are not the identity."""
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["train", "bn-before", "--subset", "2048", "--epochs", "1", "--lr", "0.01", "--out", str(out)]) == 0
    return out


def recorded_accuracy(run_dir) -> float:
    return json.loads((run_dir / "results.json").read_text())["runs"][0]["test"]["accuracy"]


@pytest.fixture(scope="module")
def ours(run_dir, real_data):
    """normlab's test-set probabilities with the run's final weights: what the exports must predict."""
    weights = final_weights(run_dir, *one_run(run_dir, None, None))
    logits, _ = apply(weights.model, weights.params, weights.state, scale_pixels(real_data.x_test), False)
    return np.asarray(jax.nn.softmax(logits))


def assert_scores_the_recorded_accuracy(run_dir, real_data, ours, predict) -> None:
    """``predict`` (an exported model) on the raw uint8 test images predicts normlab's classes but on near ties
    (``agreement``), so its accuracy is the recorded one up to them; on pixels already / 255 (scaled twice) it is
    far from it: the scaling is inside the model."""
    recorded = recorded_accuracy(run_dir)
    assert_accuracy_agrees(recorded, ours, real_data.y_test)
    theirs = predict(real_data.x_test)
    assert_same_predictions(ours, theirs)
    assert_accuracy_agrees(float(np.mean(theirs.argmax(axis=1) == real_data.y_test)), ours, real_data.y_test)
    twice = np.mean(predict(real_data.x_test.astype(np.float32) / 255).argmax(axis=1) == real_data.y_test)
    assert abs(twice - recorded) > 0.2, (twice, recorded)


@pytest.mark.parametrize("fold", [False, True])
def test_a_keras_export_scores_the_recorded_test_accuracy_on_raw_pixels_in_plain_keras(run_dir, real_data, ours,
                                                                                       fold):
    """``predict(x_test_uint8)``, as a Keras user calls it, with no /255 of the caller's."""
    out = run_dir.parent / f"model-{fold}.keras"
    assert main(["export", str(run_dir), "--out", str(out), *(["--fold-bn"] if fold else [])]) == 0
    model = load_keras().saving.load_model(out)
    assert_scores_the_recorded_accuracy(run_dir, real_data, ours,
                                        lambda x: model.predict(x, batch_size=1000, verbose=0))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[0] == "Rescaling" and ("BatchNormalization" in kinds) != fold


def test_an_onnx_export_scores_the_recorded_test_accuracy_on_raw_pixels_at_batch_1_and_1000(run_dir, real_data,
                                                                                            ours):
    ort = pytest.importorskip("onnxruntime")
    out = run_dir.parent / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    weights = final_weights(run_dir, *one_run(run_dir, None, None))
    for rows in (1, 1000):
        images = real_data.x_test[:rows]
        logits, _ = apply(weights.model, weights.params, weights.state, scale_pixels(images), False)
        theirs = session.run(None, {"images": images.astype(np.float32)})[0]
        assert theirs.shape == (rows, 10)
        assert np.abs(theirs - np.asarray(jax.nn.softmax(logits))).max() <= 1e-5
    assert_scores_the_recorded_accuracy(run_dir, real_data, ours, lambda x: np.concatenate(
        [session.run(None, {"images": x[i:i + 1000].astype(np.float32)})[0] for i in range(0, len(x), 1000)]))


def test_an_export_carries_the_preprocessing_its_results_json_records(run_dir, tmp_path):
    """A normalized run's mean and std (``train.preprocess``) reach the .keras, ONNX and safetensors files."""
    run = tmp_path / "normalized"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("export"))
    recorded = {"scale": 1 / 255, "mean": [0.2860], "std": [0.3530]}
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps(results | {"preprocessing": recorded}))
    for suffix in (".keras", ".onnx", ".safetensors"):
        assert main(["export", str(run), "--out", str(tmp_path / f"m{suffix}")]) == 0
    keras_model = load_keras().saving.load_model(tmp_path / "m.keras")
    assert [type(layer).__name__ for layer in keras_model.layers[:2]] == ["Rescaling", "Normalization"]
    _, found = read(tmp_path / "m.keras")
    np.testing.assert_allclose([found["scale"], *found["mean"], *found["std"]], [1 / 255, 0.2860, 0.3530], rtol=1e-7)
    assert read_safetensors(tmp_path / "m.safetensors")[1] == recorded
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert [node.op_type for node in graph.node[:3]] == ["Mul", "Sub", "Div"]
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    assert [constants[node.input[1]].tolist() for node in graph.node[:3]] == [
        np.float32(1 / 255), [np.float32(0.2860)], [np.float32(0.3530)]]


def test_export_then_init_from_then_evaluate_is_the_same_model(run_dir, real_data, ours, capsys):
    exported = {suffix: run_dir.parent / f"round-trip{suffix}" for suffix in (".keras", ".safetensors")}
    for path in exported.values():
        assert main(["export", str(run_dir), "--out", str(path)]) == 0
    weights = final_weights(run_dir, *one_run(run_dir, None, None))
    for path in exported.values():
        params, state = initial(str(path), weights.model)
        assert all(jax.tree.leaves(jax.tree.map(np.array_equal, (params, state), (weights.params, weights.state))))
    capsys.readouterr()
    scores = []
    for target in (run_dir, *exported.values()):
        assert main(["evaluate", str(target)]) == 0
        scores.append(capsys.readouterr().out.split(": test ")[1].split(" (")[0].strip())
    assert scores[0] == scores[1] == scores[2]  # one program on the same weights, bit for bit
    assert_accuracy_agrees(float(scores[0].split("accuracy ")[1]), ours, real_data.y_test)
    histories = []
    for path in exported.values():
        out = run_dir.parent / f"from{path.suffix}"
        assert main(["train", "bn-before", "--init-from", str(path), "--subset", "256", "--epochs", "1",
                     "--no-shuffle", "--out", str(out)]) == 0
        record = json.loads((out / "results.json").read_text())
        assert record["config"]["init_from"] == str(path) and record["config"]["shuffle"] is False
        histories.append(record["runs"][0]["history"])
    assert histories[0] == histories[1]


@pytest.mark.parametrize("argv, message", [
    (["export", "{parent}"], "has no results.json"),
    (["export", "{run}", "--preset", "bn-after"], "has no preset 'bn-after'; it trained bn-before"),
    (["export", "{run}", "--seed", "3"], "has no seed 3 of any preset; seeds: 0"),
    (["export", "{run}", "--format", "keras", "--out", "{parent}/m.onnx"], "a keras file must end in .keras"),
    (["evaluate", "{parent}/junk.safetensors"], "not a safetensors file"),
    (["evaluate", "{parent}/junk.keras"], "not a Keras model file"),
    (["evaluate", "{parent}/junk.txt"], "normlab reads .keras and .safetensors model files"),
    (["train", "bn-after", "--init-from", "{parent}/round-trip.safetensors", "--out", "{parent}/x"],
     "does not fit model bn-after: its layer 3 is dense activation=linear use_bias=False, bn-after's is dense "
     "activation=relu use_bias=True"),
])
def test_bad_exports_and_imports_are_one_line_errors(run_dir, argv, message, capsys):
    parent = run_dir.parent
    for name in ("junk.safetensors", "junk.keras", "junk.txt"):
        (parent / name).write_bytes(b"\x00" * 64)
    if not (parent / "round-trip.safetensors").exists():
        assert main(["export", str(run_dir), "--out", str(parent / "round-trip.safetensors")]) == 0
    capsys.readouterr()
    assert main([a.format(parent=parent, run=run_dir) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (parent / "x").exists()


def test_summary_folded_shows_the_model_without_its_batch_norms(capsys):
    assert main(["summary", "bn-after", "--folded"]) == 0
    out = capsys.readouterr().out
    assert "BatchNormalization" not in out and "Total params: 266,610" in out and "Non-trainable params: 0" in out
