"""The BLAS libraries the GEMM extension can call, found in the environment's wheels: MKL (``mkl``, x86) and
OpenBLAS (``scipy-openblas32``). Each is loaded single-threaded: the extension splits a product over XLA's own
thread pool instead, so no OpenMP team competes with XLA's threads for the cores."""

import ctypes
import glob
import sys
from pathlib import Path

BLAS = ("mkl", "openblas")
MKL_THREADING_SEQUENTIAL = 1


def mkl_library() -> Path | None:
    found = sorted(glob.glob(str(Path(sys.prefix) / "lib" / "libmkl_rt.so*")))
    return Path(found[0]) if found else None


def openblas_library() -> Path | None:
    try:
        import scipy_openblas32
    except ImportError:
        return None
    path = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
    return path if path.exists() else None


def sgemm_address(name: str) -> int:
    """The address of ``name``'s ``cblas_sgemm`` (32-bit integers), the library set to one thread."""
    if name == "mkl":
        path = mkl_library()
        if path is None:
            raise OSError("MKL is not installed (pip install mkl)")
        library = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        library.MKL_Set_Threading_Layer(MKL_THREADING_SEQUENTIAL)
        function = library.cblas_sgemm
    elif name == "openblas":
        path = openblas_library()
        if path is None:
            raise OSError("OpenBLAS is not installed (pip install scipy-openblas32)")
        library = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        library.scipy_openblas_set_num_threads(1)
        function = library.scipy_cblas_sgemm
    else:
        raise ValueError(f"unknown BLAS {name!r}; choose from {', '.join(BLAS)}")
    return ctypes.cast(function, ctypes.c_void_p).value


def installed() -> list[str]:
    return [name for name, find in (("mkl", mkl_library), ("openblas", openblas_library)) if find() is not None]
