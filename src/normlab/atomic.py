"""All-or-nothing file writes: temp file in the same folder, fsync, rename over the target, fsync the folder.

A crash or a full disk at any instant leaves either the old file or the new one, never a torn one.
"""

import os
import time
from pathlib import Path

from normlab.testpoints import write_delay_s


def write_atomically(path: Path, blob: bytes) -> None:
    """Replace ``path`` with ``blob``; on any OSError the temp file is removed and the old ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if delay := write_delay_s():  # crash tests only: widens the window a SIGKILL can land in
            time.sleep(delay)
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
