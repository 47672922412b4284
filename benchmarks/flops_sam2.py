"""FLOP count of SAM 2's image side (Hiera trunk + FPN neck + conv_s0 / conv_s1), per stage.

Why a count: the issue's speed target (rlx at most 0.5x torch eager) only
makes sense against what the CPU can do at all. Dividing these FLOPs by the
measured GEMM / attention rates (``benchmarks.bench_attention``,
``benchmarks.blas_peak``) gives the lower bound on the encoder's time.

Counted as in ``benchmarks.flops``: every matmul / convolution at 2 FLOP per
multiply-add; elementwise work (LayerNorm, GELU, softmax, adds, max-pool,
window copies) is not. Derived from ``Sam2Config.blocks()`` with the official
model's rules, which matter for the count:

* the window partition zero-pads the grid to a multiple of the window
  *before* the attention module, so qkv runs on the padded token count
  (hiera_t stage 3: 64x64 -> 70x70 for windows of 14);
* a pooling block (first of stages 2-4) projects its shortcut on the
  un-pooled grid, runs qkv on the un-pooled (padded) windows, pools the
  queries 2x2, so attention is (T/4 queries) x (T keys) per window and
  the MLP runs on the pooled grid;
* the attention's output projection runs *inside* the attention module,
  on the padded windows (before the unpartition crops the padding);
* the neck runs all four 1x1 laterals (the scalp drops the S/32 output, not
  its convolution); ``conv_s0`` / ``conv_s1`` run on the S/4 and S/8 levels.
  (rlx composes conv_s0 / conv_s1 with the laterals into one 1x1 each, so it
  does slightly fewer FLOPs there than torch; counted here as torch does.)

``python -m benchmarks.flops_sam2 --model sam2.1_hiera_t --verify`` checks the
GEMM + convolution part against torch's ``FlopCounterMode`` on the official
module (it counts ``addmm`` and ``convolution``; CPU SDPA
``_scaled_dot_product_flash_attention_for_cpu`` has no FLOP formula there, so
the attention part, 4 * queries * keys * d per head, is checked by hand).
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def image_side_flops(model: str = "sam2.1_hiera_t", image_size: int = 1024) -> dict:
    """Analytic FLOPs by part and stage: {"stages": [...], "neck": ..., "total": ...}."""
    from models.sam2.config import get_config

    c = get_config(model).with_image_size(image_size)
    g = image_size // c.patch_stride
    parts = {"patch_embed": 2 * g * g * c.embed_dim * c.in_chans * c.patch_kernel ** 2}
    stages = [dict(gemm=0, attn_windowed=0, attn_global=0, global_shapes=[]) for _ in c.stages]
    side = g
    for s in c.blocks():
        st = stages[s.stage]
        n = side * side
        if s.has_proj:
            st["gemm"] += 2 * n * s.dim * s.dim_out  # shortcut projection, un-pooled grid
        hd = s.head_dim
        if s.window > 0:
            w = s.window
            padded = math.ceil(side / w) * w
            windows = (padded // w) ** 2
            keys = w * w
        else:
            padded, windows, keys = side, 1, n
        st["gemm"] += 2 * windows * keys * s.dim * 3 * s.dim_out  # qkv
        queries = keys // 4 if s.q_stride else keys
        attn = windows * s.num_heads * 2 * (2 * queries * keys * hd)  # q k^T and p v
        if s.window > 0:
            st["attn_windowed"] += attn
        else:
            st["attn_global"] += attn
            st["global_shapes"].append((s.num_heads, queries, keys, hd))
        st["gemm"] += 2 * windows * queries * s.dim_out * s.dim_out  # proj, still windowed
        if s.q_stride:
            side //= 2
        n_out = side * side
        st["gemm"] += 2 * 2 * n_out * s.dim_out * int(s.dim_out * c.mlp_ratio)  # mlp
    neck = 0
    for stage, ch in enumerate(reversed(c.backbone_channel_list)):
        gs = c.stage_grid(stage)
        neck += 2 * gs * gs * ch * c.d_model
    heads = 2 * (g * g) * c.d_model * (c.d_model // 8) + 2 * (g // 2) ** 2 * c.d_model * (
        c.d_model // 4)
    parts["stages"] = stages
    parts["neck_laterals"] = neck
    parts["conv_s0_s1"] = heads
    gemm = parts["patch_embed"] + sum(s["gemm"] for s in stages) + neck + heads
    attn_w = sum(s["attn_windowed"] for s in stages)
    attn_g = sum(s["attn_global"] for s in stages)
    parts["summary"] = {"gemm_and_conv": gemm, "attn_windowed": attn_w, "attn_global": attn_g}
    parts["total"] = gemm + attn_w + attn_g
    return parts


def torch_counted_flops(model: str = "sam2.1_hiera_t") -> dict:
    """Count with torch's FlopCounterMode on the official image side (a real CPU run)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.bench_sam2 import _Features, _official

    m, _ = _official(model, 0, torch.get_num_threads())
    feats = _Features(m).module
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        feats(torch.zeros(1, 3, 1024, 1024))
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return {"total": int(counter.get_total_flops()), "per_op": per_op}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SAM 2 image-side FLOP count")
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--verify", action="store_true", help="also count with torch's FlopCounterMode")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    f = image_side_flops(args.model)
    out = {"model": args.model, "analytic": f}
    if args.verify:
        out["torch_flop_counter"] = torch_counted_flops(args.model)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"SAM 2 {args.model} image side at 1024x1024 (GFLOP, 2 per MAC)")
    print(f"  {'part':<22s} {'GEMM/conv':>10s} {'attn win':>10s} {'attn glob':>10s}")
    print(f"  {'patch embed':<22s} {f['patch_embed'] / 1e9:10.2f}")
    for i, s in enumerate(f["stages"]):
        print(f"  {'stage %d' % (i + 1):<22s} {s['gemm'] / 1e9:10.2f} {s['attn_windowed'] / 1e9:10.2f}"
              f" {s['attn_global'] / 1e9:10.2f}  global (heads, q, k, d): {s['global_shapes']}")
    print(f"  {'neck laterals':<22s} {f['neck_laterals'] / 1e9:10.2f}")
    print(f"  {'conv_s0 + conv_s1':<22s} {f['conv_s0_s1'] / 1e9:10.2f}")
    sm = f["summary"]
    print(f"  {'total':<22s} {sm['gemm_and_conv'] / 1e9:10.2f} {sm['attn_windowed'] / 1e9:10.2f}"
          f" {sm['attn_global'] / 1e9:10.2f}  = {f['total'] / 1e9:.2f} GFLOP")
    if args.verify:
        t = out["torch_flop_counter"]
        print(f"torch FlopCounterMode total: {t['total'] / 1e9:.2f} GFLOP")
        for k, v in sorted(t["per_op"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<40s} {v / 1e9:10.2f} GFLOP")
        gemm = f["summary"]["gemm_and_conv"]
        counted = sum(v for k, v in t["per_op"].items() if "addmm" in k or "convolution" in k
                      or k.endswith(("mm", "bmm")))
        rel = abs(counted - gemm) / gemm
        print(f"GEMM + conv, analytic {gemm / 1e9:.2f} vs torch {counted / 1e9:.2f}: "
              f"{100 * rel:.3f}% apart")
        return 0 if rel < 1e-3 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
