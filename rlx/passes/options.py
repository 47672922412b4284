"""Options passes read. The runtime's compile profile maps onto these.

Passes know only the IR, never the runtime, so they take this small record
instead of a `CompileProfile`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PassOptions:
    #: rewrite `attention` into matmul + softmax + matmul (else a backend runs it blocked)
    lower_attention: bool = False
    #: run the fusion passes
    fuse: bool = True
    #: fold GEMM epilogues (bias, activation, residual, scale) into the GEMM kernel
    fuse_epilogues: bool = True
    #: verify the graph after every pass
    verify: bool = False
    #: what matrix products compute in: "f32", or "bf16" (the `precision` pass marks them)
    precision: str = "f32"
    #: under bf16, products with fewer multiply-adds stay f32 (see `rlx.passes.precision`)
    bf16_min_macs: int = 1 << 29
    #: 3x3 stride-1 convolutions as Winograd F(m x m, 3 x 3): the output tile m (2 or 4),
    #: 0 = im2col GEMM (see `rlx.passes.lower_conv_winograd`)
    winograd: int = 4
