"""Shared test fixtures: reference models built from Meta's official code,
a torchvision stand-in so that code imports, and synthetic test images.

These helpers produce *reference* numbers; they never import rlx internals
beyond model configs, so a bug in rlx cannot leak into its own yardstick.
"""
