"""``normlab.Model``s trained and taken out of runs: ``normlab.train`` takes one wherever a preset's name goes and
starts from its weights (the ``init_from`` semantics) unless ``reinit``; ``Results.model`` gives a run's final
weights, which predict the accuracy the run recorded; a ``.keras`` export read back predicts what Keras does."""

import numpy as np
import pytest

import normlab
from agreement import assert_accuracy_agrees
from api.test_model import SMALL, numpy_forward
from normlab.data import Dataset
from normlab.errors import ConfigError
from normlab.interop.keras_io import load_keras

TRAIN = {"epochs": 1, "subset": 256, "progress": False}


def colour_data(seed: int = 0) -> Dataset:
    """Ten noisy 32x32x3 uint8 templates, each channel brighter than the last: a per-channel normalization has a
    different mean and std to apply to each."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 160, (10, 32, 32, 3)) + np.array([0, 40, 80])

    def draw(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        return np.clip(templates[labels] + rng.normal(0, 50, (n, 32, 32, 3)), 0, 255).astype(np.uint8), labels

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = draw(512), draw(128), draw(200)
    return Dataset(x_train, y_train, x_test, y_test, x_val, y_val, class_names=[str(c) for c in range(10)],
                   name="colour", every_class=False)


COLOUR = colour_data()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """SMALL, given as a Model, after an epoch on normalized colour images: its batch norm's moving statistics
    and the run's per-channel mean and std are far from an identity."""
    out = tmp_path_factory.mktemp("model-run") / "run"
    return normlab.train(normlab.model(SMALL, name="small"), data=COLOUR, normalize="per_channel",
                         learning_rate=0.05, out=out, **TRAIN)


@pytest.fixture(scope="module")
def keras_file(run):
    return normlab.export(run.folder, format="keras", out=run.folder.parent / "small.keras")


def test_a_runs_model_predicts_the_recorded_test_accuracy_and_a_numpy_forward_pass(run):
    model = run.model("small", seed=0)
    probabilities = model.predict(COLOUR.x_test)
    assert_accuracy_agrees(run.test["small"]["accuracy"][0], probabilities, COLOUR.y_test)
    mean, std = (np.array(model.preprocessing[k]) for k in ("mean", "std"))
    assert model.preprocessing["scale"] == 1 / 255 and mean.shape == std.shape == (3,) and np.ptp(mean) > 0.2
    expected = numpy_forward(model, (COLOUR.x_test / 255.0 - mean) / std)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
    assert run.model().weights[0][0] == "dense/kernel"  # the one preset, the first seed


def test_a_keras_export_read_back_predicts_what_keras_predicts_on_raw_pixels(run, keras_file):
    theirs = load_keras().saving.load_model(keras_file).predict(COLOUR.x_test, verbose=0)
    model = normlab.model(keras_file)
    assert model.name == "small" and model.preprocessing == run.model().preprocessing
    np.testing.assert_allclose(model.predict(COLOUR.x_test), theirs, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.predict(COLOUR.x_test), run.model().predict(COLOUR.x_test), atol=1e-5, rtol=0)
    assert normlab.model(keras_file, name="renamed").name == "renamed"


def history(results, name: str = "small") -> dict:
    return {key: values.tolist() for key, values in results.history[name].items()}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """SMALL trained from the weights its seed 0 draws: what ``init(seed=0)`` and ``reinit`` must reproduce."""
    return normlab.train(normlab.model(SMALL, name="small"), data=COLOUR,
                         out=tmp_path_factory.mktemp("drawn") / "run", **TRAIN)


def test_init_gives_the_weights_training_draws_for_the_seed(drawn, tmp_path):
    model = normlab.model(SMALL, name="small", data=COLOUR)
    started = normlab.train(model.init(seed=0), data=COLOUR, out=tmp_path / "run", **TRAIN)
    assert history(started) == history(drawn)
    assert started.config["init_from"] == str(tmp_path / "run" / "init" / "small.safetensors")


def test_a_model_file_trains_from_its_weights_as_init_from_does_and_reinit_draws_fresh_ones(keras_file, drawn,
                                                                                            tmp_path):
    model = normlab.model(keras_file)
    given = normlab.train(model, data=COLOUR, out=tmp_path / "model", **TRAIN)
    by_path = normlab.train("small", models={"small": {"layers": SMALL}}, init_from=str(keras_file), data=COLOUR,
                            out=tmp_path / "path", **TRAIN)
    assert history(given) == history(by_path) != history(drawn)
    assert history(normlab.train(model, reinit=True, data=COLOUR, out=tmp_path / "reinit", **TRAIN)) == history(drawn)


def test_resuming_with_other_weights_is_refused_and_keeps_the_start(tmp_path):
    model = normlab.model(SMALL, name="small", data=COLOUR)
    normlab.train(model.init(seed=0), data=COLOUR, out=tmp_path / "run", **TRAIN)
    start = (tmp_path / "run" / "init" / "small.safetensors").read_bytes()
    with pytest.raises(ConfigError) as error:
        normlab.train(model.init(seed=1), data=COLOUR, out=tmp_path / "run", resume=True, **{**TRAIN, "epochs": 2})
    assert "started from other weights than model small's" in str(error.value) and "\n" not in str(error.value)
    assert (tmp_path / "run" / "init" / "small.safetensors").read_bytes() == start


@pytest.mark.full_data
def test_a_model_of_layers_trains_on_the_default_data_recorded_as_a_study_model(real_data, tmp_path):
    layers = [{"kind": "flatten"}, {"kind": "dense", "units": "classes", "activation": "softmax"}]
    results = normlab.train(normlab.model(layers=layers, name="tiny"), out=tmp_path / "run", **TRAIN)
    assert results.presets == ["tiny"] and results.config["models"] == {"tiny": {"layers": layers}}
    assert results.config["init_from"] is None and results.history["tiny"]["loss"].shape == (1, 1)


@pytest.mark.parametrize("call, fragment", [
    (lambda m, out: normlab.reproduce([m, "baseline"], data=COLOUR, out=out),
     "presets: model small has weights to start from, and every model of a run starts from one init_from"),
    (lambda m, out: normlab.train(m, init_from="x.keras", data=COLOUR, out=out),
     "init_from and model small's weights both say what training starts from"),
    (lambda m, out: normlab.train(m, out=out),
     "model small's weights take (32, 32, 3) images in 10 classes; fashion-mnist's are (28, 28) in 10"),
    (lambda m, out: normlab.train([m], out=out), "preset must be a preset's or study model's name or a normlab.Model"),
    (lambda m, out: normlab.train(m.folded(), models={"small": {"layers": SMALL[:1] + SMALL[3:]}}, data=COLOUR,
                                  out=out), "presets: model small does not fit model small"),
])
def test_a_mistake_is_one_line_and_makes_no_folder(call, fragment, tmp_path):
    model = normlab.model(SMALL, name="small", data=COLOUR).init(seed=0)
    with pytest.raises(ConfigError) as error:
        call(model, tmp_path / "never")
    assert fragment in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("preset, seed, fragment", [
    ("big", None, "has no preset 'big'; it trained small"),
    ("small", 7, "has no seed 7 of small; seeds: 0"),
    (None, "0", "seed must be an int, one of the run's seeds, got '0'"),
])
def test_results_model_names_what_the_run_has(run, preset, seed, fragment):
    with pytest.raises(ConfigError) as error:
        run.model(preset, seed)
    assert fragment in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_results_in_memory_have_no_model(run):
    with pytest.raises(ConfigError, match="not in a run folder"):
        normlab.Results(run.record).model()
