"""Backends turn (fused) graph nodes into kernels. `reference` is the ground truth."""
