"""``normlab bench``: option parsing, the models mirrored in each framework, and one short real run.

The real run works with or without the ``[bench]`` extra: a peer whose framework is missing must be listed as
skipped with its reason, and normlab itself must always be measured.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest

from conftest import WIDE_BN_STUDY
from torch_weights import copy_weights
from normlab.bench import runner
from normlab.interop import mirror
from normlab.bench.command import add_bench_parser, config_from_args
from normlab.bench.common import summarize
from normlab.bench.report import footer_lines
from normlab.errors import ConfigError

PARAMS = {"baseline": 266_610, "bn-after": 271_346, "bn-before": 270_946, "wide-bn": 412_234,
          "ioffe-sigmoid-bn": 100_610, "cnn-bn": 207_450, "ln-after": 268_978, "rms-after": 267_794,
          "renorm-after": 274_898, "torch-bn-after": 271_346}
KERAS_CANNOT, TORCH_CANNOT = {"torch-bn-after"}, {"renorm-after"}  # see test_unsupported_layers_say_why


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
    cnn = matmul_shapes(build_preset("cnn-bn"), 32)  # a conv as its im2col GEMM: a row per output position
    assert len(cnn) == 11 and cnn[:2] == [("conv2d fwd x@W", (32 * 28 * 28, 3 * 3 * 1), (9, 16), ((1,), (0,))),
                                          ("conv2d dW=x^T@g", (32 * 28 * 28, 9), (32 * 28 * 28, 16), ((0,), (0,)))]
    assert cnn[4] == ("conv2d_1 dx=g@W^T", (32 * 14 * 14, 32), (32, 3 * 3 * 16), ((1,), (0,)))


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
    named = lambda name: {"name": name}  # noqa: E731 (each layer under its normlab name, Keras' own naming)
    assert name == "bn-before" and layers == [
        ("Input", ((28, 28),), {}), ("Flatten", (), named("flatten")),
        ("BatchNormalization", (), bn | named("batch_normalization")),
        ("Dense", (), {"units": 300, **dense} | named("dense")),
        ("BatchNormalization", (), bn | named("batch_normalization_1")), ("Activation", (), relu | named("activation")),
        ("Dense", (), {"units": 100, **dense} | named("dense_1")),
        ("BatchNormalization", (), bn | named("batch_normalization_2")),
        ("Activation", (), relu | named("activation_1")),
        ("Dense", (), {"units": 10, **dense, "activation": "softmax", "use_bias": True} | named("dense_2"))]


def test_keras_mirror_translates_the_kinds_whose_options_are_not_keras_keywords():
    """cnn-bn's conv, pooling and reshape options are Keras' own; BN drops normlab's convention; batch renorm is
    BatchNormalization(renorm=True) with the paper's clipping, rmin = 1 / rmax."""
    cnn = mirror.keras_layers(description("cnn-bn"))
    assert cnn[:5] == [("Reshape", {"target_shape": [28, 28, 1]}),
                       ("Conv2D", {"filters": 16, "kernel_size": 3, "strides": 1, "padding": "same",
                                   "activation": "linear", "use_bias": False, "kernel_initializer": "glorot_uniform"}),
                       ("BatchNormalization", {"momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}),
                       ("Activation", {"activation": "relu"}),
                       ("MaxPooling2D", {"pool_size": 2, "strides": None, "padding": "valid"})]
    renorm = mirror.keras_layers(description("renorm-after"))[1]
    assert renorm == ("BatchNormalization", {"momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True,
                                             "renorm_momentum": 0.99, "renorm": True,
                                             "renorm_clipping": {"rmax": 3.0, "rmin": 1 / 3.0, "dmax": 5.0}})


def built(*layers):
    """A model of ``layers`` and a classifier head."""
    from normlab.nn.models import build
    return build("m", [*layers, {"kind": "flatten"}, {"kind": "dense", "units": 10}])


def described(*layers) -> dict:
    from normlab.nn.summary import describe
    return describe(built(*layers))


RESHAPE = {"kind": "reshape", "target_shape": [28, 28, 1]}


@pytest.mark.parametrize("framework, model, reason", [
    ("keras", lambda: description("bn-after-noisy"), "Keras has no layer class CovariateNoise"),
    ("torch", lambda: description("bn-after-noisy"), r"no PyTorch mirror for covariate_noise \(the Keras class "
                                                     r"CovariateNoise\)"),
    ("keras", lambda: description("torch-bn-after"), "cannot keep an unbiased running variance"),
    ("keras", lambda: described({"kind": "batch_renorm", "warmup_steps": 100}), "no warm-up or relaxation schedule"),
    ("torch", lambda: description("renorm-after"), "PyTorch has no batch renormalization"),
    ("keras", lambda: description("ghost-after"), "no virtual_batch_size"),
    ("torch", lambda: description("ghost-after"), "no virtual batches"),
])
def test_unsupported_layers_say_why(framework, model, reason):
    """A layer a framework cannot mirror raises Unsupported with its reason, for that peer to report as skipped."""
    keras = Recorder()
    keras.layers = types.SimpleNamespace(Flatten=Recorder, BatchNormalization=Recorder, Dense=Recorder)  # no noise
    with pytest.raises(mirror.Unsupported, match=reason):
        mirror.keras_model(keras, model()) if framework == "keras" else mirror.torch_model(Recorder(), model())


@pytest.mark.parametrize("preset", sorted(set(PARAMS) - TORCH_CANNOT))
def test_torch_mirror_matches_normlab_parameter_count(preset):
    torch = pytest.importorskip("torch")
    model = mirror.torch_model(torch.nn, description(preset))
    buffers = [b for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")]
    assert sum(t.numel() for t in [*model.parameters(), *buffers]) == PARAMS[preset]


PADDED = [RESHAPE, {"kind": "conv2d", "filters": 3, "kernel_size": [3, 5], "padding": "same", "activation": "relu"},
          {"kind": "max_pool2d", "pool_size": 3, "padding": "same"},  # TF pads 28 to 30, one each side
          {"kind": "conv2d", "filters": 4, "strides": 2}, {"kind": "batch_norm"}]
# TF's "same" padding one pixel more after than before: a ConstantPad2d in front of the PyTorch layer.
ODD_PADDED = [RESHAPE, {"kind": "conv2d", "filters": 2, "kernel_size": 2, "padding": "same"},
              {"kind": "max_pool2d", "padding": "same", "strides": 1},  # pads with -inf: the inputs are negative
              {"kind": "conv2d", "filters": 3, "strides": 2, "padding": "same"}, {"kind": "batch_norm"}]


@pytest.mark.parametrize("preset", ["cnn-bn", "cnn-gn", "cnn-ln", "ln-after", "gn-after", "rms-after",
                                    "torch-bn-after", "padded", "odd-padded"])
def test_torch_mirror_computes_what_normlab_computes(preset):
    """normlab's weights copied into the PyTorch mirror give the same logits in inference and in training (batch
    statistics), and the same moving means after that step: the NHWC permutes, Keras' flatten order, "same"
    padding, each norm's axes and BN's momentum conventions all agree. With PyTorch's convention (unbiased
    running variance) the moving variances agree too."""
    import jax
    import numpy as np
    from normlab.nn import models
    from normlab.nn.summary import describe
    torch = pytest.importorskip("torch")
    model = {"padded": lambda: built(*PADDED), "odd-padded": lambda: built(*ODD_PADDED)}.get(
        preset, lambda: models.preset(preset))()
    params, state = models.init(model, jax.random.key(0))
    mirrored = mirror.torch_model(torch.nn, describe(model))
    copy_weights(torch, mirrored, model, params)
    x = np.random.default_rng(0).uniform(-1 if preset == "odd-padded" else 0, 1, (8, 28, 28)).astype(np.float32)
    for train in (False, True):  # inference first: a training pass moves the running statistics
        ours, new_state = models.apply(model, params, state, x, train=train)
        mirrored.train(train)
        with torch.no_grad():
            theirs = mirrored(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(theirs, np.asarray(ours), rtol=1e-4, atol=1e-4)
    buffers = dict(mirrored.named_buffers())
    stats = ["moving_mean", "moving_variance"] if preset == "torch-bn-after" else ["moving_mean"]
    for name in stats:
        torch_name = name.replace("moving", "running").replace("variance", "var")
        ours = [np.asarray(s[name]) for s in new_state.values() if name in s]
        theirs = [b.numpy() for key, b in buffers.items() if key.endswith(torch_name)]
        assert len(ours) == len(theirs) == sum(kind.kind == "BatchNormalization" for _, kind in model.layers)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


KERAS_CHECK = """import json, os, sys
os.environ['KERAS_BACKEND'] = 'numpy'  # builds the same variables as jax or tensorflow, without compiling (-50 s)
import keras
from normlab.interop.mirror import keras_model
found = []
for description in json.load(sys.stdin):
    keras.backend.clear_session()  # layer names count from 0 again, as in a fresh program
    model = keras_model(keras, description)
    found.append([model.count_params(), [[w.path.split('/', 1)[1], list(w.shape)] for w in model.weights]])
print(json.dumps(found))
"""


def test_keras_mirror_matches_normlab_parameter_count_and_variables():
    """Keras' count and its ``model.weights`` (paths and shapes, in order) are ours (``nn.summary.variables``)."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras not installed (the [bench] extra)")
    from normlab.experiments.study import parse as parse_study
    from normlab.nn.summary import variables
    presets = sorted(set(PARAMS) - KERAS_CANNOT)
    models = [parse_study(WIDE_BN_STUDY, "wide.toml").base.model(preset) for preset in presets]
    out = subprocess.run([sys.executable, "-c", KERAS_CHECK], input=json.dumps([description(p) for p in presets]),
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [
        [PARAMS[preset], [[v.path, list(v.shape)] for v in variables(model)]] for preset, model in zip(presets, models)]


@pytest.mark.full_data
def test_short_bench_on_real_data(real_data, tmp_path, monkeypatch):
    # A peer that can never be installed, so the skip path runs with and without the [bench] extra.
    monkeypatch.setitem(runner.PEERS, "torch-compile", runner.Peer("torch_run", ("--compile",), ("no_such_pkg_x",)))
    # One real peer: keras_run's whole run is test_keras_jax_study_spreads_every_job_over_pinned_workers'.
    config = runner.BenchConfig(epochs=1, subset=2000, peers=("torch", "torch-compile"),
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
    r = systems["torch"]
    if importlib.util.find_spec("torch") is None:
        assert r["status"] == "skipped" and "torch" in r["reason"]
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


@pytest.mark.full_data
def test_keras_jax_study_spreads_every_job_over_pinned_workers(real_data, tmp_path, monkeypatch):
    """3 presets x 1 seed x 2 epochs: each job once, one single-threaded worker per core (one trains two presets in
    turn), steps_per_execution tried first, the ratio to normlab's.

    normlab's own study is a stand-in here: ``normlab_run --study`` trains the full 3 x 5 x 10 (minutes).
    """
    if runner.missing_packages(runner.PEERS["keras-jax"]):
        pytest.skip("keras or jax not installed (the [bench] extra)")
    monkeypatch.setattr(runner, "STUDY_SEEDS", 1)
    monkeypatch.setattr(runner, "STUDY_EPOCHS", 2)
    monkeypatch.setitem(runner.PEERS, "keras-tf", runner.Peer("keras_run", (), ("no_such_pkg_x",)))
    spawn, normlab = runner.spawn, {"status": "ok", "total_s": 10.0, "workers": 2, "peak_rss_mib": 1.0,
                                    "peak_rss_sum_mib": 2.0}
    monkeypatch.setattr(runner, "spawn", lambda name, *args, **kw: normlab if name == "study-normlab"
                        else spawn(name, *args, **kw))
    for folder in ("results", "logs"):  # as run_bench makes them
        (tmp_path / folder).mkdir()
    config = runner.BenchConfig(subset=500, keras_jax_spe=(1, 16), out=tmp_path, data_dir=real_data.source)
    study = json.loads(json.dumps(runner.study(config, note=lambda line: None)))  # as bench.json keeps it

    assert study["keras-tf"] == {"status": "skipped", "reason": "not installed: no_such_pkg_x"}
    r = study["keras-jax"]
    assert r["status"] == "ok", r
    cores = sorted(os.sched_getaffinity(0))
    assert r["workers"] == min(len(cores), 3) == len(r["per_worker"])
    assert sorted((job["preset"], job["seed"]) for job in r["jobs"]) == [("baseline", 0), ("bn-after", 0),
                                                                         ("bn-before", 0)]
    assert sorted({job["core"] for job in r["jobs"]}) == cores[:r["workers"]]
    assert all(len(job["epoch_times_s"]) == 2 and 0.1 < job["val_accuracy"] <= 1 for job in r["jobs"])
    assert all("--xla_cpu_multi_thread_eigen=false" in w["xla_flags"] for w in r["per_worker"])
    assert set(r["spe_trials_epoch_s"]) == {"1", "16"} and r["steps_per_execution"] in (1, 16)
    assert r["total_s"] >= max(w["total_s"] for w in r["per_worker"])
    assert r["ratio_vs_normlab"] == r["total_s"] / 10.0
    footer = footer_lines({"systems": {}, "cpu_count": len(cores), "study": study})
    assert footer[-2:] == ["  keras-tf study skipped: not installed: no_such_pkg_x",
                           f"  keras-jax {r['total_s']:.0f} s measured with {r['workers']} pinned worker process(es), "
                           f"steps_per_execution {r['steps_per_execution']}, {r['ratio_vs_normlab']:.1f}× normlab"]
