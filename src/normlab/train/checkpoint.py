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
from normlab.atomic import write_atomically
from normlab.errors import CheckpointError

FORMAT = 1
NAME = re.compile(r"epoch-(\d{4,})\.safetensors")


def _is_key(leaf) -> bool:
    """A typed PRNG key: stored as its raw uint32 key data, rewrapped on restore."""
    return jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
            for path, leaf in leaves}


def _digest(arrays: dict[str, np.ndarray], record: dict) -> str:
    h = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(directory: Path, epoch: int, state, record: dict, keep: int = 2) -> Path:
    """Write the state after ``epoch`` finished epochs; SIGINT/SIGTERM wait until the write is complete."""
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
        for stale in directory.glob(".epoch-*.tmp"):  # left by a process killed mid-write
            stale.unlink(missing_ok=True)
        try:
            write_atomically(path, blob)
        except OSError as error:
            raise CheckpointError(f"could not write checkpoint {path}: {error.strerror or error}; "
                                  f"the previous checkpoints in {directory} are intact") from error
        for old in sorted(checkpoints(directory), reverse=True)[keep:]:
            old[1].unlink(missing_ok=True)
    return path


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint file in ``directory``, oldest first."""
    if not Path(directory).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := NAME.fullmatch(p.name))]
    return sorted(found)


def read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and record of one checkpoint, verified; any damage is a CheckpointError."""
    try:
        blob = Path(path).read_bytes()
        header_size = int.from_bytes(blob[:8], "little")
        if len(blob) < 8 or header_size > len(blob) - 8:
            raise ValueError("truncated header")
        metadata = json.loads(blob[8:8 + header_size])["__metadata__"]
        record, digest = json.loads(metadata["normlab"]), metadata["sha256"]
        arrays = safetensors.numpy.load(blob)
    except OSError as error:
        raise CheckpointError(f"{path}: unreadable ({error.strerror})") from error
    except Exception as error:  # the Rust parser raises its own type; any failure here means a damaged file
        raise CheckpointError(f"{path}: not a valid checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(record, dict) or not isinstance(digest, str) or _digest(arrays, record) != digest:
        raise CheckpointError(f"{path}: checksum mismatch, the file is damaged")
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
        restored.append(jax.random.wrap_key_data(value, impl=jax.random.key_impl(leaf)) if _is_key(leaf)
                        else jax.numpy.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, restored)


def latest(directory: Path, config: dict, warn=print):
    """The newest checkpoint that reads back intact and matches ``config``: (arrays, record) or None.

    Damaged files are reported through ``warn`` and skipped; a checkpoint of another configuration or
    normlab version is refused outright, since continuing it would silently mix two experiments.
    """
    for epoch, path in reversed(checkpoints(directory)):
        try:
            arrays, record = read(path)
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
                                  f"differ); resume with the same options or use a new --out")
        return arrays, record
    return None
