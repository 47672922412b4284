"""rlx: a small ML compiler for the CPU."""

__version__ = "0.1.0"
