"""The layers' matrix products: XLA's own dot, or a BLAS ``sgemm`` (MKL, OpenBLAS) through the ``normlab_gemm``
XLA FFI custom call (``gemm.cc``), whichever ``use`` chose for this process — ``runtime.configure`` applies the
machine's tuned choice. A program keeps the GEMM it was traced with.

At the study's batch of 32 XLA's CPU GEMM, not the arithmetic, bounds the epoch; MKL ran the same products 2-3x
faster (issue 16). Results equal XLA's to float32 rounding (different summation order), not bit for bit.
"""

import ctypes
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from normlab.engine.settings import GEMMS, cores

TARGET = "normlab_gemm"
STEP_TARGET = "normlab_gemm_step"
_chosen = "xla"
_extension = None  # the loaded library, its target registered with XLA
_loaded: dict[str, int] = {}  # BLAS name -> its index in the extension, once loaded into this process


def use(name: str) -> None:
    """Compute the products of programs traced from now on with ``name`` (loading and registering it first).

    Raises ``OSError`` or ``build.BuildError`` when that GEMM is unavailable here; the choice is then unchanged.
    """
    if name not in GEMMS:
        raise ValueError(f"unknown GEMM {name!r}; choose from {', '.join(GEMMS)}")
    if name != "xla":
        _load(name)
    global _chosen
    _chosen = name


def chosen() -> str:
    return _chosen


def usable(names=GEMMS):
    """Each of ``names`` that loads here, in turn chosen (``use``) while the caller's loop body runs; the GEMM in
    use before is restored at the end. One not installed here, or without a compiler to build the extension, is
    left out."""
    before = _chosen
    try:
        for name in names:
            try:
                use(name)
            except Exception:  # noqa: BLE001 - unavailable here (not installed, no compiler)
                continue
            yield name
    finally:
        use(before)


def _load(name: str) -> None:
    from normlab.engine.blas import BLAS, sgemm_address
    from normlab.engine.build import build
    global _extension
    if name in _loaded:
        return
    address = sgemm_address(name)
    if _extension is None:
        _extension = ctypes.CDLL(str(build()))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(_extension.NormlabGemm), platform="cpu")
        jax.ffi.register_ffi_target(STEP_TARGET, jax.ffi.pycapsule(_extension.NormlabGemmStep), platform="cpu")
    index = BLAS.index(name)
    _extension.normlab_gemm_use(ctypes.c_int(index), ctypes.c_void_p(address))
    _loaded[name] = index


def product(a, b, trans_a: bool = False, trans_b: bool = False):
    """``op(a) @ op(b)`` over the last two axes; leading axes (vmapped seeds) are a batch."""
    if _chosen == "xla" or a.dtype != jnp.float32 or b.dtype != jnp.float32:
        return jnp.matmul(jnp.swapaxes(a, -1, -2) if trans_a else a, jnp.swapaxes(b, -1, -2) if trans_b else b)
    rows = a.shape[-1] if trans_a else a.shape[-2]
    columns = b.shape[-2] if trans_b else b.shape[-1]
    call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((*a.shape[:-2], rows, columns), jnp.float32),
                            vmap_method="broadcast_all")
    return _varying_like(call(a, b, trans_a=trans_a, trans_b=trans_b, blas=_loaded[_chosen], parts=cores()), a, b)


def stepped_product(w, a, b, step, trans_a: bool = False, trans_b: bool = False):
    """``w + step * (op(a) @ op(b))``: on a BLAS, one ``sgemm`` with beta = 1 writing into ``w``'s buffer."""
    if _chosen == "xla":
        return w + step * product(a, b, trans_a, trans_b)
    call = jax.ffi.ffi_call(STEP_TARGET, jax.ShapeDtypeStruct(w.shape, jnp.float32), vmap_method="broadcast_all",
                            input_output_aliases={0: 0})
    return _varying_like(call(w, a, b, jnp.asarray(step, jnp.float32), trans_a=trans_a, trans_b=trans_b,
                              blas=_loaded[_chosen], parts=cores()), w, a, b)


class Stepped(NamedTuple):
    """A kernel that takes its plain-SGD step (``step`` = -learning rate) in its own weight-gradient product: its
    "gradient" is the stepped kernel itself. Saves the epoch a pass per kernel and step (write the gradient, read it
    back with the kernel: the 784x300 kernel's update was ~9 % of a bn-after step, issue 16)."""
    kernel: Any
    step: Any


def matmul(x, kernel):
    """``x @ kernel`` for a layer (``kernel`` may be ``Stepped``), its two gradient products in the orientation
    each GEMM runs fastest."""
    if isinstance(kernel, Stepped):
        return _stepped_matmul(x, kernel.kernel, kernel.step)
    return _matmul(_varying_like(x, kernel), _varying_like(kernel, x))


def _varying_like(a, *others):
    """``a``, marked as differing between devices wherever one of ``others`` does (inside ``shard_map``: a
    data-parallel step's rows vary, its kernel is replicated). A custom VJP must return cotangents of its inputs'
    types, and the transpose of this cast sums the kernel's per-device gradients over the devices, as JAX's own
    dot would; a custom call's result is typed as equal on all devices unless marked so."""
    varying = set().union(*(jax.typeof(other).manual_axis_type.varying for other in others))
    missing = varying - jax.typeof(a).manual_axis_type.varying
    return jax.lax.pcast(a, tuple(sorted(missing)), to="varying") if missing else a


def _input_gradient(g, kernel):
    """``g @ kernel.T``. On XLA's GEMM through an explicitly transposed kernel: XLA's CPU backend folds the
    transpose into a transposed-operand GEMM that ran at a third of the plain one's speed (dx of the 784x300 layer:
    635 ms per epoch vs ~190 ms; bn-after epoch 1.84-1.91 s -> 1.59-1.66 s, 2-core EPYC, jaxlib 0.10.2). A BLAS
    takes the transpose as a flag at no cost."""
    if _chosen == "xla":
        return g @ jax.lax.optimization_barrier(jnp.transpose(kernel))
    return product(g, kernel, trans_b=True)


@jax.custom_vjp
def _matmul(x, kernel):
    return product(x, kernel)


def _matmul_fwd(x, kernel):
    return product(x, kernel), (x, kernel)


def _matmul_bwd(residuals, g):
    x, kernel = residuals
    return _input_gradient(g, kernel), (x.T @ g if _chosen == "xla" else product(x, g, trans_a=True))


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


@jax.custom_vjp
def _stepped_matmul(x, kernel, step):
    return product(x, kernel)


def _stepped_matmul_fwd(x, kernel, step):
    return product(x, kernel), (x, kernel, step)


def _stepped_matmul_bwd(residuals, g):
    x, kernel, step = residuals
    return _input_gradient(g, kernel), stepped_product(kernel, x, g, step, trans_a=True), jnp.zeros_like(step)


_stepped_matmul.defvjp(_stepped_matmul_fwd, _stepped_matmul_bwd)
