"""Crash-safe checkpoints: one safetensors file per finished epoch (plain arrays and JSON, no executable formats).

The file holds every array of the training state (params, BN state, optimizer state, RNG key data) and, in
its header metadata, a JSON record (epoch, history, config, versions) plus a SHA-256 over both, so a torn or
bit-flipped file is detected and skipped in favour of the previous one. Writes are atomic (``normlab.atomic``)
and hold back SIGINT/SIGTERM until done. The last ``keep`` checkpoints are kept.

Anything else found under a checkpoint's name (a folder, a FIFO, a socket, a link to one) was not written here: it is
reported and skipped when read, replaced when its name is written (a rename takes any name but a folder's), and
removed by the rotation unless it is a folder, which normlab never deletes; a folder where a coming epoch's file
must go is refused before training starts (``check_room``), not found after an epoch's work.
"""

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import jax
import numpy as np
import safetensors.numpy

from normlab import __version__, signals
from normlab.atomic import remove_leftovers, write_atomically
from normlab.errors import CheckpointError, shown
from normlab.files import FileProblem, one_line, parse_json, read_bytes

FORMAT = 1
NAME = re.compile(r"epoch-(\d{4,9})\.safetensors")
HEADER_BYTES = 64 << 20  # the JSON header (record, history) is far smaller; more means a crafted file
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")  # a record's history: ``fit``'s metrics of each epoch
SEED_LIMIT = 2**32  # seeds are uint32 PRNG seeds (``state.create``)


def is_key(leaf) -> bool:
    """A typed PRNG key: stored as its raw uint32 key data, rewrapped on restore."""
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(jax.random.key_data(leaf) if is_key(leaf) else leaf)
            for path, leaf in leaves}


def _digest(arrays: dict[str, np.ndarray], record: dict) -> str:
    h = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def digest(tree) -> str:
    """The SHA-256 of a pytree's arrays (names, dtypes, shapes and bytes): what names the weights a run started
    from in its checkpoints (``experiments.reproduce.start``)."""
    return _digest(_flatten(tree), {})


def max_size(state) -> int:
    """The largest file a checkpoint of ``state`` can be: its arrays plus a generous header."""
    return sum(a.nbytes for a in _flatten(state).values()) + HEADER_BYTES


def save(directory: Path, epoch: int, state, record: dict, keep: int = 2) -> Path:
    """Write the state after ``epoch`` finished epochs; SIGINT/SIGTERM wait until the write is complete.

    Afterwards only the newest ``keep`` checkpoints that read back intact remain: a damaged file is never one
    of the kept, so ``keep`` good ones are always on disk.
    """
    directory = Path(directory)
    arrays = _flatten(state)
    record = {**record, "format": FORMAT, "normlab": __version__, "epoch": epoch}
    blob = safetensors.numpy.save(arrays, metadata={"normlab": json.dumps(record),
                                                    "sha256": _digest(arrays, record)})
    path = directory / f"epoch-{epoch:04d}.safetensors"
    with signals.held():
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CheckpointError(f"cannot create checkpoint folder {directory}: {error.strerror}") from error
        signals.safe_point("checkpoint-write")
        remove_leftovers(directory, NAME)  # left by a process killed mid-write
        try:
            write_atomically(path, blob)
        except OSError as error:
            raise CheckpointError(f"could not write checkpoint {path}: {error.strerror or error}; "
                                  f"the previous checkpoints in {directory} are intact") from error
        _prune(directory, path, keep, max_bytes=len(blob) + HEADER_BYTES)
    return path


def _prune(directory: Path, newest: Path, keep: int, max_bytes: int) -> None:
    """Keep ``newest`` and the next ``keep - 1`` intact checkpoints before it; remove the rest."""
    kept = 1
    for _, path in sorted(checkpoints(directory), reverse=True):
        if path == newest:
            continue
        if kept < keep and _intact(path, max_bytes):
            kept += 1
        elif not _is_folder(path):
            path.unlink(missing_ok=True)


def _is_folder(path: Path) -> bool:
    """A folder itself, not a link to one: what ``unlink`` and a rename cannot replace."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def check_room(directory: Path, epochs: range) -> None:
    """A CheckpointError, before any training, if a folder takes the name that the checkpoint of one of ``epochs``
    will be written under: the write would fail after that epoch's work. (Its temp file's name is random.)"""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return  # ``save`` creates the folder, or says why it cannot
    except OSError as error:
        raise CheckpointError(f"cannot list checkpoint folder {one_line(directory)}: {error.strerror}") from None
    for entry in entries:
        if (match := NAME.fullmatch(entry.name)) and \
                int(match.group(1)) in epochs and entry.is_dir(follow_symlinks=False):
            raise CheckpointError(f"{one_line(entry.path)} is a folder where the checkpoint of epoch "
                                  f"{int(match.group(1))} must be written; move it out of the way and resume")


def _intact(path: Path, max_bytes: int) -> bool:
    try:
        read(path, max_bytes)
        return True
    except CheckpointError:
        return False


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint file in ``directory``, oldest first."""
    if not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := NAME.fullmatch(p.name))]
    return sorted(found)


def read(path: Path, max_bytes: int, seeds: list[int] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and record of one checkpoint, verified; any damage is a CheckpointError.

    Only a regular file of at most ``max_bytes`` is read (a FIFO or a link to /dev/zero named like a checkpoint
    is damage too), and the record must have the shape ``save`` gives it, with ``seeds`` if given
    (``record_problem``): a valid digest over a record that ``save`` cannot have written (a crafted file) is no
    better than a torn one.
    """
    where = one_line(path)
    try:
        blob = read_bytes(path, max_bytes)
        header_size = int.from_bytes(blob[:8], "little")
        if len(blob) < 8 or header_size > len(blob) - 8:
            raise ValueError("truncated header")
        metadata = parse_json(blob[8:8 + header_size], f"{where}: its header")["__metadata__"]
        record = parse_json(metadata["normlab"], f"{where}: its record", allow_nan=True)  # a diverged seed's history
        digest = metadata["sha256"]
        arrays = safetensors.numpy.load(blob)
        intact = isinstance(record, dict) and isinstance(digest, str) and _digest(arrays, record) == digest
    except FileProblem as error:
        raise CheckpointError(str(error)) from None
    except Exception as error:  # the Rust parser raises its own type; any failure here means a damaged file
        raise CheckpointError(f"{where}: not a valid checkpoint ({type(error).__name__}: {error})") from error
    if not intact:
        raise CheckpointError(f"{where}: checksum mismatch, the file is damaged")
    epoch = NAME.fullmatch(Path(path).name)
    fault = record_problem(record, seeds) or (
        f"epoch {record['epoch']} in a file named {epoch.group(0)}"
        if epoch is not None and record["epoch"] != int(epoch.group(1)) else None)
    if fault is not None:
        raise CheckpointError(f"{where}: malformed record ({fault}), not a checkpoint normlab wrote")
    return arrays, record


def record_problem(record: dict, seeds: list[int] | None = None) -> str | None:
    """What is wrong with a checkpoint record that ``fit`` did not write, or None; ``seeds``: those it must hold.

    Every reader of a checkpoint relies on this shape (``read`` checks it): the digest is a SHA-256 that anyone can
    compute over a crafted record.
    """
    epochs, held = record.get("epoch"), record.get("seeds")
    history, train_s = record.get("history"), record.get("train_s")
    if not (type(epochs) is int and epochs >= 1):
        return f"epoch {shown(epochs)} is not an epoch number"
    if not isinstance(record.get("config"), dict):
        return "config is not an object"
    if not (isinstance(held, list) and held and all(type(s) is int and 0 <= s < SEED_LIMIT for s in held)
            and len(set(held)) == len(held)):
        return f"seeds {shown(held)} are not distinct uint32 seeds"
    if seeds is not None and held != list(seeds):
        return f"seeds {shown(held)}, expected {list(seeds)}"
    if not isinstance(history, dict) or set(history) != set(METRICS):
        return f"history needs exactly {', '.join(METRICS)}"
    for key, per_epoch in history.items():
        if not (isinstance(per_epoch, list) and len(per_epoch) == epochs and all(
                isinstance(row, list) and len(row) == len(held)
                and all(type(v) is float for v in row) for row in per_epoch)):
            return f"history.{key} is not {epochs} epochs x {len(held)} seeds of floats"
    if not (type(train_s) is float and 0 <= train_s < float("inf")):
        return f"train_s {shown(train_s)} is not a duration"
    return None


def restore(arrays: dict[str, np.ndarray], like):
    """Rebuild a state shaped like ``like`` (a freshly created state) from ``read``'s arrays."""
    expected = _flatten(like)
    if set(arrays) != set(expected) or any(arrays[k].shape != v.shape or arrays[k].dtype != v.dtype
                                           for k, v in expected.items()):
        raise CheckpointError("checkpoint arrays do not match this model and optimizer")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    restored = []
    for path, leaf in leaves:
        value = arrays[jax.tree_util.keystr(path)]
        restored.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)) if is_key(leaf)
                        else jax.numpy.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, restored)


def latest(directory: Path, config: dict, max_bytes: int, warn=print, seeds: list[int] | None = None,
           unchecked=()):
    """The newest checkpoint that reads back intact and matches ``config`` (but for its ``unchecked`` keys, which
    the checkpoint decides): (arrays, record) or None.

    Damaged files — unreadable, or whose record is malformed or holds other ``seeds`` than those given
    (``record_problem``) — are reported through ``warn`` and skipped; a checkpoint of another configuration or
    normlab version is refused outright, since continuing it would silently mix two experiments.
    """
    for epoch, path in reversed(checkpoints(directory)):
        signals.safe_point("checkpoint-read")
        try:
            arrays, record = read(path, max_bytes, seeds)
        except CheckpointError as error:
            warn(f"skipping damaged checkpoint: {error}")
            continue
        if record.get("format") != FORMAT or record.get("normlab") != __version__:
            raise CheckpointError(f"{one_line(path)} was written by normlab {shown(record.get('normlab'))} (format "
                                  f"{shown(record.get('format'))}); this is {__version__} (format {FORMAT}): "
                                  f"start a new run directory")
        if names := differing(config, record["config"], unchecked):
            raise CheckpointError(other_configuration(path, names))
        return arrays, record
    return None


def differing(expected: dict, found: dict, unchecked=()) -> list[str]:
    """The settings in which ``found`` (a saved record's) differs from ``expected``, but for the ``unchecked`` keys;
    a nested table's are named by their own keys (``every``, not ``diagnose``), as the user gives them."""
    expected, found = json.loads(json.dumps(expected)), json.loads(json.dumps(found))  # tuples are lists in a file
    names = set()
    for key in (set(expected) | set(found)) - set(unchecked):
        mine, theirs = expected.get(key), found.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            names.update(differing(mine, theirs))
        elif mine != theirs:
            names.add(key)
    return sorted(names)


def other_configuration(path: Path, names: list[str]) -> str:
    """Why ``path``, saved with settings that differ in ``names``, cannot be resumed: one wording for every refused
    resume (a checkpoint, a diagnosed preset)."""
    return (f"{one_line(path)} belongs to a different configuration ({one_line(', '.join(names))} differ); resume "
            f"with the same settings or start a new run folder")
