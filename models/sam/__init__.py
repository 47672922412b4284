"""Segment Anything (SAM v1) for rlx: config, host-side numpy glue, builders.

The host-side pieces (image loading and preprocessing, prompt Fourier
encoding, mask postprocessing) live in their own small modules so they can be
tested one by one against Meta's `segment-anything` package.
"""
