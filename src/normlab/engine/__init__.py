"""The engine below the layers: which GEMM computes the products (XLA's own, or a BLAS through an XLA FFI custom
call) and which XLA CPU flags compile the programs, measured on each machine (``tune``)."""
