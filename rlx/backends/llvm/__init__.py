"""The llvmlite CPU backend (see backend.py)."""
