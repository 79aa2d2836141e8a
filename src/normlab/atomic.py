"""All-or-nothing file writes: temp file in the same folder, fsync, rename over the target, fsync the folder.

A crash or a full disk at any instant leaves either the old file or the new one, never a torn one.
"""

import os
import time
from pathlib import Path

# Fault injection for the crash tests: a pause between the fsynced temp file and the rename, which widens the
# window in which a SIGKILL lands mid-write. Zero (off) unless the environment sets it.
FAULT_DELAY_S = float(os.environ.get("NORMLAB_FAULT_WRITE_DELAY_S", "0"))


def write_atomically(path: Path, blob: bytes) -> None:
    """Replace ``path`` with ``blob``; on any OSError the temp file is removed and the old ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if FAULT_DELAY_S:
            time.sleep(FAULT_DELAY_S)
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
