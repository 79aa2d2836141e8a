"""The engine's candidate settings, shared by ``runtime`` (which applies one) and ``engine.tune`` (which measures
them all). No JAX here: light commands (``normlab data`` under a tight memory limit) read them too."""

import os

# Without region analysis, copy insertion keeps a copy of every loop-carried array in each step of the epoch's
# scan, the 784x300 kernel included (36 copies per step, 102 -> 66 in the program; the kernel's alone cost 88-118
# ms of a bn-after epoch). Copies only: results are bit for bit the same.
REGION_ANALYSIS = {"xla_cpu_copy_insertion_use_region_analysis": "true"}
FLAG_SETS = {
    # XLA's XNNPACK/YNNPACK fusions wrap the per-step batch-norm reductions and the 32-row matmuls in library
    # calls whose overhead dominates at these sizes: bn-after epoch 3.6 s -> 1.9 s with both off (2-core EPYC,
    # jaxlib 0.10.2, batch 32); plain sgemm on the study's shapes 52 -> 80 GFLOP/s.
    "no-library-fusion": {"xla_cpu_experimental_xnn_fusion_type": "", "xla_cpu_experimental_ynn_fusion_type": "",
                          **REGION_ANALYSIS},
    # ... but on a 2-core AVX-512 Xeon, dots through XNNPACK and YNNPACK were faster: 1.50-1.57 s vs 1.78-2.06 s.
    "library-dots": {"xla_cpu_experimental_xnn_fusion_type": "dot", "xla_cpu_experimental_ynn_fusion_type": "dot",
                     **REGION_ANALYSIS},
}
GEMMS = ("xla", "mkl", "openblas")  # engine.gemm: XLA's dot, or a BLAS through the FFI custom call
OVERRIDE = "NORMLAB_ENGINE"  # gemm=G,flags=F: wins over the tuned choice


def cores() -> int:
    """The cores this process may use: tuned choices and compiled programs are kept per count."""
    return len(os.sched_getaffinity(0))
