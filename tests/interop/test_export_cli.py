"""`normlab export`, `evaluate`, `train --init-from` and `summary --folded` on a real run: a model that leaves
normlab scores in plain Keras and in onnxruntime what normlab recorded, and comes back unchanged."""

import json

import jax
import numpy as np
import pytest

from agreement import assert_accuracy_agrees, assert_same_predictions
from normlab.cli import main
from normlab.interop.keras_io import load_keras
from normlab.interop.model_files import initial
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


@pytest.mark.parametrize("fold", [False, True])
def test_a_keras_export_scores_the_recorded_test_accuracy_in_plain_keras(run_dir, real_data, ours, fold):
    """Keras predicts normlab's classes but on near ties (``agreement``), and normlab's are what the run recorded."""
    out = run_dir.parent / f"model-{fold}.keras"
    assert main(["export", str(run_dir), "--out", str(out), *(["--fold-bn"] if fold else [])]) == 0
    model = load_keras().saving.load_model(out)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert ("BatchNormalization" in kinds) != fold
    assert_same_predictions(ours, model.predict(real_data.x_test.astype(np.float32) / 255, batch_size=1000,
                                                verbose=0))
    assert_accuracy_agrees(recorded_accuracy(run_dir), ours, real_data.y_test)


def test_an_onnx_export_predicts_like_normlab_at_batch_1_and_1000(run_dir, real_data):
    ort = pytest.importorskip("onnxruntime")
    out = run_dir.parent / "model.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    weights = final_weights(run_dir, *one_run(run_dir, None, None))
    for rows in (1, 1000):
        images = real_data.x_test[:rows]
        logits, _ = apply(weights.model, weights.params, weights.state, scale_pixels(images), False)
        theirs = session.run(None, {"images": images.astype(np.float32) / 255})[0]
        assert theirs.shape == (rows, 10)
        assert np.abs(theirs - np.asarray(jax.nn.softmax(logits))).max() <= 1e-5


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
