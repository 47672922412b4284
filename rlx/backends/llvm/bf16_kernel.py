"""Runtime side of the bf16 GEMM: operands rounded and packed, then the generated kernel.

A is rounded to bf16 and packed by the kernel's tasks into a scratch block of
the calling thread (`scratch`: one per thread, shared by every bf16 kernel,
which run one at a time in a plan), unless batch entries share rows of A
(then numpy packs it here, once per call). B is packed by a generated
parallel kernel (`gemm_bf16.pack_b_module`, ~20x numpy's speed on 2 cores):
a B computed by the graph (e.g. a convolution's im2col columns) on every call
into the thread's other scratch block, a weight once into its own array. B is
packed once per bound array when it is a weight of the graph, when the plan
binds its weights (`bind_weights`): the packed
bf16 copy (half the bytes of the f32 weight) is kept by the kernel, keyed
by the very array object bound, so re-binding other weights packs again.
A B computed by the graph (an activation) is packed on every call.
The packed layouts are `rlx.backends.llvm.bf16pack`'s.

AMX kernels ask Linux for tile state once per process before their first
call (`rlx.backends.llvm.amx.request_permission`).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from rlx.backends.llvm.bf16pack import pack_a, pack_b
from rlx.backends.llvm.gemm_bf16 import bf16_plan
from rlx.backends.llvm.kernels import CompiledKernel, gemm_operand


class Bf16GemmKernel(CompiledKernel):
    """The bf16 GEMM over packed operands (passed after the output)."""

    def __init__(self, *args, spec, unit: str, threads: int, b_is_weight: bool,
                 packer=None, **kw):
        super().__init__(*args, **kw)
        #: the generated parallel packing of B (`gemm_bf16.pack_b_module`); None: numpy
        self.packer = packer
        self.spec = spec
        self.unit = unit
        self.plan = bf16_plan(spec, threads, unit)
        self.b_is_weight = b_is_weight
        self._packed_b: tuple | None = None  # (weak reference to the bound B, packed B)
        self._lock = threading.Lock()
        self._ready = unit != "amx"

    def packed_weight(self, b_buf: np.ndarray) -> np.ndarray:
        """B packed (cached for the bound weight's memory: `b_buf` may be a fresh view of
        it on every call, e.g. the reshape of a convolution's weight)."""
        s = self.spec
        hit = self._packed_b
        key = _memory(b_buf)
        if hit is not None and hit[0]() is key[0] and hit[1] == key[1:]:
            return hit[2]
        b = gemm_operand(b_buf, s.b_view, s.b_shape, s.transpose_b)
        if self.packer is not None:
            bp = self.plan
            n = b.size // max(1, bp.p.k * bp.p.n) * bp.kp * bp.np_
            # an activation into the thread's scratch, a weight into its own (kept) array
            packed = np.empty(n, np.uint16) if self.b_is_weight else scratch("b", n)
            self.packer([b], [packed])
        else:
            packed = pack_b(b, self.plan.layout)
        if self.b_is_weight:
            with self._lock:
                self._packed_b = (weakref.ref(key[0]), key[1:], packed)
        return packed

    def bind_weights(self, inputs) -> None:
        """At bind time (`rlx.runtime.plan.ExecutablePlan.bind`): pack B if it is a weight,
        so the first call does not pay for it."""
        b_buf = inputs[self.spec.b]
        if self.unusable:  # code for another CPU: it would not run here (nor the packer)
            return
        if self.b_is_weight and b_buf is not None:  # None: a view made per call (reshape)
            self.packed_weight(b_buf)

    @property
    def packed_bytes(self) -> int:
        """Bytes of the cached packed weight (0 before the first call)."""
        return self._packed_b[2].nbytes if self._packed_b is not None else 0

    def prepare(self, inputs, outputs):
        if not self._ready:
            from rlx.backends.llvm.amx import request_permission

            request_permission()
            self._ready = True
        s, bp = self.spec, self.plan
        a = gemm_operand(inputs[s.a], s.a_view, s.a_shape, s.transpose_a)
        if bp.convert_a:
            entries = a.size // max(1, bp.p.m * bp.p.k)
            packed = scratch("a", entries * bp.mp * bp.kp)
        else:
            packed = pack_a(a, bp.p.m, bp.layout)
        return list(inputs) + list(outputs) + [a, packed, self.packed_weight(inputs[s.b])]


def _memory(a: np.ndarray) -> tuple:
    """(the array owning `a`'s memory, data address, shape, strides): equal for every view
    of the same bytes read the same way."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root, a.__array_interface__["data"][0], a.shape, a.strides


_local = threading.local()


def scratch(which: str, n: int) -> np.ndarray:
    """The calling thread's packed-operand block `which` ("a" or "b"): at least n uint16,
    64-byte aligned (AMX tile rows), grown on demand and shared by the bf16 kernels this
    thread runs (one at a time)."""
    buf = getattr(_local, which, None)
    if buf is None or buf.size < n:
        raw = np.empty(n + 32, np.uint16)
        skip = (-raw.__array_interface__["data"][0] % 64) // 2
        buf = raw[skip:skip + n]
        setattr(_local, which, buf)
    return buf[:n]
