"""The CPU's float32 FMA peak: the ceiling every GFLOP/s figure here is measured against.

    python -m benchmarks.fma_peak --threads 2

Why: whether a speed target is reachable at all is a roofline question --
FLOPs of the model (``benchmarks.flops``, ``benchmarks.flops_sam2``) over the
rate the cores can multiply-add. GEMM libraries reach 80-90 % of it; no f32
code can pass it. The probe is a loop of 12 independent vector FMA chains
(more than FMA latency x FMA units, so the units never wait) on registers
only, JIT-compiled with llvmlite for the host CPU at its widest vector; each
thread runs it through ctypes (which releases the GIL), so N threads load N
cores. Reported per thread from CPU time (robust to other processes taking
turns on the core) and for all threads together from wall time; the implied
clock is the per-core rate / (FMA units x lanes x 2), with 2 FMA units (true
for Zen 2-5 and Intel since Haswell).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import threading
import time

CHAINS = 12


def _kernel(lanes: int):
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    vt = f"<{lanes} x float>"

    def splat(x):
        return "<" + ", ".join([f"float {x}"] * lanes) + ">"
    ir = ["define float @fma_loop(i64 %n) {", "entry:", "  br label %loop", "loop:",
          "  %i = phi i64 [0, %entry], [%i1, %loop]"]
    ir += [f"  %a{c} = phi {vt} [{splat(1.0)}, %entry], [%b{c}, %loop]" for c in range(CHAINS)]
    ir += [f"  %b{c} = call {vt} @llvm.fma.v{lanes}f32({vt} %a{c}, {vt} {splat(0.5)}, "
           f"{vt} {splat(0.25)})" for c in range(CHAINS)]
    ir += ["  %i1 = add i64 %i, 1", "  %c = icmp slt i64 %i1, %n",
           "  br i1 %c, label %loop, label %done", "done:"]
    acc = "%b0"
    for c in range(1, CHAINS):
        ir.append(f"  %s{c} = fadd {vt} {acc}, %b{c}")
        acc = f"%s{c}"
    ir += [f"  %r = extractelement {vt} {acc}, i32 0", "  ret float %r", "}",
           f"declare {vt} @llvm.fma.v{lanes}f32({vt}, {vt}, {vt})"]
    mod = llvm.parse_assembly("\n".join(ir))
    mod.verify()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=2)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    fn = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64)(engine.get_function_address("fma_loop"))
    return engine, fn


def measure(threads: int = 1, iterations: int = 20_000_000, rounds: int = 5) -> dict:
    from rlx.backends.llvm.target import host_features, widest_vector

    lanes = widest_vector(host_features()) // 32
    engine, fn = _kernel(lanes)
    fn(1000)
    flop = iterations * CHAINS * lanes * 2
    per_thread, total = [], []
    for _ in range(rounds):
        cpu = [0.0] * threads

        def work(i):
            t = time.thread_time()
            fn(iterations)
            cpu[i] = time.thread_time() - t
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        w = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - w
        per_thread.append(flop / max(cpu) / 1e9)
        total.append(threads * flop / wall / 1e9)
    best = max(per_thread)
    del engine
    return {"lanes": lanes, "threads": threads, "per_core_gflops_cpu_time": best,
            "all_threads_gflops_wall": max(total), "implied_ghz": best / (2 * lanes * 2),
            "peak_gflops_all_cores": best * threads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="float32 FMA peak of this CPU")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    r = measure(args.threads)
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(f"{r['lanes']} lanes: {r['per_core_gflops_cpu_time']:.1f} GFLOP/s per core (CPU time, "
          f"~{r['implied_ghz']:.2f} GHz x 2 FMA units), x {args.threads} = "
          f"{r['peak_gflops_all_cores']:.0f} GFLOP/s; {args.threads} threads by wall time "
          f"{r['all_threads_gflops_wall']:.0f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
