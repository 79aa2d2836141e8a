"""The model's input (``train.preprocess``): crop and flip against NumPy on the same draws, per-channel statistics
against NumPy float64, draws as a function of (seed, epoch, step), the compiled epoch against a step-by-step loop
fed NumPy-augmented images, a resumed run bit for bit, and the two settings' checks."""

import dataclasses
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clitools import normlab, one_line_error
from normlab.errors import ConfigError
from normlab.experiments.config import StudyConfig
from normlab.nn.models import preset as build_preset
from normlab.train.loop import Checkpointing, fit, make_epoch, make_optimizer, shuffled_batches
from normlab.train import preprocess
from normlab.train.preprocess import PAD, PIXELS, augmented, draws, epoch_draws, pixels, preprocessing, step_key
from normlab.train.state import create
from normlab.train.step import make_evaluate, make_train_step

BOTH = ("crop4", "flip")


def reference_augmented(x: np.ndarray, offsets: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """Pad H and W with PAD zeros, cut each image's H x W window at its offset, mirror W where flipped."""
    height, width = x.shape[1:3]
    padded = np.pad(x, [(0, 0), (PAD, PAD), (PAD, PAD)] + [(0, 0)] * (x.ndim - 3))
    out = np.stack([padded[i, r:r + height, c:c + width] for i, (r, c) in enumerate(offsets)])
    return np.stack([image[:, ::-1] if flip else image for image, flip in zip(out, flips)])


def reference_stats(x_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = PIXELS[x_u8].astype(np.float64).reshape(-1, x_u8.shape[-1] if x_u8.ndim == 4 else 1)
    return flat.mean(axis=0), flat.std(axis=0)


@pytest.mark.parametrize("shape", [(64, 28, 28), (64, 32, 32, 3)])
def test_crop_and_flip_equal_numpy_on_the_same_draws(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    drawn = draws(jax.random.key(7), shape[0], BOTH)
    offsets, flips = np.asarray(drawn["crop4"]), np.asarray(drawn["flip"])
    assert offsets.shape == (shape[0], 2) and flips.shape == (shape[0],)
    np.testing.assert_array_equal(jax.jit(augmented)(x, drawn), reference_augmented(x, offsets, flips))
    np.testing.assert_array_equal(augmented(x, {"flip": drawn["flip"]}), reference_augmented(x, np.full((64, 2), PAD),
                                                                                             flips))
    np.testing.assert_array_equal(augmented(x, {"crop4": drawn["crop4"]}), reference_augmented(x, offsets,
                                                                                               np.zeros(64, bool)))
    np.testing.assert_array_equal(augmented(x, {}), x)


def test_draws_cover_every_offset_and_flip_half_the_images():
    n = 4096
    drawn = draws(jax.random.key(1), n, BOTH)
    offsets = np.asarray(drawn["crop4"])
    for axis in range(2):
        assert sorted(set(offsets[:, axis].tolist())) == list(range(2 * PAD + 1))
    assert abs(int(np.sum(drawn["flip"])) - n / 2) < 4 * np.sqrt(n / 4)  # 4 standard deviations of Binomial(n, 1/2)
    alone = draws(jax.random.key(1), n, ("crop4",))  # one augmentation's draws do not depend on the other's
    assert set(alone) == {"crop4"}
    np.testing.assert_array_equal(alone["crop4"], offsets)


def test_draws_change_with_epoch_and_step_but_not_on_a_second_look():
    rng = create(build_preset("baseline"), make_optimizer(StudyConfig().train_config()), 3).rng
    epoch = jax.jit(epoch_draws, static_argnums=(2, 3, 4))
    first, again, second = (epoch(rng, e, 5, 16, BOTH) for e in (1, 1, 2))
    for name in BOTH:
        np.testing.assert_array_equal(first[name], again[name])
        assert not np.array_equal(first[name], second[name])
        assert all(not np.array_equal(first[name][0], first[name][s]) for s in range(1, 5))
        for step in range(5):  # each step's draws are its own key's, whatever the rest of the epoch
            np.testing.assert_array_equal(first[name][step], draws(step_key(rng, 1, step), 16, BOTH)[name])
    other = create(build_preset("baseline"), make_optimizer(StudyConfig().train_config()), 4).rng
    assert not np.array_equal(epoch(other, 1, 5, 16, BOTH)["crop4"], first["crop4"])


@pytest.mark.parametrize("shape", [(300, 28, 28), (300, 8, 8, 3)])
def test_per_channel_statistics_equal_numpy_float64(shape, monkeypatch):
    x = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    monkeypatch.setattr(preprocess, "STATS_CHUNK", 7)  # several chunks, the last one short
    found = preprocessing(x, "per_channel")
    mean, std = reference_stats(x)
    assert found["scale"] == 1 / 255
    np.testing.assert_array_equal(found["mean"], mean.astype(np.float32))
    np.testing.assert_array_equal(found["std"], std.astype(np.float32))
    floats = PIXELS[x] * 3.0  # float images are taken as they are: their own statistics, scale 1
    found = preprocessing(floats, "per_channel")
    assert found["scale"] == 1.0
    np.testing.assert_allclose(found["mean"], 3 * mean, rtol=1e-6)
    np.testing.assert_allclose(found["std"], 3 * std, rtol=1e-6)
    assert preprocessing(x, "none") == {"scale": 1 / 255, "mean": None, "std": None}


def test_a_constant_channel_is_centred_not_divided_by_zero():
    x = np.random.default_rng(2).integers(0, 256, (10, 4, 4, 2), dtype=np.uint8)
    x[..., 1] = 200
    stats = preprocessing(x, "per_channel")
    assert stats["std"][1] == 1.0 and stats["mean"][1] == np.float32(PIXELS[200])
    y = np.asarray(pixels(x, stats))
    assert np.all(y[..., 1] == 0) and np.all(np.isfinite(y))
    np.testing.assert_allclose(y[..., 0], (PIXELS[x[..., 0]] - stats["mean"][0]) / stats["std"][0], rtol=1e-6)


def test_compiled_epoch_equals_a_loop_fed_numpy_augmented_images(small_data):
    """The epoch's program (normalized, cropped and flipped in the step, 3 steps, the last of 24) against plain
    steps on float32 images normalized, padded, cropped and flipped by NumPy with each step's own draws."""
    n, batch, epoch = 88, 32, 2
    model, optimizer = build_preset("bn-after"), make_optimizer(StudyConfig().train_config())
    images, labels = small_data.x_train[:n], small_data.y_train[:n].astype(np.int32)
    stats = preprocessing(images, "per_channel")
    ts0 = create(model, optimizer, 3)
    compiled, _ = jax.jit(make_epoch(model, optimizer, n, batch, stats=stats, augment=BOTH))(ts0, images, labels,
                                                                                              jnp.int32(epoch))
    step = jax.jit(make_train_step(model, optimizer))
    normalized = (PIXELS[images] - np.float32(stats["mean"][0])) / np.float32(stats["std"][0])
    order = np.asarray(shuffled_batches(ts0.rng, epoch, n, batch)).reshape(-1)[:n]
    ts = ts0
    for index, start in enumerate(range(0, n, batch)):
        rows = order[start:start + batch]
        drawn = draws(step_key(ts0.rng, epoch, index), batch, BOTH)
        x = reference_augmented(normalized[rows], np.asarray(drawn["crop4"])[:len(rows)],
                                np.asarray(drawn["flip"])[:len(rows)])
        ts, _ = step(ts, x, labels[rows], jnp.ones(len(rows), jnp.float32))
    for a, b in zip(jax.tree.leaves((compiled.params, compiled.model_state)), jax.tree.leaves((ts.params, ts.model_state))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_float32_images_are_taken_as_they_are(small_data):
    model, optimizer = build_preset("bn-after"), make_optimizer(StudyConfig().train_config())
    images, labels, mask = small_data.x_train[:32], small_data.y_train[:32].astype(np.int32), jnp.ones(32)
    step = jax.jit(make_train_step(model, optimizer))
    ts = create(model, optimizer, 0)
    assert leaf_bytes(step(ts, images, labels, mask)) == leaf_bytes(step(ts, PIXELS[images], labels, mask))


def small(data, n=160):
    """``data`` with n training images; the test images darkened, so their own statistics are far from the
    training set's."""
    return SimpleNamespace(x_train=data.x_train[:n], y_train=data.y_train[:n], x_val=data.x_val[:100],
                           y_val=data.y_val[:100], x_test=data.x_test[:100] // 3, y_test=data.y_test[:100])


def leaf_bytes(tree) -> list[bytes]:
    return [np.asarray(jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else a).tobytes()
            for a in jax.tree.leaves(tree)]


AUGMENTED = StudyConfig(presets=("bn-after",), epochs=2, normalize="per_channel", augment=["flip", "crop4"])


def test_two_epochs_equal_one_and_a_resumed_one_bit_for_bit(small_data, tmp_path):
    data, model, config = small(small_data), AUGMENTED.model("bn-after"), AUGMENTED.train_config()
    whole = fit(model, data, [0, 1], config)

    def part(epochs, resume):
        checkpointing = Checkpointing(tmp_path, AUGMENTED.identity("bn-after"), resume, warn=pytest.fail)
        return fit(model, data, [0, 1], dataclasses.replace(config, epochs=epochs), checkpointing=checkpointing)

    assert part(1, False).history["loss"].shape == (2, 1)
    resumed = part(2, True)
    assert resumed.resumed_from == 1
    for key in whole.history:
        assert whole.history[key].tobytes() == resumed.history[key].tobytes(), key
    for key in whole.test:
        assert whole.test[key].tobytes() == resumed.test[key].tobytes(), key
    assert leaf_bytes(whole.final_state) == leaf_bytes(resumed.final_state)
    plain = fit(model, data, [0, 1], dataclasses.replace(config, augment=()))  # augmentation is not a no-op
    assert not np.array_equal(plain.history["loss"], whole.history["loss"])


def test_evaluation_is_normalized_by_the_training_split_and_not_augmented(small_data):
    data, model = small(small_data), AUGMENTED.model("bn-after")
    result = fit(model, data, [0], dataclasses.replace(AUGMENTED.train_config(), epochs=1))
    stats = preprocessing(data.x_train, "per_channel")
    state = jax.tree.map(lambda a: a[0], result.final_state)
    loss, accuracy = jax.jit(make_evaluate(model, stats=stats))(state.params, state.model_state, data.x_test,
                                                                 data.y_test.astype(np.int32))
    np.testing.assert_allclose(result.test["loss"][0], loss, rtol=1e-6)
    assert result.test["accuracy"][0] == pytest.approx(float(accuracy), abs=1e-7)
    own = preprocessing(data.x_test, "per_channel")  # the test set's own statistics: other numbers
    assert abs(own["mean"][0] - stats["mean"][0]) > 0.1
    other, _ = jax.jit(make_evaluate(model, stats=own))(state.params, state.model_state, data.x_test,
                                                        data.y_test.astype(np.int32))
    assert abs(float(other) - result.test["loss"][0]) > 1e-3


def test_identity_and_serialization():
    plain, custom = StudyConfig(), StudyConfig(normalize="per_channel", augment=("flip", "crop4"))
    assert not {"normalize", "augment"} & set(plain.identity("baseline"))  # what checkpoints before them hold
    identity = custom.identity("baseline")
    assert identity["normalize"] == "per_channel" and identity["augment"] == ("crop4", "flip")
    assert StudyConfig(augment=["crop4", "flip"]) == StudyConfig(augment=("flip", "crop4"))
    assert custom.as_dict()["augment"] == ["crop4", "flip"]
    assert StudyConfig.from_dict(custom.as_dict()) == custom
    older = {k: v for k, v in custom.as_dict().items() if k not in ("normalize", "augment")}  # a results.json before
    assert StudyConfig.from_dict(older) == plain
    train = custom.train_config()
    assert (train.normalize, train.augment) == ("per_channel", ("crop4", "flip"))


@pytest.mark.parametrize("options,fragment", [
    ({"normalize": "x"}, "normalize must be one of none, per_channel, got 'x'"),
    ({"normalize": ""}, "normalize must be one of none, per_channel, got ''"),
    ({"augment": ["crop4", "crop4"]}, "augment must be a list of distinct names of crop4, flip (or []), got"),
    ({"augment": "flip"}, "augment must be a list of distinct names"),
    ({"augment": ["rotate"]}, "augment must be a list of distinct names"),
    ({"augment": [1]}, "augment must be a list of distinct names"),
])
def test_bad_values_are_one_line_config_errors(options, fragment):
    import normlab as api
    for make in (StudyConfig, api.config):
        with pytest.raises(ConfigError) as error:
            make(**options)
        assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("line,fragment", [('normalize = "global"', "normalize must be one of none, per_channel"),
                                           ('augment = ["flip", "mixup"]', "augment must be a list of distinct")])
def test_a_study_file_with_a_bad_value_fails_before_any_work(tmp_path, line, fragment):
    study = tmp_path / "s.toml"
    study.write_text(f"[config]\n{line}\n")
    out = tmp_path / "out"
    code, _, err = normlab("train", "baseline", "--study", study, "--out", out)
    one_line_error(code, err, "s.toml", fragment)
    assert not out.exists()


def test_diagnose_refuses_what_it_does_not_measure(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('[config]\naugment = ["flip"]\n')
    out = tmp_path / "out"
    one_line_error(*normlab("diagnose", "--presets", "baseline", "--study", study, "--out", out)[::2],
                   "remove normalize and augment")
    assert not out.exists()
