"""What ``normlab export`` may replace: nothing yet, or a model file an earlier export wrote. Never a user's file, a
FIFO or a device, nor a run folder's own files (its results.json, its checkpoints): only its ``export/`` folder.

The export replaces its target whole (``normlab.atomic``), and normlab is often run as root: unchecked, ``--out``
would replace a user's notes.txt, ``/dev/null``, or the results.json and the only checkpoint of the run it exports.
What normlab wrote is told by content, whatever the suffix: a safetensors header whose ``format`` is normlab's, an
ONNX model whose producer is normlab, a zip (.keras) whose comment is normlab's mark. A symbolic link is refused
whatever it points at: the rename would replace the link, not the file it names, and a link in a shared folder may
have been planted there.
"""

import json
import os
import re
import stat
from pathlib import Path

from normlab import rundir
from normlab.errors import ConfigError
from normlab.files import FileProblem, one_line, open_regular
from normlab.interop.keras_io import MARKER
from normlab.interop.onnx_export import PRODUCER
from normlab.interop.safetensors_io import FORMAT
from normlab.interop.weights import MAX_FILE_BYTES

HEAD_BYTES = 1 << 20  # a normlab safetensors header (the model's spec, the arrays' index) takes a few KiB
# An ONNX ModelProto starts with its fields in number order: ir_version (1, a varint), producer_name (2, text).
ONNX_HEAD = re.compile(rb"\x08[\x80-\xff]{0,9}[\x00-\x7f]\x12" + bytes([len(PRODUCER)]) + re.escape(PRODUCER.encode()))
# A zip ends in its end-of-central-directory record: signature, 16 bytes, the comment's length, the comment.
KERAS_TAIL = re.compile(rb"PK\x05\x06.{16}" + re.escape(len(MARKER).to_bytes(2, "little") + MARKER), re.DOTALL)
TAIL_BYTES = 22 + len(MARKER)
KINDS = {stat.S_IFDIR: "a folder", stat.S_IFLNK: "a symbolic link", stat.S_IFIFO: "a FIFO",
         stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def check(out: Path, where: str) -> None:
    """A one-line ConfigError, starting with ``where`` (how the caller names ``out``), unless the export may write
    ``out``: checked before any work is done."""
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise ConfigError(f"{where} cannot be written ({error.strerror})") from None
    if mode is not None and not stat.S_ISREG(mode):
        raise ConfigError(f"{where} is {KINDS.get(stat.S_IFMT(mode), 'not a regular file')}; give the path of the "
                          f"model file to write")
    if mode is not None and not written_by_normlab(out):
        raise ConfigError(f"{where} exists and is not a model file normlab exported; normlab does not overwrite it: "
                          f"remove it or choose another file")
    folder = out.parent.resolve()
    run = rundir.enclosing(folder)
    if run is not None and not folder.is_relative_to(run / "export"):
        raise ConfigError(f"{where} is in the run folder {one_line(run)}, whose files are the run's; its exports go "
                          f"in {one_line(run / 'export')}")


def written_by_normlab(path: Path) -> bool:
    """Whether the regular file ``path`` is a model file normlab exported, in any of its formats."""
    try:
        with open_regular(path, MAX_FILE_BYTES) as f:
            head = f.read(HEAD_BYTES)
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            tail = f.read()
    except (FileProblem, OSError):
        return False
    return _safetensors(head) or bool(ONNX_HEAD.match(head)) or bool(KERAS_TAIL.fullmatch(tail))


def _safetensors(head: bytes) -> bool:
    size = int.from_bytes(head[:8], "little")
    try:
        metadata = json.loads(head[8:8 + size]).get("__metadata__") if 8 + size <= len(head) else None
    except (ValueError, AttributeError, RecursionError):  # not JSON, JSON but not an object, nested too deep
        return False
    return isinstance(metadata, dict) and metadata.get("format") == FORMAT
