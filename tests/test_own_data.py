"""Your data trains like the built-in: Fashion-MNIST repacked as an .npz, and a few thousand of its images as a
folder of PNGs, give bit for bit the history of the same images from the built-in or from an .npz; other shapes
and class counts come from the data, through the real CLI."""

import json
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from clitools import normlab, one_line_error, session_cache  # noqa: F401 (session_cache: autouse)

TRAIN = ["--seed", "0", "--epochs", "2"]


def history(folder) -> tuple[dict, dict]:
    run = json.loads((folder / "results.json").read_text())["runs"][0]
    return run["history"], run["test"]


def train(tmp_path, name, *args) -> tuple[dict, dict]:
    code, _, err = normlab("train", "bn-after", *TRAIN, *args, "--out", tmp_path / name)
    assert code == 0, err
    return history(tmp_path / name)


def test_fashion_mnist_repacked_as_npz_trains_bit_for_bit_as_the_built_in(tmp_path, real_data):
    """The keras.datasets layout, as a user would write it from the publisher's four files: train and test whole,
    validation left to the default split (the first 5,000)."""
    npz = tmp_path / "fm.npz"
    np.savez(npz, x_train=np.concatenate([real_data.x_val, real_data.x_train]),
             y_train=np.concatenate([real_data.y_val, real_data.y_train]), x_test=real_data.x_test,
             y_test=real_data.y_test)
    subset = ["--subset", "3000"]
    assert train(tmp_path, "builtin", *subset, "--data", "fashion-mnist") == train(tmp_path, "npz", *subset,
                                                                                   "--data", npz)


def order(counts: list[int]) -> list[tuple[int, int]]:
    """(class, i) in the folder loader's documented order, worked out here independently: every class's i-th of
    n images at (i + 1/2) / n of the split, ties to the lower class."""
    places = []
    for c, n in enumerate(counts):
        places += [(Fraction(2 * i + 1, 2 * n), c, i) for i in range(n)]
    return [(c, i) for _, c, i in sorted(places)]


def test_a_folder_of_pngs_trains_as_the_same_images_from_an_npz(tmp_path, real_data):
    """3,000 training and 600 test images of Fashion-MNIST as PNG files in train/ and test/, one folder per class;
    the .npz holds the same images in the order the folder is read in."""
    folder, arrays = tmp_path / "pngs", {}
    for split, x, y, n in (("train", real_data.x_train, real_data.y_train, 3000),
                           ("test", real_data.x_test, real_data.y_test, 600)):
        by_class = [x[:n][y[:n] == c] for c in range(10)]
        for c, images in enumerate(by_class):
            (folder / split / f"{c:02d}").mkdir(parents=True)
            for i, image in enumerate(images):
                Image.fromarray(image, mode="L").save(folder / split / f"{c:02d}" / f"{i:05d}.png")
        places = order([len(images) for images in by_class])
        arrays[f"x_{split}"] = np.stack([by_class[c][i] for c, i in places])
        arrays[f"y_{split}"] = np.array([c for c, _ in places], np.uint8)
    np.savez(tmp_path / "same.npz", **arrays, class_names=np.array([f"{c:02d}" for c in range(10)]))
    assert train(tmp_path, "folder", "--data", folder) == train(tmp_path, "npz", "--data", tmp_path / "same.npz")


def test_colour_images_and_a_hundred_classes_come_from_the_data(tmp_path):
    """16x16 RGB images in 100 classes: the MLP's first Dense is 768 wide, its last scores 100 classes, and the CNN
    keeps the three channels; the run records the data's shape."""
    rng = np.random.default_rng(0)
    y = np.arange(1200) % 100
    np.savez(tmp_path / "rgb.npz", x_train=rng.integers(0, 256, (1200, 16, 16, 3), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8), y_test=y[:200])
    code, out, err = normlab("summary", "bn-after", "--data", tmp_path / "rgb.npz")
    assert code == 0, err
    assert "(None, 768)" in out and "230,700" in out and "10,100" in out  # Dense 768 x 300 + 300, and 100 x 100 + 100
    code, out, err = normlab("summary", "cnn-bn", "--data", tmp_path / "rgb.npz")
    assert code == 0 and "(None, 16, 16, 3)" in out, err
    code, _, err = normlab("train", "cnn-bn", "--epochs", "1", "--val-split", "200", "--data", tmp_path / "rgb.npz",
                           "--out", tmp_path / "run")
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "results.json").read_text())["config"]
    assert config["data_shape"] == [[16, 16, 3], 100] and config["data_splits"]["train"] == 1000


@pytest.mark.parametrize("args, fragments", [
    (["--data", "cifar-10"], ["unknown dataset 'cifar-10'", "did you mean 'cifar10'"]),
    (["--subset", "5000"], ["subset 5,000 is more than the 1,080 training images"]),  # 120 held out (a tenth)
    (["--batch-size", "1081"], ["batch_size 1,081 is more than the 1,080 training images"]),
    (["--val-split", "1200"], ["too few to hold out 1,200"]),
    (["--data", "missing.npz"], ["missing.npz: cannot open"]),
])
def test_sizes_and_names_that_do_not_fit_the_data_are_one_line_errors(tmp_path, args, fragments):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "small.npz", x_train=rng.integers(0, 256, (1200, 8, 8), dtype=np.uint8),
             y_train=np.arange(1200) % 3, x_test=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8),
             y_test=np.arange(30) % 3)
    code, _, err = normlab("train", "bn-after", "--epochs", "1", "--data", tmp_path / "small.npz", *args,
                           "--out", tmp_path / "run", cwd=tmp_path)
    one_line_error(code, err, *fragments)
    assert not (tmp_path / "run").exists()


def test_a_built_in_dataset_shapes_the_model_before_any_of_it_is_read(tmp_path):
    """CIFAR-10's shape is its registry line's: no download (an empty cache, no network) to show the models."""
    empty = {"XDG_CACHE_HOME": str(tmp_path), "NORMLAB_DATA_DIR": ""}
    code, out, err = normlab("summary", "cnn-bn", "--data", "cifar10", env=empty)
    assert code == 0 and "(None, 32, 32, 3)" in out and "(None, 32, 32, 16)" in out, err
    code, out, err = normlab("summary", "bn-after", "--data", "cifar10", env=empty)
    assert code == 0 and "(None, 3072)" in out and "921,900" in out, err  # Dense 3,072 x 300 + 300
    code, out, err = normlab("summary", "bn-after", "--data", "cifar100", env=empty)
    assert code == 0 and "10,100" in out, err  # the last Dense scores CIFAR-100's 100 classes: 100 x 100 + 100
