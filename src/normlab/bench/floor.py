"""The matmul floor: how long one epoch's matrix products alone take on this machine, at batch 32.

Per Dense layer with kernel W (in, out) and a step's input x (B, in) and output gradient g (B, out):
forward ``x @ W``, weight gradient ``dW = x^T @ g`` and input gradient ``dx = g @ W^T`` — the last skipped for
a layer with nothing trainable before it (the baseline's first Dense), as autodiff skips it. A Conv2D counts as
the GEMM it lowers to (im2col): B x output positions rows of kh * kw * in_channels values, times (kh * kw * in,
filters). Each product runs ``steps`` times in a jitted ``lax.scan`` with a fresh operand per step (like the
epoch's batches; a conv's operands are large, so at most ``OPERAND_BYTES`` of them, taken in turn); ``dx`` uses
a materialised ``W^T`` (plain NN product), the fastest orientation on the CPUs we measured and the one
``engine.gemm.matmul`` arranges on XLA (the transposed-operand GEMM ran at about a third of its speed); the
best of 5 repeats counts. Summed over shapes this bounds the epoch from below: everything else (BN, the
elementwise work, the optimizer, the loop) is what the engine adds on top.

The floor is measured for XLA's GEMM and for every BLAS the engine can call (``engine.gemm``: MKL, OpenBLAS),
each product then in the orientation the engine calls it (``dx = g @ W^T`` with ``W^T`` as a BLAS flag). XLA's
product is consumed by a sum (a slice of it would let XLA compute only that slice); the opaque BLAS call by two
of its elements, so its floor holds the product alone.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from normlab.nn.models import Model, abstract

REPEATS = 5
OPERAND_BYTES = 256 << 20  # the fresh operands of one product: a full epoch of a Dense layer's, fewer of a conv's


def matmul_shapes(model: Model, batch: int) -> list[tuple[str, tuple, tuple, tuple]]:
    """``(name, per-step operand shape, fixed operand shape, contracting dims)`` for every product of a step."""
    params, _, out_shapes = abstract(model)
    shapes, trainable_before = [], False
    for (name, _), out_shape in zip(model.layers, out_shapes):
        if "kernel" in params[name]:
            kernel = params[name]["kernel"].shape
            batch_rows, n_in, n_out = batch * math.prod(out_shape[:-1]), math.prod(kernel[:-1]), kernel[-1]
            shapes += [(f"{name} fwd x@W", (batch_rows, n_in), (n_in, n_out), ((1,), (0,))),
                       (f"{name} dW=x^T@g", (batch_rows, n_in), (batch_rows, n_out), ((0,), (0,)))]
            if trainable_before:
                shapes.append((f"{name} dx=g@W^T", (batch_rows, n_out), (n_out, n_in), ((1,), (0,))))
        trainable_before |= bool(params[name])
    return shapes


def _time_product(steps: int, a_shape: tuple, b_shape: tuple, contracting: tuple, gemm: str = "xla",
                  w_transposed: bool = False) -> float:
    """Seconds for ``steps`` products; ``w_transposed``: ``b`` is a materialised ``W^T``, which a BLAS takes as
    ``W`` with its transpose flag instead."""
    from normlab.engine.gemm import product
    fresh = max(1, min(steps, OPERAND_BYTES // (4 * math.prod(a_shape))))
    a = jnp.full((fresh, *a_shape), 0.01, jnp.float32)
    trans_b = gemm != "xla" and w_transposed
    b = jnp.full(b_shape[::-1] if trans_b else b_shape, 0.01, jnp.float32)

    def multiply(a_step):
        if gemm == "xla":  # the sum keeps every output element live, so XLA cannot drop part of the product
            return jnp.sum(jax.lax.dot_general(a_step, b, (contracting, ((), ()))))
        out = product(a_step, b, contracting[0] == (0,), trans_b)
        return out[0, 0] + out[-1, -1]

    @jax.jit
    def run(a, b):
        def body(carry, step):
            return carry + multiply(a[step % fresh]), None
        return jax.lax.scan(body, jnp.float32(0), jnp.arange(steps))[0]

    run(a, b).block_until_ready()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_floor(model: Model, num_examples: int, batch: int = 32) -> dict:
    """Per GEMM (XLA's, and each BLAS that loads here): per-shape seconds per epoch and GFLOP/s, and their sum,
    the epoch's matmul floor; ``floor_s`` is the fastest BLAS's (XLA's where none loads)."""
    from normlab.engine import gemm
    steps, floors = -(-num_examples // batch), {}
    for name in gemm.usable():
        rows = []
        for product, a_shape, b_shape, contracting in matmul_shapes(model, batch):
            seconds = _time_product(steps, a_shape, b_shape, contracting, name, product.endswith("W^T"))
            flop = 2 * np.prod(a_shape) * b_shape[1 - contracting[1][0]] * steps
            rows.append({"product": product, "a": list(a_shape), "b": list(b_shape), "seconds": seconds,
                         "gflop_per_s": float(flop / seconds / 1e9)})
        floors[name] = {"products": rows, "floor_s": sum(r["seconds"] for r in rows)}
    libraries = [name for name in floors if name != "xla"] or ["xla"]
    fastest = min(libraries, key=lambda name: floors[name]["floor_s"])
    return {"steps": steps, "batch": batch, "repeats": REPEATS, "floors": floors, "floor_gemm": fastest,
            "floor_s": floors[fastest]["floor_s"], "products": floors[fastest]["products"]}
