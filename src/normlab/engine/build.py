"""Compile ``gemm.cc`` into a shared library against the XLA FFI headers of the jaxlib that will load it.

Built once per jaxlib version and source (the file name holds both) into normlab's cache, by ``make setup`` and
otherwise on first use; not by pip's isolated build, which would compile against whatever jaxlib it downloads,
not the installed one. Two processes building at once each compile into a private folder and rename the library
into place (``atomic.replacing_by_name``).
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from normlab.atomic import replacing_by_name

SOURCE = Path(__file__).with_name("gemm.cc")


class BuildError(Exception):
    """The extension could not be built here (no C++ compiler, no FFI headers): the engine falls back to XLA."""


def library_path() -> Path:
    import jaxlib
    from normlab.files import cache_root
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return build_dir(cache_root()) / f"normlab_gemm-jaxlib{jaxlib.__version__}-{digest}.so"


def build_dir(cache: Path) -> Path:
    return cache / "engine-build"


def compiler() -> str:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    raise BuildError("no C++ compiler found (set CXX, or install g++)")


def build() -> Path:
    """The library's path, compiling it first if this jaxlib and source have none yet."""
    path = library_path()
    if path.exists():
        return path
    import jax
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing_by_name(path, path.name) as temporary:
        command = [compiler(), "-O3", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
                   str(SOURCE), "-o", str(temporary)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"{' '.join(command[:1])} failed: {done.stderr.strip().splitlines()[-1:]}")
    return path


if __name__ == "__main__":  # `python -m normlab.engine.build`, run by `make setup`
    try:
        print(f"normlab: built the BLAS GEMM extension: {build()}")
    except BuildError as error:
        print(f"normlab: the BLAS GEMM extension was not built ({error}); products stay on XLA's own GEMM")
