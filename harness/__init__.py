"""The harness: benchmark our implementation against PyTorch, check parity, and report.

Run it as ``python -m harness`` (or the ``harness`` console script); ``python -m harness --help``.
Modules: ``suites`` (TOML suites -> jobs), ``workloads`` (inputs, timed call, parity), ``timer``
(measuring), ``results`` (the record: results.csv and samples.csv), ``stats`` (bootstrap confidence
intervals), ``env`` (env.json), ``nvml`` (the GPU's clocks, power and throttling per row), ``report``
(renders from saved CSVs through ``speedups``, ``tables``, ``latex``, ``plots``, ``roofline``, ``pdfdoc``,
``labels``), ``compare`` (two runs row by row), ``targets`` (the performance targets), ``cli`` (the
command line).
"""
import os as _os

# NOTE: before anything imports NumPy. OpenBLAS's idle threads otherwise keep spinning after every
# matmul and starve our threaded NumPy passes (custom_impl/cpu/_parallel.py): measured on the GPU host's
# 16-core Xeon (2026-11), lenet-mnist's CPU train step 55 -> 33 ms and cnn-cifar's 330 -> 150 ms with a
# 4-unit timeout; without it the CNN steps were 1.5-2x slower (lenet batch 256 87 -> 179 ms) and mlp-deep
# slightly slower. A value the user set wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
