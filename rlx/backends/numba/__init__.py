"""The numba CPU backend (see backend.py)."""
