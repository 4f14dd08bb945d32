"""Our GPU implementation: CUDA kernels in ``custom_impl/kernels/*.cu``, compiled by NVRTC through CuPy.

One module per layer family, each a set of typed launch wrappers (float32, C-contiguous, shapes
checked, scalars cast to np.int32 / np.float32, grid computed there):
``gemm`` / ``dense`` / ``conv`` (GEMM and convolutions), ``pool``, ``activation``, ``loss``, ``sgd``;
``model`` assembles them into the model contract (``custom_impl.build(spec, device="gpu")``).
Importing any of these needs no CuPy: CuPy is imported inside the functions that use it, so CPU-only
machines can import and collect everything. docs/gpu_api.md lists the API.
"""
