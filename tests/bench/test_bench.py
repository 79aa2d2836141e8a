"""``normlab bench``: option parsing, the models mirrored in each framework, and one short real run.

The real run works with or without the ``[bench]`` extra: a peer whose framework is missing must be listed as
skipped with its reason, and normlab itself must always be measured.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import types

import pytest

from conftest import WIDE_BN_STUDY
from normlab.bench import mirror, runner
from normlab.bench.command import add_bench_parser, config_from_args
from normlab.bench.common import summarize
from normlab.errors import ConfigError

PARAMS = {"baseline": 266_610, "bn-after": 271_346, "bn-before": 270_946, "wide-bn": 412_234,
          "ioffe-sigmoid-bn": 100_610}


def description(preset: str) -> dict:
    from normlab.experiments.study import parse as parse_study
    from normlab.nn.summary import describe
    return describe(parse_study(WIDE_BN_STUDY, "wide.toml").base.model(preset))


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_bench_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


def test_options_and_defaults(tmp_path):
    args = parse("--peers", "torch, keras-tf", "--keras-jax-spe", "1,64", "--out", str(tmp_path), "--subset", "100")
    config = config_from_args(args)
    assert (config.peers, config.keras_jax_spe, config.subset, config.out) == (("torch", "keras-tf"), (1, 64), 100,
                                                                                tmp_path)
    assert (config.preset, config.epochs, config.seeds_vmapped, config.full_study) == ("bn-after", 3, 5, False)
    assert config.rounds == 1 and parse("--rounds", "2").rounds == 2
    assert args.func.__name__ == "cmd_bench"
    with pytest.raises(ConfigError, match="unknown peer"):
        config_from_args(parse("--peers", "mxnet"))
    with pytest.raises(ConfigError, match="unknown preset 'bn-aftr': did you mean 'bn-after'"):
        config_from_args(parse("--preset", "bn-aftr", "--out", str(tmp_path)))
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        config_from_args(parse("--epochs", "0", "--out", str(tmp_path)))
    with pytest.raises(ConfigError, match="subset must be"):
        config_from_args(parse("--subset", "0", "--out", str(tmp_path)))


def test_a_study_model_is_benchable_and_written_for_the_children(tmp_path):
    study = tmp_path / "wide.toml"
    study.write_text(WIDE_BN_STUDY)
    config = config_from_args(parse("--preset", "wide-bn", "--study", str(study), "--out", str(tmp_path)))
    written = json.loads(runner.write_model(config, "wide-bn").read_text())
    assert written["preset"] == "wide-bn" and written["config"]["models"]["wide-bn"]
    assert [layer["class"] for layer in written["description"]["layers"]] == [
        "Flatten", "BatchNormalization", "Dense", "BatchNormalization", "Dense"]


def test_steady_epoch_excludes_warm_up_unless_compiled_apart():
    peer = summarize([5.0, 1.0, 1.2, 0.8], 55_000)
    assert (peer["epoch_s"], peer["compile_s"]) == (1.0, 4.0)
    normlab = summarize([1.0, 1.2, 0.8], 55_000, compile_s=3.0)
    assert (normlab["epoch_s"], normlab["compile_s"], normlab["samples_per_s"]) == (1.0, 3.0, 55_000)


def test_matmul_floor_skips_the_input_gradient_with_nothing_trainable_before():
    from normlab.bench.floor import matmul_shapes
    from normlab.nn.models import preset as build_preset
    baseline = [name for name, *_ in matmul_shapes(build_preset("baseline"), 32)]
    assert len(baseline) == 8 and "dense dx=g@W^T" not in baseline  # no BN in front of the first Dense
    assert len(matmul_shapes(build_preset("bn-after"), 32)) == 9


class Recorder:
    """Stands in for ``keras.layers`` / ``keras``: records which class each layer is built with, and how."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: (name, args, kwargs)

    def Sequential(self, layers, name):
        return name, layers


def test_keras_mirror_builds_keras_layers_with_keras_options():
    """bn-before as one would write it in Keras by hand (the study's code): the generator must produce exactly it."""
    keras = Recorder()
    keras.layers = Recorder()
    name, layers = mirror.keras_model(keras, description("bn-before"))
    bn = {"momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}
    dense = {"activation": "linear", "use_bias": False, "kernel_initializer": "glorot_uniform"}
    relu = {"activation": "relu"}
    assert name == "bn-before" and layers == [
        ("Input", ((28, 28),), {}), ("Flatten", (), {}), ("BatchNormalization", (), bn),
        ("Dense", (), {"units": 300, **dense}), ("BatchNormalization", (), bn), ("Activation", (), relu),
        ("Dense", (), {"units": 100, **dense}), ("BatchNormalization", (), bn), ("Activation", (), relu),
        ("Dense", (), {"units": 10, **dense, "activation": "softmax", "use_bias": True})]


def test_a_model_with_covariate_noise_is_not_mirrored_and_says_why():
    """Keras and PyTorch have no CovariateNoise: each mirror raises Unsupported, naming it, for the peer to report."""
    keras = Recorder()
    keras.layers = types.SimpleNamespace(Flatten=Recorder, BatchNormalization=Recorder, Dense=Recorder)  # no noise
    with pytest.raises(mirror.Unsupported, match="Keras has no layer class CovariateNoise"):
        mirror.keras_model(keras, description("bn-after-noisy"))
    with pytest.raises(mirror.Unsupported, match="no PyTorch mirror for the Keras class CovariateNoise"):
        mirror.torch_model(Recorder(), description("bn-after-noisy"))


@pytest.mark.parametrize("preset", PARAMS)
def test_torch_mirror_matches_normlab_parameter_count(preset):
    torch = pytest.importorskip("torch")
    model = mirror.torch_model(torch.nn, description(preset))
    buffers = [b for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")]
    assert sum(t.numel() for t in [*model.parameters(), *buffers]) == PARAMS[preset]


def test_keras_mirror_matches_normlab_parameter_count():
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras not installed (the [bench] extra)")
    code = ("import json, os, sys; os.environ['KERAS_BACKEND'] = 'jax'; import keras; from normlab.bench.mirror import "
            "keras_model; print([keras_model(keras, d).count_params() for d in json.load(sys.stdin)])")
    models = json.dumps([description(preset) for preset in PARAMS])
    out = subprocess.run([sys.executable, "-c", code], input=models, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == list(PARAMS.values())


@pytest.mark.full_data
def test_short_bench_on_real_data(real_data, tmp_path, monkeypatch):
    # A peer that can never be installed, so the skip path runs with and without the [bench] extra.
    monkeypatch.setitem(runner.PEERS, "torch-compile", runner.Peer("torch_run", ("--compile",), ("no_such_pkg_x",)))
    config = runner.BenchConfig(epochs=1, subset=2000, peers=("keras-tf", "torch", "torch-compile"),
                                seeds_vmapped=2, out=tmp_path, data_dir=real_data.source)
    runner.run_bench(config, note=lambda line: None)

    bench = json.loads((tmp_path / "bench.json").read_text())
    assert {"provenance", "config", "expected_params", "systems", "notes", "floor"} <= bench.keys()
    assert bench["expected_params"] == PARAMS["bn-after"]
    systems = bench["systems"]
    ours = ("normlab", "normlab-vmap", "normlab-procs") if config.procs > 1 else ("normlab", "normlab-vmap")
    for name in ours:
        r = systems[name]
        assert r["status"] == "ok", r
        assert r["epoch_s"] > 0 and r["compile_s"] > 0 and r["peak_rss_mib"] > 100 and r["n_train"] == 2000
    assert systems["normlab"]["ratio_vs_normlab"] == 1.0
    assert all("per model" in systems[name]["per_model"] for name in ours[1:])
    assert bench["floor"]["floor_s"] > 0 and bench["floor"]["pct_of_floor"] > 0
    assert systems["torch-compile"] == {"status": "skipped",
                                        "reason": "not installed: no_such_pkg_x (pip install 'normlab[bench]')"}
    for name, package in (("keras-tf", "tensorflow"), ("torch", "torch")):
        r = systems[name]
        if importlib.util.find_spec(package) is None:
            assert r["status"] == "skipped" and package in r["reason"]
        else:
            assert r["status"] == "ok", r
            assert r["epoch_s"] > 0 and r["params_match_normlab"] and r["ratio_vs_normlab"] > 0
            assert 0.1 < r["val_accuracy"] <= 1  # 63 steps: well above chance, far from converged
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_best_round_keeps_the_fastest_and_every_rounds_time():
    rounds = [{"status": "ok", "epoch_s": 2.0}, {"status": "ok", "epoch_s": 1.5}]
    assert runner.best_round(rounds) == {"status": "ok", "epoch_s": 1.5, "epoch_s_rounds": [2.0, 1.5]}
    failed = {"status": "failed", "reason": "exit code 1"}
    assert runner.best_round([rounds[0], failed]) == failed
    assert runner.best_round(rounds[:1]) == rounds[0]
