"""Process-wide engine settings: XLA CPU flags measured on the study's shapes, and the persistent compile cache.

Nothing happens on import: an entry point calls ``configure()`` before JAX starts its backend (flags set later
are ignored). A flag the user already set in ``XLA_FLAGS`` wins over ours.
"""

import os
from pathlib import Path

# XLA's XNNPACK/YNNPACK fusions wrap the per-step batch-norm reductions and the 32-row matmuls in library
# calls whose overhead dominates at these sizes: bn-after epoch 3.6 s -> 1.9 s with both off (2-core EPYC,
# jaxlib 0.10.2, batch 32); plain sgemm on the study's shapes 52 -> 80 GFLOP/s.
XLA_FLAGS = {
    "xla_cpu_experimental_xnn_fusion_type": "",
    "xla_cpu_experimental_ynn_fusion_type": "",
    # Without region analysis, copy insertion keeps a copy of every loop-carried array in each step of the
    # epoch's scan, the 784x300 kernel included (36 copies per step, 102 -> 66 in the program; the kernel's alone
    # cost 88-118 ms of a bn-after epoch). Copies only: results are bit for bit the same.
    "xla_cpu_copy_insertion_use_region_analysis": "true",
}


def configure(compile_cache: bool = False) -> None:
    """The engine's settings for this process (and the processes it starts, through the environment)."""
    set_xla_flags()
    if compile_cache:
        enable_compile_cache()


def set_xla_flags(environ=os.environ) -> None:
    current = environ.get("XLA_FLAGS", "")
    ours = [f"--{name}={value}" for name, value in XLA_FLAGS.items() if f"--{name}=" not in current]
    environ["XLA_FLAGS"] = " ".join(filter(None, [current, *ours]))


def compile_cache_dir() -> Path:
    """Per number of usable cores: XLA splits loops by the threads it has, so a program compiled in a one-core
    worker would run slower (and round differently) in a two-core process, and vice versa."""
    from normlab.files import cache_root
    return cache_root() / "xla" / f"cores-{len(os.sched_getaffinity(0))}"


def enable_compile_cache(path: Path | None = None) -> Path:
    """Keep compiled programs on disk, so a second ``normlab reproduce`` skips compilation."""
    import jax
    path = path or compile_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
