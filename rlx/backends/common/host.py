"""Host data movement shared by the compiled backends: one numpy call per op, into `out`.

Pad, concat, gather, im2col, small reductions and fills are copies or tiny
reductions; numpy already does each in one pass, so the backends run them
here instead of generating code. Every op writes straight into the
preallocated output (no temporary of the output's size): im2col copies the
patch view of the (padded) input into the output viewed as
[N, C, kh, kw, OH, OW].
"""

from __future__ import annotations

import numpy as np

from rlx.backends.common.spec import HostSpec
from rlx.ir.ops.gather import gather_into


def run_host(spec: HostSpec, inputs, outputs, nthreads: int = 1) -> None:
    """`spec`'s op from `inputs` into `outputs[0]`; pad is split over `nthreads` threads
    (numpy releases the GIL while it copies)."""
    op, at, out = spec.op, spec.attrs, outputs[0]
    if op == "pad":
        _pad(inputs[0], out, at["pads"], at["value"], nthreads)
    elif op == "concat":
        np.concatenate(inputs, axis=at["axis"], out=out)
    elif op == "gather":  # the op's own kernel: same index rules as the reference
        gather_into(inputs[0], inputs[1], at["axis"], out)
    elif op == "im2col":
        _im2col(inputs[0], out, at["kernel"], at["stride"], at["padding"], at["dilation"])
    elif op in ("reduce_sum", "reduce_mean"):
        fn = np.sum if op == "reduce_sum" else np.mean
        r = fn(inputs[0], axis=at["axes"], keepdims=at["keepdims"], dtype=np.float64)
        np.copyto(out, np.asarray(r).reshape(out.shape), casting="unsafe")
    elif op == "reduce_max":
        r = np.max(inputs[0], axis=at["axes"], keepdims=at["keepdims"])
        np.copyto(out, np.asarray(r).reshape(out.shape))
    elif op == "const":
        out.fill(at["value"])
    elif op == "arange":
        np.copyto(out, np.arange(at["start"], at["stop"], at["step"]), casting="unsafe")
    else:  # pragma: no cover - HOST_OPS is closed
        raise KeyError(op)


def _pad(x, out, pads, value, nthreads: int) -> None:
    """out = x padded: every thread fills and copies its own range of the first dim of
    extent > 1 (out-of-range rows are pure fill)."""
    from rlx.backends.common import threads

    lo = [pads[2 * i] for i in range(x.ndim)]
    axis = next((d for d in range(out.ndim) if out.shape[d] > 1), None)

    def part(a, b):
        sel_out = [slice(None)] * out.ndim
        sel_x = [slice(lo[d], lo[d] + x.shape[d]) for d in range(x.ndim)]
        if axis is not None:
            sel_out[axis] = slice(a, b)
        block = out[tuple(sel_out)]
        block.fill(value)
        if axis is not None:  # the rows of x that land in [a, b)
            r0, r1 = max(a, lo[axis]), min(b, lo[axis] + x.shape[axis])
            if r1 <= r0:
                return
            sel_x[axis] = slice(r0 - a, r1 - a)
            block[tuple(sel_x)] = x[tuple(slice(None) if d != axis else slice(r0 - lo[axis],
                                                                                r1 - lo[axis])
                                          for d in range(x.ndim))]
        else:
            block[tuple(sel_x)] = x

    if axis is None:
        part(0, 1)
        return
    threads.run_tasks(part, out.shape[axis], (), out.size, nthreads)


def _im2col(x, out, kernel, stride, padding, dilation) -> None:
    """out[n, c*kh*kw + i*kw + j, oy*OW + ox] = xpad[n, c, oy*sh + i*dh, ox*sw + j*dw]."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ph or pw:
        xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
        xp[:, :, ph:ph + h, pw:pw + w] = x
    else:
        xp = x
    s = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (n, c, kh, kw, oh, ow),
        (s[0], s[1], s[2] * dh, s[3] * dw, s[2] * sh, s[3] * sw), writeable=False)
    np.copyto(out.reshape(n, c, kh, kw, oh, ow), view)
