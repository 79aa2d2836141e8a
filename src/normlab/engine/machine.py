"""What CPU this is, as tuning keys and provenance name it (read from /proc/cpuinfo, no JAX needed)."""

import contextlib
import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "asimd", "sve")


def _cpuinfo() -> list[str]:
    with contextlib.suppress(OSError):
        return Path("/proc/cpuinfo").read_text().splitlines()
    return []


def cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def instruction_sets() -> list[str]:
    """The instruction sets among ``ISA_FLAGS`` the CPU has: what changes which engine settings are fastest."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return [flag for flag in ISA_FLAGS if flag in line.split(":", 1)[1].split()]
    return []
