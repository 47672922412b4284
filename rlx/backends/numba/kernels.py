"""Runtime side of numba kernels: build the dense views, split tasks, call.

Each class wraps one compiled function (or numpy calls, for GEMMs and host
data movement) behind the `Kernel` protocol: ``kernel(inputs, outputs)``
writes into the preallocated outputs.
"""

from __future__ import annotations

import math

import numpy as np

from rlx.backends.base import KernelInfo
from rlx.backends.common.nest import Access, LoopNest
from rlx.backends.common.spec import OUT, AttentionSpec, GemmSpec, HostSpec
from rlx.backends.numba import threads
from rlx.ir.types import numpy_dtype


def _view_maker(acc: Access, nest: LoopNest, itemsize: int):
    dims = acc.dims()
    shape = tuple(nest.shape[d] for d in dims) or (1,)
    strides = tuple(acc.strides[d] * itemsize for d in dims) or (0,)
    offset = acc.offset * itemsize

    def make(buf: np.ndarray) -> np.ndarray:
        return np.ndarray(shape, buf.dtype, buffer=buf, offset=offset, strides=strides)
    return make


class NestKernel:
    """An elementwise or norm kernel: fn(task_lo, task_hi, *dense views)."""

    def __init__(self, fn, nest: LoopNest, in_dtypes, out_dtypes, n_tasks: int, cost: int,
                 info: KernelInfo):
        self.fn = fn
        self.info = info
        self.n_tasks = n_tasks
        self.work = nest.numel * cost
        self.inputs = [(a.arg, _view_maker(a, nest, numpy_dtype(dt).itemsize))
                       for a, dt in zip(nest.inputs, in_dtypes)]
        self.outputs = [(a.arg, _view_maker(a, nest, numpy_dtype(dt).itemsize))
                        for a, dt in zip(nest.outputs, out_dtypes)]

    def views(self, inputs, outputs) -> tuple:
        arrays = [make(outputs[0] if arg == OUT else inputs[arg]) for arg, make in self.inputs]
        arrays += [make(outputs[arg]) for arg, make in self.outputs]
        return tuple(arrays)

    def __call__(self, inputs, outputs) -> None:
        threads.run_tasks(self.fn, self.n_tasks, self.views(inputs, outputs), self.work)


class GemmKernel:
    """matmul into the output (BLAS through numpy, or the native kernel), then the epilogue."""

    def __init__(self, spec: GemmSpec, epilogue: NestKernel | None, native, info: KernelInfo):
        self.spec = spec
        self.epilogue = epilogue
        self.native = native
        self.info = info

    def __call__(self, inputs, outputs) -> None:
        s = self.spec
        a, b = inputs[s.a], inputs[s.b]
        if s.transpose_a:
            a = np.swapaxes(a, -1, -2)
        if s.transpose_b:
            b = np.swapaxes(b, -1, -2)
        out = outputs[0].reshape(s.out_shape)
        if self.native is not None:
            self.native(a, b, out)
        else:
            np.matmul(a, b, out=out)
        if self.epilogue is not None:
            self.epilogue(inputs, outputs)


class NativeGemm:
    """Batched product with the generated loop kernel (profile gemm = "native")."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, a, b, out) -> None:
        batch = out.shape[:-2]
        m, n = out.shape[-2:]
        k = a.shape[-1]
        a3 = np.ascontiguousarray(np.broadcast_to(a, batch + (m, k))).reshape(-1, m, k)
        b3 = np.ascontiguousarray(np.broadcast_to(b, batch + (k, n))).reshape(-1, k, n)
        c3 = out.reshape(-1, m, n)
        threads.run_tasks(self.fn, c3.shape[0] * m, (a3, b3, c3), c3.size * k)


#: score-block elements per step of blocked attention (bounds the scratch to ~8 MB)
ATTENTION_SCRATCH = 1 << 21


class AttentionKernel:
    """Blocked softmax(q kᵀ·scale + rel-pos) v: per batch group and block of query rows,
    GEMM into a scratch block, bias + softmax in place, GEMM into the output."""

    def __init__(self, spec: AttentionSpec, softmax_fn, info: KernelInfo):
        self.spec = spec
        self.fn = softmax_fn
        self.info = info
        b, nq, _ = spec.q_shape
        nk = spec.k_shape[1]
        self.block = min(spec.block, nq)
        self.group = max(1, min(b, ATTENTION_SCRATCH // (self.block * nk)))
        self._scratch = None
        self._empty = np.zeros((1, 1, 1), np.float32)

    def __call__(self, inputs, outputs) -> None:
        q, k, v, rh, rw = inputs
        out = outputs[0]
        bsz, nq, _ = q.shape
        nk = k.shape[1]
        if self._scratch is None:
            self._scratch = np.empty(self.group * self.block * nk, np.float32)
        has_rel = rh is not None
        kt = np.swapaxes(k, 1, 2)
        scale = np.float32(self.spec.scale)
        for b0 in range(0, bsz, self.group):
            b1 = min(bsz, b0 + self.group)
            for r0 in range(0, nq, self.block):
                r1 = min(nq, r0 + self.block)
                n, rows = b1 - b0, r1 - r0
                s = self._scratch[:n * rows * nk].reshape(n, rows, nk)
                np.matmul(q[b0:b1, r0:r1], kt[b0:b1], out=s)
                h = rh[b0:b1, r0:r1] if has_rel else self._empty
                w = rw[b0:b1, r0:r1] if has_rel else self._empty
                threads.run_tasks(self.fn, n * rows, (s, h, w, scale, has_rel), s.size * 4)
                np.matmul(s, v[b0:b1], out=out[b0:b1, r0:r1])


class HostKernel:
    """Data movement through numpy (pad, concat, gather, im2col, reductions, fills)."""

    def __init__(self, spec: HostSpec, info: KernelInfo):
        self.spec = spec
        self.info = info

    def __call__(self, inputs, outputs) -> None:
        op, at, out = self.spec.op, self.spec.attrs, outputs[0]
        if op == "pad":
            (x,) = inputs
            p = at["pads"]
            out.fill(at["value"])
            out[tuple(slice(p[2 * i], p[2 * i] + d) for i, d in enumerate(x.shape))] = x
        elif op == "concat":
            np.concatenate(inputs, axis=at["axis"], out=out)
        elif op == "gather":
            table, idx = inputs
            np.copyto(out, np.take(table, idx, axis=at["axis"]))
        elif op == "im2col":
            from rlx.ir.ops.conv import im2col_reference

            np.copyto(out, im2col_reference(inputs[0], at["kernel"], at["stride"],
                                            at["padding"], at["dilation"]))
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


def cost_of(program) -> int:
    """Rough per-element work of a scalar program (transcendentals count more)."""
    heavy = {"exp", "erf", "tanh", "log", "sin", "cos", "pow", "sqrt", "div"}
    return 1 + sum(8 if i.prim in heavy else 1 for i in program.instrs)


def numel(shape) -> int:
    return math.prod(shape)
