"""C++ CPU kernels registered as XLA FFI custom calls, built on first use (`build.load_target`).

Each kernel has a pure-JAX reference beside its Python wrapper and falls back to it when it cannot be
built here; see `pallas_kernels.matmul` and `pallas_kernels.ragged_paged_attention.cpu_native`.
"""
