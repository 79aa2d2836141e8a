"""Fetching a built-in dataset's file from its publisher: bounded, timed out, interruptible, checked before kept.

Every built-in downloads through ``fetch``: it stops one byte past the size the file can have (a wrong URL that
serves a disk image costs no memory), gives up when the server says nothing for ``timeout()`` seconds (connect
and each read; a stalled mirror would otherwise hang a run forever), and answers Ctrl-C at once. The caller gets
the bytes only once their SHA-256 is the published one, and writes them (atomically) only after its own checks
of the content, so a failed download leaves nothing behind.
"""

import hashlib
import http.client
import math
import os
import urllib.error
import urllib.request

from normlab import signals
from normlab.errors import ConfigError, DataError, shown
from normlab.files import one_line

TIMEOUT_S = 60
TIMEOUT_ENV = "NORMLAB_DATA_TIMEOUT"
CHUNK = 1 << 20


def timeout() -> float:
    """Seconds to wait for a silent server: ``$NORMLAB_DATA_TIMEOUT`` if set (tests make it 1), else 60."""
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= 86400:
        raise ConfigError(f"${TIMEOUT_ENV} must be a number of seconds in (0, 86400], got {shown(text)}")
    return seconds


def _why(error: BaseException, seconds: float) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) and not isinstance(
        error, urllib.error.HTTPError) else error
    if isinstance(reason, TimeoutError):
        return f"no answer within {seconds:g} s (${TIMEOUT_ENV} sets how long to wait)"
    return one_line(str(reason) or type(reason).__name__)


def fetch(url: str, max_bytes: int, sha256: str, title: str, elsewhere: str) -> bytes:
    """The body at ``url``: at most ``max_bytes`` long, all of it (its Content-Length), SHA-256 ``sha256``.

    Any failure is one ``DataError`` naming the URL; ``elsewhere`` says how to get the data without a download.
    """
    seconds, failed = timeout(), f"downloading {title} failed: {url}"
    chunks, size, declared = [], 0, None
    try:
        with signals.interruptible(), urllib.request.urlopen(url, timeout=seconds) as response:
            length = response.headers.get("Content-Length", "")
            declared = int(length) if length.isdecimal() else None
            if declared is not None and declared > max_bytes:
                raise DataError(f"{failed}: {declared:,} bytes, more than the {max_bytes:,} expected; {elsewhere}")
            while size <= max_bytes and (chunk := response.read(min(CHUNK, max_bytes + 1 - size))):
                chunks.append(chunk)
                size += len(chunk)
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise DataError(f"{failed}: {_why(error, seconds)}; {elsewhere}") from error
    if size > max_bytes:
        raise DataError(f"{failed}: more than the {max_bytes:,} bytes expected; {elsewhere}")
    if declared is not None and size != declared:
        raise DataError(f"{failed}: the connection closed after {size:,} of {declared:,} bytes; "
                        f"retry later or {elsewhere}")
    body = b"".join(chunks)
    got = hashlib.sha256(body).hexdigest()
    if got != sha256:
        raise DataError(f"{url}: SHA-256 {got[:12]}… differs from the expected {sha256[:12]}…; the download is not "
                        f"the published file; retry later or {elsewhere}")
    return body
