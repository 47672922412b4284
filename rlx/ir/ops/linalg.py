"""Matrix ops: batched matmul, linear layers, and scaled-dot-product attention.

`attention` is kept as one op at HIR level so that a backend can run it as a
blocked kernel that never materializes the full score matrix; a lowering pass
rewrites it to matmul + softmax + matmul for backends (or fusion levels) that
do not. It optionally takes a decomposed relative-position bias (MViTv2 / SAM):
``score[b, i, y * kw + x] += rel_h[b, i, y] + rel_w[b, i, x]``.
"""

from __future__ import annotations

import numpy as np

from rlx.ir.ops.registry import Attr, define, fail, same_dtype
from rlx.ir.types import TensorType, broadcast_shapes


def _mm_dims(a_shape, b_shape, ta, tb):
    m, k1 = (a_shape[-1], a_shape[-2]) if ta else (a_shape[-2], a_shape[-1])
    k2, n = (b_shape[-1], b_shape[-2]) if tb else (b_shape[-2], b_shape[-1])
    return m, k1, k2, n


def _matmul_infer(ins, attrs):
    a, b = ins
    if a.rank < 2 or b.rank < 2:
        fail("matmul", "operands must have rank >= 2", a, b)
    if a.dtype != b.dtype:
        fail("matmul", f"dtypes differ: {a.dtype} vs {b.dtype}", a, b)
    m, k1, k2, n = _mm_dims(a.shape, b.shape, attrs["transpose_a"], attrs["transpose_b"])
    if k1 != k2:
        fail("matmul", f"contraction sizes differ: {k1} vs {k2}", a, b)
    try:
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except Exception:
        fail("matmul", "batch dimensions do not broadcast", a, b)
    return [TensorType(batch + (m, n), a.dtype)]


#: what a product computes in: f32, or bf16 (operands rounded to bfloat16, round to nearest
#: even; products and sums in f32 -- a bf16 x bf16 product is exact in f32). Set by the
#: precision pass (`rlx.passes.precision`); a backend's bf16 kernel must match exactly this.
PRECISION = Attr("str", "f32", choices=("f32", "bf16"),
                 doc="f32, or bf16 operands with f32 accumulation")


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 `x` rounded to the nearest bfloat16 (ties to even), as float32; NaN stays
    NaN, values past the largest bf16 become inf (as hardware conversion does)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (rounded & np.uint32(0xFFFF0000)).view(np.float32)
    nan = np.isnan(x)
    if nan.any():
        out = np.where(nan, x, out)
    return out


def _operands(ins, attrs):
    """The product's operands as it computes on them (rounded to bf16 if it says so)."""
    if attrs.get("precision", "f32") == "bf16":
        return [round_bf16(x) if x is not None and x.dtype == np.float32 else x for x in ins]
    return list(ins)


def _matmul_ref(ins, attrs):
    a, b = _operands(ins, attrs)
    if attrs["transpose_a"]:
        a = np.swapaxes(a, -1, -2)
    if attrs["transpose_b"]:
        b = np.swapaxes(b, -1, -2)
    return [np.matmul(a, b)]


def _matmul_flops(ins, outs, attrs):
    a, b = ins
    _, k, _, _ = _mm_dims(a.shape, b.shape, attrs["transpose_a"], attrs["transpose_b"])
    return 2 * outs[0].numel * k


define("matmul", ["a", "b"],
       {"transpose_a": Attr("bool", False), "transpose_b": Attr("bool", False),
        "precision": PRECISION},
       infer=_matmul_infer, reference=_matmul_ref, category="gemm", flops=_matmul_flops,
       doc="batched matrix product with numpy broadcasting of the batch dims; "
       "transpose_a/b swap the last two dims of an operand")


def _linear_infer(ins, attrs):
    x, w, b = ins
    if x.rank < 1:
        fail("linear", "input must have a feature dim", x, w)
    same_dtype("linear", x, w, b)
    if w.rank != 2:
        fail("linear", "weight must be [out_features, in_features]", x, w)
    if x.shape[-1] != w.shape[1]:
        fail("linear", f"input features {x.shape[-1]} != weight in_features {w.shape[1]}", x, w)
    if b is not None and b.shape != (w.shape[0],):
        fail("linear", f"bias must be [{w.shape[0]}]", w, b)
    return [TensorType(x.shape[:-1] + (w.shape[0],), x.dtype)]


def _linear_ref(ins, attrs):
    x, w, b = ins
    y = np.matmul(x, w.T)
    if b is not None:
        y = y + b
    return [y.astype(x.dtype, copy=False)]


define("linear", ["x", "weight", "bias?"], {}, infer=_linear_infer, reference=_linear_ref,
       category="gemm", flops=lambda i, o, a: 2 * o[0].numel * i[1].shape[1],
       doc="x @ weight.T + bias, weight in PyTorch's [out, in] layout")


def _attention_infer(ins, attrs):
    q, k, v, rh, rw = ins
    for t in (q, k, v):
        if t.rank != 3:
            fail("attention", "q, k, v must be [batch, tokens, dim]", q, k, v)
    if q.shape[0] != k.shape[0] or k.shape[0] != v.shape[0]:
        fail("attention", "batch sizes differ", q, k, v)
    if q.shape[2] != k.shape[2]:
        fail("attention", "q and k head dims differ", q, k)
    if k.shape[1] != v.shape[1]:
        fail("attention", "k and v token counts differ", k, v)
    if k.shape[1] == 0:
        fail("attention", "softmax over zero keys is undefined", q, k, v)
    if (rh is None) != (rw is None):
        fail("attention", "rel_h and rel_w come together", rh, rw)
    same_dtype("attention", q, k, v, rh, rw)
    if rh is not None:
        b, nq = q.shape[0], q.shape[1]
        if rh.shape[:2] != (b, nq) or rw.shape[:2] != (b, nq) or rh.rank != 3 or rw.rank != 3:
            fail("attention", f"rel_h/rel_w must be [{b}, {nq}, k_h] / [{b}, {nq}, k_w]", rh, rw)
        if rh.shape[2] * rw.shape[2] != k.shape[1]:
            fail("attention", f"k_h * k_w = {rh.shape[2]}*{rw.shape[2]} != {k.shape[1]} keys",
                 k, rh, rw)
    return [TensorType((q.shape[0], q.shape[1], v.shape[2]), q.dtype)]


def attention_reference(q, k, v, rel_h, rel_w, scale, chunk=4, precision="f32"):
    """softmax(scale * q k^T + bias) v, a few batch entries at a time to bound memory.

    `precision` bf16: both products take bf16 operands (q, k, v and the normalized
    probabilities rounded), accumulate in f32; scale, bias and softmax stay f32."""
    bf16 = precision == "bf16" and q.dtype == np.float32
    if bf16:
        q, k, v = round_bf16(q), round_bf16(k), round_bf16(v)
    out = np.empty((q.shape[0], q.shape[1], v.shape[2]), dtype=q.dtype)
    for s in range(0, q.shape[0], chunk):
        e = slice(s, s + chunk)
        score = np.matmul(q[e], np.swapaxes(k[e], -1, -2)) * np.float32(scale)
        if rel_h is not None:
            kh, kw = rel_h.shape[2], rel_w.shape[2]
            score = score.reshape(score.shape[0], score.shape[1], kh, kw)
            score += rel_h[e][:, :, :, None] + rel_w[e][:, :, None, :]
            score = score.reshape(score.shape[0], score.shape[1], kh * kw)
        score -= score.max(axis=-1, keepdims=True)
        np.exp(score, out=score)
        score /= score.sum(axis=-1, keepdims=True)
        out[e] = np.matmul(round_bf16(score) if bf16 else score, v[e])
    return out


def _attention_ref(ins, attrs):
    q, k, v, rh, rw = ins
    return [attention_reference(q, k, v, rh, rw, attrs["scale"],
                                precision=attrs.get("precision", "f32"))]


def _attention_flops(ins, outs, attrs):
    q, k, v = ins[:3]
    b, nq, d = q.shape
    nk, dv = k.shape[1], v.shape[2]
    return b * nq * nk * (2 * d + 2 * dv + 5)


define("attention", ["q", "k", "v", "rel_h?", "rel_w?"],
       {"scale": Attr("float"), "precision": PRECISION},
       infer=_attention_infer, reference=_attention_ref, category="attention",
       flops=_attention_flops,
       doc="softmax(scale * q @ k^T [+ decomposed rel-pos bias]) @ v over [batch, tokens, dim]")
