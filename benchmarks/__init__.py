"""rlx benchmark suite: rlx against peers (PyTorch, torch.compile, ONNX Runtime).

Entry point: ``python -m benchmarks.bench_sam --help`` (see benchmarks/README.md).
"""
