"""Our GPU implementation: CUDA kernels in ``custom_impl/kernels/*.cu``, compiled by NVRTC through CuPy.

- ``runtime``: the one GPU runtime (compiling and memoising kernel modules, ``kernel()`` lookup, shared
  workspaces, SM count, launch-cost model, the autotuner, ``precompile()``, typed-launch helpers).
- ``tiles``: GEMM tile configs and the performance model that chooses among them.
- One module per layer family, each a set of typed launch wrappers (float32, C-contiguous, shapes
  checked, scalars cast to np.int32 / np.float32, grid computed there) and the family's layer step class:
  ``gemm`` (the GEMM launch), ``dense``, ``conv`` (a package: one module per algorithm family),
  ``pool``, ``activation``, ``loss``, ``sgd``; ``step`` holds the step base class.
- ``ops``: the layer functions with the signatures shared with ``custom_impl.cpu.ops``.
- ``model``: assembles the steps into the model contract (``custom_impl.build(spec, device="gpu")``).

Importing any of these needs no CuPy: CuPy is imported inside the functions that use it, so CPU-only
machines can import and collect everything.
"""
