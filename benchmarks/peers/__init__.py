"""Peer systems for the benchmark harness.

Each module exposes *runner* functions: ``fn(**kwargs) -> Prepared`` (see
``benchmarks.harness.Prepared``). The harness imports them by
``"module:function"`` inside a fresh subprocess.
"""
