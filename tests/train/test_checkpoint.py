"""Checkpoints: exact round trip, damage detection, refusal of foreign checkpoints, failed writes, fuzzing."""

import errno
import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings, strategies as st

from graphs import resnet
from normlab import atomic
from normlab.errors import CheckpointError
from normlab.report.results_json import write_results
from normlab.nn.models import build, preset as build_preset
from normlab.train import checkpoint
from normlab.experiments.config import StudyConfig
from normlab.train.loop import make_optimizer
from normlab.train.state import create

FUZZ_EXAMPLES = int(os.environ.get("NORMLAB_FUZZ_EXAMPLES", "1000"))
CONFIG = {"preset": "bn-after", "learning_rate": 0.001}
MAX = 64 << 20
SEEDS = [0, 1]
HISTORY = {"loss": [[1.0, float("nan")]], "accuracy": [[0.5, 0.5]], "val_loss": [[1.0, 2.0]], "val_accuracy": [[0.5, 0.5]]}


def fresh_state(seed=0, model=None):
    model = model or build_preset("bn-after")
    return jax.vmap(lambda s: create(model, make_optimizer(StudyConfig().train_config()), s))(
        np.arange(seed, seed + 2, dtype=np.uint32))


def leaves_bytes(tree):
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x).tobytes()
            for x in jax.tree.leaves(tree)]


def save(directory, epoch, state=None, config=CONFIG, keep=2):
    history = {k: v * epoch for k, v in HISTORY.items()}
    return checkpoint.save(directory, epoch, state if state is not None else fresh_state(),
                           {"config": config, "seeds": SEEDS, "history": history, "train_s": 1.5}, keep)


def latest(directory, config=CONFIG, warn=print):
    return checkpoint.latest(directory, config, MAX, warn, SEEDS)


def test_round_trip_is_bitwise_exact(tmp_path):
    state = fresh_state(seed=7)
    path = save(tmp_path, 3, state)
    arrays, record = checkpoint.read(path, MAX)
    restored = checkpoint.restore(arrays, fresh_state(seed=0))
    assert leaves_bytes(restored) == leaves_bytes(state)
    assert record["epoch"] == 3 and record["config"] == CONFIG and np.isnan(record["history"]["loss"][0][1])


def test_a_residual_net_round_trips_bitwise(tmp_path):
    """A graph's params and state are dicts by layer name, as a chain's: a block's layers and its add among them."""
    model = resnet()
    state = fresh_state(seed=7, model=model)
    arrays, _ = checkpoint.read(save(tmp_path, 1, state), MAX)
    assert ".model_state['batch_normalization_5']['moving_variance']" in arrays  # the projection's BN
    assert leaves_bytes(checkpoint.restore(arrays, fresh_state(seed=0, model=model))) == leaves_bytes(state)


def test_keeps_only_the_last_k(tmp_path):
    for epoch in range(1, 6):
        save(tmp_path, epoch, keep=2)
    assert [e for e, _ in checkpoint.checkpoints(tmp_path)] == [4, 5]


@pytest.mark.parametrize("damage", ["truncate", "flip_array_byte", "flip_metadata_byte", "empty"])
def test_damaged_newest_is_skipped_for_the_previous(tmp_path, damage):
    save(tmp_path, 1)
    newest = save(tmp_path, 2)
    blob = bytearray(newest.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip_array_byte":
        blob[-10] ^= 0x01
    elif damage == "flip_metadata_byte":
        blob[blob.index(b'train_s') + 11] ^= 0x01  # the 1 of train_s: 1.5, inside the escaped JSON record
    else:
        blob = b""
    newest.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError):
        checkpoint.read(newest, MAX)
    warnings = []
    arrays, record = latest(tmp_path, CONFIG, warnings.append)
    assert record["epoch"] == 1 and len(warnings) == 1 and "epoch-0002" in warnings[0]


def test_other_config_or_version_is_refused(tmp_path, monkeypatch):
    save(tmp_path, 1)
    with pytest.raises(CheckpointError, match="learning_rate differ"):
        latest(tmp_path, {**CONFIG, "learning_rate": 0.01})
    monkeypatch.setattr(checkpoint, "__version__", "99.0")
    with pytest.raises(CheckpointError, match="written by normlab"):
        latest(tmp_path, CONFIG)


def test_restore_refuses_another_model(tmp_path):
    arrays, _ = checkpoint.read(save(tmp_path, 1), MAX)
    baseline = create(build_preset("baseline"), make_optimizer(StudyConfig().train_config()), 0)
    with pytest.raises(CheckpointError, match="do not match"):
        checkpoint.restore(arrays, baseline)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code):
    good = save(tmp_path, 1)
    before = good.read_bytes()

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(CheckpointError, match=os.strerror(code)) as caught:
        save(tmp_path, 2)
    assert "intact" in str(caught.value) and "\n" not in str(caught.value)
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no temp file, no partial epoch 2


def test_failed_results_write_keeps_the_previous_results(tmp_path, monkeypatch):
    path = write_results({"runs": [1]}, tmp_path / "results.json")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_results({"runs": [2]}, path)
    assert path.read_text() == '{\n "runs": [\n  1\n ]\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_damaged_checkpoint_is_not_one_of_the_kept(tmp_path):
    for epoch in (1, 2, 3):
        save(tmp_path, epoch)
    third = tmp_path / "epoch-0003.safetensors"
    blob = bytearray(third.read_bytes())
    blob[-10] ^= 0x01  # bit rot while training goes on
    third.write_bytes(bytes(blob))
    save(tmp_path, 4)
    assert [e for e, _ in checkpoint.checkpoints(tmp_path)] == [2, 4]
    for _, path in checkpoint.checkpoints(tmp_path):
        checkpoint.read(path, MAX)


def write_with_valid_digest(path, arrays, record):
    """A checkpoint whose digest matches whatever record it carries: what a crafted or buggy writer makes."""
    metadata = {"normlab": json.dumps(record), "sha256": checkpoint._digest(arrays, record)}
    path.write_bytes(safetensors.numpy.save(arrays, metadata=metadata))


@pytest.mark.parametrize("field,value", [
    ("config", [1, 2]), ("config", None), ("history", None), ("history", {"loss": []}),
    ("history", {**HISTORY, "loss": [["1.0", 2.0]]}), ("history", {**HISTORY, "loss": [[1.0]]}),
    ("history", {**HISTORY, "loss": [[1.0, 2.0]] * 2}), ("epoch", "2"), ("epoch", -1), ("epoch", 0), ("epoch", 7),
    ("epoch", True), ("seeds", [5, 6]), ("seeds", "01"), ("train_s", "x"), ("train_s", float("inf")),
    ("train_s", -1.0), ("format", "1"),
])
def test_a_valid_digest_over_a_malformed_record_is_damage(tmp_path, field, value):
    save(tmp_path, 1)
    good_arrays, good_record = checkpoint.read(save(tmp_path, 2), MAX)
    path = tmp_path / "epoch-0002.safetensors"
    record = {**good_record, field: value, "config": CONFIG if field != "config" else value}
    write_with_valid_digest(path, good_arrays, record)
    warnings = []
    try:
        found = latest(tmp_path, CONFIG, warnings.append)
    except CheckpointError as error:  # another format or normlab version: refused outright, as designed
        assert field == "format" and "written by normlab" in str(error)
        return
    assert found[1]["epoch"] == 1 and len(warnings) == 1 and "epoch-0002" in warnings[0], warnings


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_a_checkpoint_that_is_not_a_regular_file_is_skipped_at_once(tmp_path, kind):
    save(tmp_path, 1)
    path = tmp_path / "epoch-0002.safetensors"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever
    elif kind == "dev_zero":
        path.symlink_to("/dev/zero")  # reading it would never end
    else:
        path.mkdir()
    warnings = []
    assert latest(tmp_path, CONFIG, warnings.append)[1]["epoch"] == 1
    assert len(warnings) == 1 and "not a regular file" in warnings[0]


# What the fuzzing damages: a checkpoint of the same kinds of arrays as bn-after's (dense and BN weights, BN moving
# statistics, PRNG key data, two seeds) but 90 KB instead of 2.2 MB, so that a random byte change or cut lands in
# the header and its JSON record often, not once in a thousand, and an example costs little I/O and hashing.
FUZZ_MODEL = build("fuzz-bn", [{"kind": "flatten"}, {"kind": "batch_norm"},
                               {"kind": "dense", "units": 10, "activation": "softmax"}])


@pytest.fixture(scope="module")
def valid_blob(tmp_path_factory):
    return save(tmp_path_factory.mktemp("ckpt"), 1, fresh_state(model=FUZZ_MODEL)).read_bytes()


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_loader_raises_only_checkpoint_errors(tmp_path, valid_blob, data):
    kind = data.draw(st.sampled_from(["random", "truncate", "mutate", "splice"]))
    blob = bytearray(valid_blob)
    if kind == "random":
        blob = bytearray(data.draw(st.binary(max_size=2048)))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "mutate":
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    else:
        blob[: 8] = data.draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little")
    path = tmp_path / "epoch-0001.safetensors"
    path.write_bytes(bytes(blob))
    try:
        arrays, record = checkpoint.read(path, MAX)
    except CheckpointError:
        return
    # Accepted means: the very content that was saved (a changed byte may only have been JSON white space).
    good_arrays, good_record = safetensors.numpy.load(valid_blob), json.loads(
        json.loads(valid_blob[8:8 + int.from_bytes(valid_blob[:8], "little")])["__metadata__"]["normlab"])
    assert json.dumps(record, sort_keys=True) == json.dumps(good_record, sort_keys=True)
    assert sorted(arrays) == sorted(good_arrays)
    assert all(arrays[k].tobytes() == good_arrays[k].tobytes() for k in arrays)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES // 4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_records_with_valid_digests_are_used_or_skipped(tmp_path, valid_blob, data):
    """Past the digest: every record a crafted file can carry is resumed from only if it is well formed."""
    arrays = safetensors.numpy.load(valid_blob)
    good = json.loads(json.loads(valid_blob[8:8 + int.from_bytes(valid_blob[:8], "little")])["__metadata__"]["normlab"])
    if data.draw(st.booleans()):
        record = {**good, data.draw(st.sampled_from(sorted(good))): data.draw(JSON)}
    else:
        record = data.draw(JSON)
    for stale in tmp_path.glob("epoch-*"):
        stale.unlink()
    write_with_valid_digest(tmp_path / "epoch-0001.safetensors", arrays, record)
    try:
        found = latest(tmp_path, CONFIG, warn=lambda text: None)
    except CheckpointError:
        return  # another format or version: refused outright
    if found is not None:
        _, used = found
        assert used == record and checkpoint.record_problem(used, SEEDS) is None and used["epoch"] == 1
        checkpoint.restore(found[0], fresh_state(model=FUZZ_MODEL))
