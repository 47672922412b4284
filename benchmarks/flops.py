"""FLOP count of the SAM v1 image encoder (+ neck), derived by hand and checked
against ``torch.utils.flop_counter.FlopCounterMode`` on the official model.

Counted: every matmul / convolution / einsum, at 2 FLOP per multiply-add.
Not counted: elementwise work (LayerNorm, softmax, GELU, residual and rel-pos
adds, window partition copies) -- a few GFLOP at most, and not what BLAS-peak
comparisons are about.

The subtle part is the windowed blocks: ``window_partition`` pads the 64x64
token grid to 70x70 (25 windows of 14x14 = 4900 tokens) *before* the
attention module, so qkv and proj of the 8 windowed blocks (ViT-B) run on
4900 tokens, not 4096; the MLP runs after ``window_unpartition`` on 4096.

ViT-B at 1024x1024 (C=768, 12 heads of 64, global blocks 2,5,8,11):

=========================  ===========================================  ========
part                       formula                                       GFLOP
=========================  ===========================================  ========
patch embed (conv 16x16)   2*4096*768*768                                   4.83
qkv, 4 global blocks       4 * 2*4096*768*2304                             57.98
qkv, 8 windowed blocks     8 * 2*4900*768*2304                            138.73
proj, global               4 * 2*4096*768*768                              19.33
proj, windowed             8 * 2*4900*768*768                              46.24
MLP (fc1+fc2), 12 blocks   12 * 2 * 2*4096*768*3072                       463.86
attn QK^T + AV, global     4 * 2 * 12 * 2*4096*4096*64                    206.16
attn QK^T + AV, windowed   8 * 2 * 25*12 * 2*196*196*64                    23.60
rel-pos einsums, global    4 * 2 * 12 * 2*4096*64*64                        3.22
rel-pos einsums, windowed  8 * 2 * 25*12 * 2*196*14*64                      1.69
neck conv 1x1              2*4096*768*256                                   1.61
neck conv 3x3              2*4096*(256*9)*256                               4.83
total                                                                     972.08
=========================  ===========================================  ========

(The 972 GFLOP quoted for rlx is this number; counting qkv/proj on 4096
tokens instead would give 941.7.) Run ``python -m benchmarks.flops --verify``
to recompute it and to check it against torch's own counter
(which splits it as addmm 726.13 + bmm 234.67 + convolution 11.27 = 972.08).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

SAM_ENCODERS = {
    # embed_dim, depth, heads, global attention block indexes
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def encoder_flops(
    model: str = "vit_b",
    img_size: int = 1024,
    patch: int = 16,
    window: int = 14,
    out_chans: int = 256,
    mlp_ratio: int = 4,
) -> dict:
    """Analytic FLOP breakdown (2 per MAC) of the SAM image encoder + neck."""
    C, depth, heads, global_idx = SAM_ENCODERS[model]
    hd = C // heads
    g = img_size // patch  # token grid side (64)
    N = g * g  # tokens (4096)
    gp = math.ceil(g / window) * window  # padded grid side (70)
    nw = (gp // window) ** 2  # windows (25)
    T = window * window  # tokens per window (196)
    Nw = nw * T  # padded tokens (4900)
    n_glob = len(global_idx)
    n_win = depth - n_glob
    f = {}
    f["patch_embed"] = 2 * N * C * (3 * patch * patch)
    f["qkv_global"] = n_glob * 2 * N * C * 3 * C
    f["qkv_windowed"] = n_win * 2 * Nw * C * 3 * C
    f["proj_global"] = n_glob * 2 * N * C * C
    f["proj_windowed"] = n_win * 2 * Nw * C * C
    f["mlp"] = depth * 2 * (2 * N * C * mlp_ratio * C)
    f["attn_global"] = n_glob * 2 * heads * (2 * N * N * hd)
    f["attn_windowed"] = n_win * 2 * nw * heads * (2 * T * T * hd)
    f["relpos_global"] = n_glob * 2 * heads * (2 * N * g * hd)
    f["relpos_windowed"] = n_win * 2 * nw * heads * (2 * T * window * hd)
    f["neck_conv1x1"] = 2 * N * C * out_chans
    f["neck_conv3x3"] = 2 * N * (out_chans * 9) * out_chans
    f["total"] = sum(f.values())
    return f


def encoder_gflop(model: str = "vit_b") -> float:
    return encoder_flops(model)["total"] / 1e9


def torch_counted_flops(model: str = "vit_b") -> dict:
    """Count with torch's FlopCounterMode on the official encoder (real CPU run)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.peers import _sam_common as common

    common.import_segment_anything()
    from segment_anything import sam_model_registry

    enc = sam_model_registry[model]().image_encoder.eval()
    x = torch.zeros(1, 3, 1024, 1024)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        enc(x)
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return {"total": int(counter.get_total_flops()), "per_op": per_op}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SAM image-encoder FLOP count")
    ap.add_argument("--model", default="vit_b", choices=sorted(SAM_ENCODERS))
    ap.add_argument("--verify", action="store_true", help="also count with torch's FlopCounterMode")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    f = encoder_flops(args.model)
    out = {"model": args.model, "analytic": f}
    if args.verify:
        out["torch_flop_counter"] = torch_counted_flops(args.model)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"SAM {args.model} image encoder + neck at 1024x1024 (2 FLOP per MAC)")
    for k, v in f.items():
        print(f"  {k:<18s} {v / 1e9:10.2f} GFLOP")
    if args.verify:
        t = out["torch_flop_counter"]
        print(f"torch FlopCounterMode total: {t['total'] / 1e9:.2f} GFLOP")
        for k, v in sorted(t["per_op"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:<28s} {v / 1e9:10.2f} GFLOP")
        rel = abs(t["total"] - f["total"]) / f["total"]
        print(f"analytic vs torch: {100 * rel:.3f}% apart")
        return 0 if rel < 1e-3 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
