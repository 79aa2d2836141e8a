"""``HOST:PORT`` as the user writes it on the command line (``--coordinator``, ``--address``)."""

import re

PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit also takes "١٢٣٤" and "²", which no socket takes


def host_port(text: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` (an IPv6 host in brackets), the port 1..65535; None if it is not that."""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if not host or not PORT.fullmatch(port) or not 0 < int(port) < 65536:
        return None
    return host, int(port)
