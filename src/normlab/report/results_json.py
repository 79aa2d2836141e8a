"""``results.json``: the machine-readable record of a study; other tools read its key names."""

import json
import os
from pathlib import Path


def write_results(results: dict, path: Path) -> Path:
    """Write atomically (temp file, fsync, rename) so a crash never leaves a half-written results.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
