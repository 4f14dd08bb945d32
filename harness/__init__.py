"""The harness: benchmark our implementation against PyTorch, check parity, and report.

Run it as ``python -m harness`` (or the ``harness`` console script); ``python -m harness --help``.
Modules: ``suites`` (TOML suites -> jobs), ``workloads`` (inputs, timed call, parity), ``timer``
(measuring), ``results`` (the record and results.csv), ``env`` (env.json), ``report`` (plots, tables,
PDF from saved CSVs), ``targets`` (issue-5 targets), ``cli`` (the command line).
"""
