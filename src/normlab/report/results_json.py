"""``results.json``: the machine-readable record of a study; other tools read its key names."""

import json
from pathlib import Path

from normlab.atomic import write_atomically


def write_results(results: dict, path: Path) -> Path:
    """Written atomically, so a crash or a full disk never leaves a half-written results.json."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(results, indent=1, allow_nan=False).encode())
    return path
