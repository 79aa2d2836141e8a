"""Crash-safe checkpoints: one safetensors file per finished epoch (plain arrays and JSON, no executable formats).

The file holds every array of the training state (params, BN state, optimizer state, RNG key data) and, in
its header metadata, a JSON record (epoch, history, config, versions) plus a SHA-256 over both, so a torn or
bit-flipped file is detected and skipped in favour of the previous one. Writes are atomic (``normlab.atomic``)
and hold back SIGINT/SIGTERM until done. The last ``keep`` checkpoints are kept.
"""

import hashlib
import json
import re
from pathlib import Path

import jax
import numpy as np
import safetensors.numpy

from normlab import __version__, signals
from normlab.atomic import remove_leftovers, write_atomically
from normlab.errors import CheckpointError
from normlab.files import FileProblem, read_bytes

FORMAT = 1
NAME = re.compile(r"epoch-(\d{4,9})\.safetensors")
HEADER_BYTES = 64 << 20  # the JSON header (record, history) is far smaller; more means a crafted file


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
        else:
            path.unlink(missing_ok=True)


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


def read(path: Path, max_bytes: int) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and record of one checkpoint, verified; any damage is a CheckpointError.

    Only a regular file of at most ``max_bytes`` is read (a FIFO or a link to /dev/zero named like a checkpoint
    is damage too), and the record must have the shape ``save`` gives it: a valid digest over a record that
    ``save`` cannot have written (a crafted file) is no better than a torn one.
    """
    try:
        blob = read_bytes(path, max_bytes)
        header_size = int.from_bytes(blob[:8], "little")
        if len(blob) < 8 or header_size > len(blob) - 8:
            raise ValueError("truncated header")
        metadata = json.loads(blob[8:8 + header_size])["__metadata__"]
        record, digest = json.loads(metadata["normlab"]), metadata["sha256"]
        arrays = safetensors.numpy.load(blob)
        intact = isinstance(record, dict) and isinstance(digest, str) and _digest(arrays, record) == digest
    except FileProblem as error:
        raise CheckpointError(str(error)) from None
    except Exception as error:  # the Rust parser raises its own type; any failure here means a damaged file
        raise CheckpointError(f"{path}: not a valid checkpoint ({type(error).__name__}: {error})") from error
    if not intact:
        raise CheckpointError(f"{path}: checksum mismatch, the file is damaged")
    epoch = NAME.fullmatch(Path(path).name)
    if not (isinstance(record.get("epoch"), int) and not isinstance(record["epoch"], bool)
            and (epoch is None or record["epoch"] == int(epoch.group(1))) and record["epoch"] >= 1
            and isinstance(record.get("config"), dict)):
        raise CheckpointError(f"{path}: malformed record (epoch or config), not a checkpoint normlab wrote")
    return arrays, record


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


def latest(directory: Path, config: dict, max_bytes: int, warn=print, problem=lambda record: None):
    """The newest checkpoint that reads back intact and matches ``config``: (arrays, record) or None.

    Damaged files — unreadable, or whose record ``problem(record)`` finds fault with — are reported through
    ``warn`` and skipped; a checkpoint of another configuration or normlab version is refused outright, since
    continuing it would silently mix two experiments.
    """
    for epoch, path in reversed(checkpoints(directory)):
        signals.safe_point("checkpoint-read")
        try:
            arrays, record = read(path, max_bytes)
            if (fault := problem(record)) is not None:
                raise CheckpointError(f"{path}: malformed record ({fault}), not a checkpoint normlab wrote")
        except CheckpointError as error:
            warn(f"skipping damaged checkpoint: {error}")
            continue
        if record.get("format") != FORMAT or record.get("normlab") != __version__:
            raise CheckpointError(f"{path} was written by normlab {record.get('normlab')} (format "
                                  f"{record.get('format')}); this is {__version__} (format {FORMAT}): "
                                  f"start a new run directory")
        if record.get("config") != config:
            differing = sorted(k for k in set(config) | set(record.get("config", {}))
                               if config.get(k) != record.get("config", {}).get(k))
            raise CheckpointError(f"{path} belongs to a different configuration ({', '.join(differing)} "
                                  f"differ); resume with the same settings or start a new run folder")
        return arrays, record
    return None
