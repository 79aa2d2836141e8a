"""Content digests normlab recorded itself, for data whose publisher gives only the archive's SHA-256.

MNIST's and KMNIST's publishers list the SHA-256 of each ``.gz``, not of what it expands to; a copy recompressed
or unpacked by hand could not be checked against them. So a download whose archive matched records the SHA-256 of
the decompressed content in ``sha256.json`` beside it, with the archive digest it was checked against; later loads
verify against that record. A folder without a record (a copy made elsewhere) loads, unverified.
"""

import json
import re
from pathlib import Path

from normlab.errors import DataError
from normlab.files import FileProblem, read_json, write_text

NAME = "sha256.json"
MAX_BYTES = 64 << 10
HEX = re.compile(r"[0-9a-f]{64}")


def recorded(folder: Path) -> dict[str, dict[str, str]]:
    """``{file: {"sha256": content digest, "archive_sha256": the published archive digest}}``, or ``{}``."""
    path = folder / NAME
    if not path.exists() and not path.is_symlink():
        return {}
    fix = "delete it (the data then load unverified) or download the data afresh"
    try:
        record = read_json(path, MAX_BYTES)
    except FileProblem as error:
        raise DataError(f"{error}; {fix}") from None
    if not isinstance(record, dict) or not all(
            isinstance(e, dict) and set(e) == {"sha256", "archive_sha256"}
            and all(isinstance(v, str) and HEX.fullmatch(v) for v in e.values()) for e in record.values()):
        raise DataError(f"{path}: not a record of SHA-256 digests; {fix}")
    return record


def record(folder: Path, name: str, sha256: str, archive_sha256: str) -> None:
    """Add (or replace) ``name``'s entry, atomically."""
    entries = {**recorded(folder), name: {"sha256": sha256, "archive_sha256": archive_sha256}}
    write_text(folder / NAME, json.dumps(entries, indent=1, sort_keys=True) + "\n")
