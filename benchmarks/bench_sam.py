"""SAM v1 on the CPU: rlx against its peers, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.bench_sam --model vit_b --threads 2 --repeat 5 \\
            --systems torch,torch-compile,onnxruntime,rlx --json out.json --chart out.png

    # bf16 (issue 14): OpenVINO's default picks bf16 on CPUs with bf16 units
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        python -m benchmarks.bench_sam --systems openvino,openvino-f32,rlx,rlx-bf16 --threads 2

Tasks:

* ``encoder``: image encoder + neck, ``[1,3,1024,1024] -> [1,256,64,64]``;
* ``prompt``:  prompt -> masks for one foreground point on a 1500x2000 (HxW)
  image, ``multimask_output=True``, including post-processing (upscale,
  crop, upscale to 1500x2000, threshold), with the image embedding computed
  beforehand (``set_image``), i.e. ``SamPredictor.predict`` time.

Every measurement is a fresh subprocess (see ``benchmarks.harness``).
See benchmarks/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys

from benchmarks import flops as flops_mod
from benchmarks import harness
from benchmarks.harness import Job, RunnerSpec

TASKS = ("encoder", "prompt")
TASK_LABELS = {
    "encoder": "encoder: image encoder + neck, [1,3,1024,1024] -> [1,256,64,64]",
    "prompt": "prompt -> masks: 1 point, multimask, post-processed to 1500x2000",
}


def task_variants(task: str, threads: int, encoder_threads: list[int], points: list[int]):
    """(task name, base task, thread count, runner kwargs) for one base task.

    The main measurement keeps the plain task name; the scaling variants are
    ``encoder@<n>t`` (same encoder at n threads) and ``prompt@<n>pt`` (n clicks)."""
    if task == "encoder":
        for n in encoder_threads:
            yield ("encoder" if n == threads else f"encoder@{n}t"), task, n, {}
    else:
        for n in points:
            yield ("prompt" if n == 1 else f"prompt@{n}pt"), task, threads, (
                {} if n == 1 else {"points": n})


def task_label(name: str) -> str:
    if name in TASK_LABELS:
        return TASK_LABELS[name]
    base, _, var = name.partition("@")
    if base == "encoder" and var.endswith("t"):
        return f"{TASK_LABELS['encoder']}, {var[:-1]} thread(s)"
    if base == "prompt" and var.endswith("pt"):
        return f"prompt -> masks: {var[:-2]} points, multimask, post-processed to 1500x2000"
    return name


def _int_list(text: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"{what}: expected a comma list of integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise SystemExit(f"{what}: expected positive integers, got {text!r}")
    return out

# The known systems: name -> {task: runner target}. A system with no runner
# for a task is simply not measured on it. ``rlx`` (and ``rlx-<profile>``,
# which passes profile=<profile>) is a placeholder for the compiler's own
# runner module, to be written by the rlx side; until it exists the harness
# reports it as "not available" with the import error.
SYSTEMS: dict[str, dict[str, str]] = {
    "torch": {
        "encoder": "benchmarks.peers.torch_sam:encoder",
        "prompt": "benchmarks.peers.torch_sam:prompt_masks",
    },
    "torch-compile": {
        "encoder": "benchmarks.peers.torch_sam:compiled_encoder",
    },
    "onnxruntime": {
        "encoder": "benchmarks.peers.onnx_sam:encoder",
        "prompt": "benchmarks.peers.onnx_sam:prompt_masks",
    },
    "openvino": {
        "encoder": "benchmarks.peers.openvino_sam:encoder",
        "prompt": "benchmarks.peers.openvino_sam:prompt_masks",
    },
    "rlx": {
        "encoder": "benchmarks.peers.rlx_sam:encoder",
        "prompt": "benchmarks.peers.rlx_sam:prompt_masks",
    },
}
#: Systems that are another system with fixed keyword arguments.
VARIANTS: dict[str, tuple[str, dict]] = {
    # OpenVINO picks bf16 by itself on CPUs with bf16 units; this one is told f32.
    "openvino-f32": ("openvino", {"precision": "f32"}),
}
DEFAULT_SYSTEMS = "torch,torch-compile,onnxruntime,rlx"


def system_runners(name: str) -> tuple[dict[str, str], dict]:
    """(task -> target, extra kwargs) for a system name, incl. ``rlx-<profile>``."""
    if name in SYSTEMS:
        return SYSTEMS[name], {}
    if name in VARIANTS:
        base, kwargs = VARIANTS[name]
        return SYSTEMS[base], dict(kwargs)
    if name.startswith("rlx-") and len(name) > 4:
        return SYSTEMS["rlx"], {"profile": name[4:]}
    known = ", ".join(list(SYSTEMS) + list(VARIANTS) + ["rlx-<profile>"])
    raise SystemExit(f"unknown system {name!r}; known: {known}")


def machine_info() -> dict:
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
        for line in txt.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in txt.splitlines():
            if line.startswith("cpu family"):
                info["cpu_family"] = int(line.split(":", 1)[1])
                break
        flags = next((ln for ln in txt.splitlines() if ln.startswith("flags")), "")
        info["isa"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni")
                       if f" {f}" in flags]
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def package_versions() -> dict:
    from importlib import metadata

    out = {}
    for p in ("torch", "segment-anything", "onnx", "onnxruntime", "numpy", "Pillow", "rlx"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def _t(s: float) -> str:
    return f"{s:8.2f} s " if s >= 1.0 else f"{s * 1e3:8.1f} ms"


def format_table(report: dict) -> str:
    lines = []
    meta = report["meta"]
    lines.append(
        f"SAM {meta['model']} | {meta['threads']} threads | {meta['repeat']} fresh processes per "
        f"system, interleaved | {meta['date']}"
    )
    m = meta["machine"]
    lines.append(f"machine: {m.get('cpu', '?')} (family {m.get('cpu_family', '?')}), "
                 f"{m.get('cpus')} cpus, {m.get('mem_gib')} GiB, ISA {'/'.join(m.get('isa', []))}")
    if meta.get("openblas_env"):
        lines.append(f"WARNING: {meta['openblas_env']} set: numpy/OpenBLAS GEMM runs at about half "
                     "speed (prefix the command with env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)")
    gflop = report["flops"]["total"] / 1e9
    blas = report.get("blas_peak") or {}
    peak = blas.get("peak_gflops")
    for task, rows in report["results"].items():
        lines.append("")
        lines.append(task_label(task))
        peers = [s for s, r in rows.items() if r.get("status") == "ok"]
        encoder_task = task.partition("@")[0] == "encoder"
        head = f"  {'system':<16s} {'median':>11s} {'min':>11s} {'setup':>8s} {'peak RSS':>9s}"
        if encoder_task:
            head += f" {'GFLOP/s':>8s}"
            if peak:
                head += f" {'%BLAS':>6s}"
        head += "  " + " ".join(f"{'vs ' + p:>15s}" for p in peers)
        lines.append(head)
        for s, r in rows.items():
            if r.get("status") != "ok":
                st = "not available" if r.get("status") == "unavailable" else "FAILED"
                lines.append(f"  {s:<16s} {st}: {r.get('error')}")
                continue
            row = (f"  {s:<16s} {_t(r['median_s']):>11s} {_t(r['min_s']):>11s} "
                   f"{r['setup_median_s']:7.1f}s {r['peak_rss_mb_max'] / 1024:7.2f}GB")
            if encoder_task:
                gfs = gflop / r["median_s"]
                row += f" {gfs:8.1f}"
                if peak:
                    row += f" {100 * gfs / peak:5.1f}%"
            rat = report["ratios"][task].get(s, {})
            row += "  " + " ".join(
                f"{'—':>15s}" if p == s else f"{rat[p]:14.2f}x" for p in peers
            )
            lines.append(row)
        notes = []
        for s, r in rows.items():
            if r.get("status") != "ok":
                continue
            info = r.get("info", {})
            if "compile_s" in info:
                cs = r.get("compile_s_all") or [info["compile_s"]]
                notes.append(f"{s}: compile (first call, {'cold' if info.get('cold_cache') else 'warm'}"
                             f" cache) {min(cs):.1f}-{max(cs):.1f} s; max|d| vs eager "
                             f"{info.get('max_abs_diff_vs_eager', float('nan')):.2e}")
            if r.get("n_discarded_noisy"):
                notes.append(f"{s}: {r['n_discarded_noisy']} noisy child(ren) re-run and discarded")
            if r.get("foreign_cores_max", 0) > 0.2:
                notes.append(f"{s}: other processes used up to {r['foreign_cores_max']:.2f} cores "
                             "during a measurement (numbers are inflated)")
            if r.get("n_failed_children"):
                notes.append(f"{s}: {r['n_failed_children']} child(ren) failed: {r.get('child_error')}")
        for n in notes:
            lines.append(f"  note: {n}")
    lines.extend(format_scaling(report))
    lines.append("")
    lines.append("  'vs X' = median time of X / median time of this system (>1: this one is faster)")
    lines.append(f"  GFLOP/s = {gflop:.2f} GFLOP (matmul/conv/einsum FLOPs of the {meta['model']} "
                 "encoder, see benchmarks/flops.py) / median time")
    if blas:
        shapes = ", ".join(f"{r['m']}x{r['k']}x{r['n']} {r['gflops']:.0f}" for r in blas["shapes"])
        lines.append(f"  BLAS peak (numpy sgemm, {blas['threads']} threads, GFLOP/s, MxKxN): {shapes}; "
                     f"best {blas['peak_gflops']:.0f}")
        tp = blas.get("blas", {}).get("threadpools")
        if isinstance(tp, list):
            lines.append("  numpy BLAS: " + "; ".join(
                f"{p.get('internal_api')} {p.get('version')} {p.get('architecture')} "
                f"({p.get('num_threads')} threads)" for p in tp))
    prof = report.get("torch_profile")
    if prof:
        lines.append("")
        if prof.get("status") != "ok":
            lines.append(f"torch profile FAILED: {prof.get('error')}")
        else:
            p = prof["info"]
            lines.append(f"torch eager encoder profile (torch.profiler, one pass, {p['wall_s_profiled_run']:.2f} s "
                         f"wall, self CPU total {p['self_cpu_total_ms'] / 1e3:.2f} s) — top by self CPU:")
            lines.append(f"  {'op':<32s} {'self ms':>9s} {'self %':>7s} {'calls':>6s}")
            for r in p["top_by_op"]:
                lines.append(f"  {r['op']:<32s} {r['self_cpu_ms']:9.1f} {r['self_pct']:6.1f}% {r['calls']:6d}")
            lines.append("  by op and input shape:")
            for r in p["top_by_op_and_shape"]:
                lines.append(f"  {r['op']:<24s} {r['self_cpu_ms']:9.1f} {r['self_pct']:6.1f}% "
                             f"{r['calls']:6d}  {r['input_shapes'][:90]}")
    return "\n".join(lines)


def format_scaling(report: dict) -> list[str]:
    """The scaling table: encoder time per thread count, prompt time per click count."""
    res = report["results"]
    threads = report["meta"]["threads"]
    enc = {threads: "encoder", **{int(t.split("@")[1][:-1]): t for t in res
                                  if t.startswith("encoder@")}}
    pts = {1: "prompt", **{int(t.split("@")[1][:-2]): t for t in res if t.startswith("prompt@")}}
    enc = {n: t for n, t in sorted(enc.items()) if t in res}
    pts = {n: t for n, t in sorted(pts.items()) if t in res}
    if len(enc) < 2 and len(pts) < 2:
        return []
    systems = list(dict.fromkeys(s for t in list(enc.values()) + list(pts.values())
                                 for s in res[t]))

    def cell(task, system):
        r = res[task].get(system, {})
        return _t(r["median_s"]) if r.get("status") == "ok" else f"{'—':>11s}"

    cols = [(f"enc {n}t", t) for n, t in enc.items()] + [(f"{n} pt", t) for n, t in pts.items()]
    lines = ["", "scaling (median times): encoder per thread count, prompt -> masks per click count"]
    head = f"  {'system':<16s} " + " ".join(f"{c:>11s}" for c, _ in cols)
    if len(enc) >= 2:
        lo, hi = min(enc), max(enc)
        head += f" {f'enc {lo}t/{hi}t':>11s}"
    lines.append(head)
    for s in systems:
        row = f"  {s:<16s} " + " ".join(cell(t, s) for _, t in cols)
        if len(enc) >= 2:
            a, b = res[enc[lo]].get(s, {}), res[enc[hi]].get(s, {})
            ok = a.get("status") == "ok" and b.get("status") == "ok"
            row += f" {a['median_s'] / b['median_s']:10.2f}x" if ok else f" {'—':>11s}"
        lines.append(row)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_sam",
        description="Benchmark SAM v1 on the CPU: rlx against torch eager, torch.compile, "
        "ONNX Runtime and OpenVINO (openvino = its defaults, openvino-f32 = forced f32), "
        "each measurement in a fresh subprocess.",
    )
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for every system (torch.set_num_threads, ORT intra-op, "
                    "OMP/OPENBLAS/MKL_NUM_THREADS in the child)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="fresh processes per system and task, interleaved (default 3)")
    ap.add_argument("--systems", default=DEFAULT_SYSTEMS,
                    help=f"comma list (default {DEFAULT_SYSTEMS}); also rlx-<profile>")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma list of encoder,prompt")
    ap.add_argument("--encoder-threads", default=None, metavar="N,M",
                    help="also time the encoder at these thread counts (default: --threads)")
    ap.add_argument("--points", default="1", metavar="N,M",
                    help="time prompt -> masks for these click counts (default 1)")
    ap.add_argument("--scaling", action="store_true",
                    help="shorthand for --encoder-threads 1,<threads> --points 1,4,16")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per process")
    ap.add_argument("--encoder-runs", type=int, default=3, help="timed encoder calls per process")
    ap.add_argument("--prompt-runs", type=int, default=30, help="timed prompt calls per process")
    ap.add_argument("--seed", type=int, default=0, help="seed of the re-drawn weights and inputs")
    ap.add_argument("--checkpoint", default=None, help="official SAM .pth to use instead")
    ap.add_argument("--compile-warm-cache", action="store_true",
                    help="torch-compile: use the user's inductor cache (default: cold, fresh cache)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="before each child, wait up to S s until other processes use <0.15 cores")
    ap.add_argument("--max-foreign", type=float, default=None, metavar="CORES",
                    help="re-run a child during which other processes used more than CORES cores")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-runs allowed per noisy child with --max-foreign (default 2)")
    ap.add_argument("--no-blas", action="store_true", help="skip the numpy sgemm peak measurement")
    ap.add_argument("--torch-profile", action="store_true",
                    help="also profile one torch eager encoder pass (torch.profiler)")
    ap.add_argument("--profile-top", type=int, default=10)
    ap.add_argument("--json", default=None, help="write the full report here")
    ap.add_argument("--chart", default=None, help="write a PNG bar chart here (Pillow)")
    args = ap.parse_args(argv)
    # SIGTERM -> SystemExit, so the running child is killed too (see harness)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for t in tasks:
        if t not in TASKS:
            raise SystemExit(f"unknown task {t!r}; known: {', '.join(TASKS)}")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    encoder_threads = _int_list(args.encoder_threads or str(args.threads), "--encoder-threads")
    points = _int_list(args.points, "--points")
    if args.scaling:
        encoder_threads = sorted(set(encoder_threads) | {1, args.threads})
        points = sorted(set(points) | {1, 4, 16})
    common_kw = {"model": args.model, "seed": args.seed}
    if args.checkpoint:
        common_kw["checkpoint"] = os.path.abspath(args.checkpoint)

    jobs = []
    for s in systems:
        runners, extra = system_runners(s)
        for base in tasks:
            if base not in runners:
                continue
            for name, _, n_threads, task_kw in task_variants(base, args.threads, encoder_threads,
                                                             points):
                kw = dict(common_kw, **extra, **task_kw)
                if s == "torch-compile":
                    kw["cold_cache"] = not args.compile_warm_cache
                runs = args.encoder_runs if base == "encoder" else args.prompt_runs
                jobs.append(Job(s, name, RunnerSpec.make(runners[base], **kw), args.warmup, runs,
                                timeout_s=args.timeout, threads=n_threads))
    if not jobs:
        raise SystemExit("nothing to run")

    openblas_env = " ".join(f"{v}={os.environ[v]}" for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                            if v in os.environ)
    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "model": args.model,
        "threads": args.threads,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "encoder_runs": args.encoder_runs,
        "prompt_runs": args.prompt_runs,
        "seed": args.seed,
        "checkpoint": args.checkpoint,
        "weights": "checkpoint" if args.checkpoint else f"re-drawn, seed {args.seed}",
        "systems": systems,
        "tasks": tasks,
        "encoder_threads": encoder_threads,
        "points": points,
        "machine": machine_info(),
        "versions": package_versions(),
        "openblas_env": openblas_env,
        "wait_quiet_s": args.wait_quiet,
        "max_foreign_cores": args.max_foreign,
        "argv": sys.argv,
    }
    if openblas_env:
        print(f"WARNING: {openblas_env} is set; numpy GEMM will run at about half speed. "
              "Run as: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.bench_sam ...",
              file=sys.stderr)

    report: dict = {"meta": meta, "flops": flops_mod.encoder_flops(args.model)}

    if not args.no_blas:
        print("[blas] numpy sgemm on ViT-B shapes ...")
        if args.wait_quiet > 0:
            harness.wait_for_quiet(args.wait_quiet)
        b = harness.run_child(RunnerSpec.make("benchmarks.blas_peak:measure"), args.threads, 0, 0,
                              mode="call", timeout_s=600)
        report["blas_peak"] = b.get("info") if b.get("status") == "ok" else None
        if b.get("status") != "ok":
            print(f"[blas] failed: {b.get('error')}")
        else:
            print(f"[blas] best {b['info']['peak_gflops']:.0f} GFLOP/s")

    out = harness.run_jobs(jobs, args.repeat, args.threads, wait_quiet_s=args.wait_quiet,
                           max_foreign=args.max_foreign, retries=args.retries)
    report.update(results=out["results"], ratios=out["ratios"], raw=out["raw"])
    # all compile times, for torch-compile
    for task, rows in out["results"].items():
        for s, r in rows.items():
            kids = [c for c in out["raw"].get(f"{s}/{task}", []) if c.get("status") == "ok"]
            cs = [c["info"]["compile_s"] for c in kids if "compile_s" in c.get("info", {})]
            if cs:
                r["compile_s_all"] = cs

    if args.torch_profile:
        print("[profile] torch eager encoder, torch.profiler ...")
        if args.wait_quiet > 0:
            harness.wait_for_quiet(args.wait_quiet)
        kw = dict(common_kw, top=args.profile_top)
        report["torch_profile"] = harness.run_child(
            RunnerSpec.make("benchmarks.peers.torch_sam:profile_encoder", **kw),
            args.threads, 0, 0, mode="call", timeout_s=args.timeout)

    text = format_table(report)
    print()
    print(text)
    report["table"] = text
    if args.json:
        tmp = f"{args.json}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1, default=str)
        os.replace(tmp, args.json)
        print(f"\nwrote {args.json}")
    if args.chart:
        from benchmarks.chart import draw_chart

        m = meta["machine"]
        draw_chart(
            {
                "title": f"SAM {args.model} on CPU, {args.threads} threads",
                "subtitle": f"{meta['date']} | {m.get('cpu', '?')} | {m.get('cpus')} cpus | "
                f"{args.repeat} processes x runs per system",
                "results": report["results"],
                "task_labels": {t: task_label(t) for t in report["results"]},
            },
            args.chart,
        )
        print(f"wrote {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
