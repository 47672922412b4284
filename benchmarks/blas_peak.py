"""numpy sgemm throughput on ViT-B encoder shapes: the BLAS 'peak' that rlx's
effective GFLOP/s (972 GFLOP per ViT-B encoder pass / seconds) is put against.

Run inside a harness child (``mode="call"``) so the thread count is set in the
environment before numpy loads its BLAS. Which BLAS and which kernel it picked
is recorded through threadpoolctl when that is installed: with
``OPENBLAS_CORETYPE=Haswell`` set, OpenBLAS uses AVX2 kernels on this AVX-512
machine and GEMM runs at about half speed -- unset it for the benchmark
command (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``).
"""

from __future__ import annotations

import os
import time

# (M, K, N, what): C[M,N] = A[M,K] @ B[K,N], float32
VIT_B_SHAPES = (
    (4096, 768, 2304, "qkv (global block)"),
    (4096, 768, 3072, "mlp fc1"),
    (4096, 3072, 768, "mlp fc2"),
    (4096, 768, 768, "attn proj"),
    (4096, 64, 4096, "global attn q@k^T, one head"),
)


def blas_info() -> dict:
    import numpy as np

    info = {
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                   "threading_layer", "prefix")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def measure(threads: int = 1, min_time_s: float = 1.0, shapes=VIT_B_SHAPES) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for m, k, n, what in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        c = np.empty((m, n), dtype=np.float32)
        for _ in range(2):
            np.matmul(a, b, out=c)
        best = float("inf")
        t_end = time.perf_counter() + min_time_s
        reps = 0
        while reps < 3 or time.perf_counter() < t_end:
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            best = min(best, time.perf_counter() - t)
            reps += 1
        flop = 2.0 * m * k * n
        rows.append({"m": m, "k": k, "n": n, "what": what, "best_s": best,
                     "gflops": flop / best / 1e9, "reps": reps})
    return {
        "threads": threads,
        "shapes": rows,
        "peak_gflops": max(r["gflops"] for r in rows),
        "blas": blas_info(),
    }
