"""The llvm blocked attention kernel on the shapes its register tiles and chunks cut unevenly.

The kernel's structure depends on the sizes (`rlx.backends.llvm.attention.plan`):
query blocks of a few vectors (a short last block), score tiles of a few keys
(a remainder tile), P.V tiles of a few channels (a remainder tile), key chunks
of `CHUNK_KEYS` (a short last chunk), and a prefetch of the next key tile
that runs past the last key. Each case here puts a size just off one of those
multiples -- head dims 64, 96 and 128 (the models'), 56 (hiera_b+), odd ones,
value widths unlike the key width, key counts across a chunk boundary, one
query or one key -- and compares with the reference interpreter, at the
host's vector width and at 128 bits (4 lanes: other block and tile sizes).
The operands are read both as plain tensors and as strided views into one
packed qkv projection (how the SAM encoders pass them; the prefetch path).
"""

from __future__ import annotations

import pytest

from rlx.backends.llvm import attention
from rlx.backends.llvm.target import target_for
from rlx.backends.llvm.vecir import vector_config
from tests.backends.test_llvm_ops import LLVM, _kinds
from tests.backends.test_numba_ops import check

WIDTHS = {"host": LLVM.replace(name="llvm-attn"),
          "128": LLVM.replace(vector_bits=128, name="llvm-attn-128")}


def _plain(nb, nq, nk, d, dv, scale):
    def build(b):
        q = b.input("q", (nb, nq, d))
        k = b.input("k", (nb, nk, d))
        v = b.input("v", (nb, nk, dv))
        b.output(b.attention(q, k, v, scale=scale))
        return {}
    return build


def _packed(n, heads, d, scale):
    """hiera's layout: q, k, v heads-first views into one [n, 3 * heads * d] projection."""
    def build(b):
        qkv = b.reshape(b.input("qkv", (1, n, 3 * heads * d)), shape=(1, n, 3, heads, d))

        def heads_first(j):
            t = b.reshape(b.slice_axis(qkv, 2, j, j + 1), shape=(1, n, heads, d))
            return b.reshape(b.transpose(t, perm=(0, 2, 1, 3)), shape=(heads, n, d))
        b.output(b.attention(heads_first(0), heads_first(1), heads_first(2), scale=scale))
        return {}
    return build


@pytest.mark.parametrize("width", sorted(WIDTHS))
@pytest.mark.parametrize("nb,nq,nk,d,dv", [
    (2, 37, 131, 64, 64),    # ragged queries, keys one chunk + 3, SAM v1's head dim
    (1, 70, 200, 96, 96),    # hiera_t's head dim; 70 queries = 4 blocks of 16 + 6
    (2, 17, 129, 128, 128),  # head dim 128 (6 x 21 + 2 channel tail)
    (3, 9, 61, 56, 56),      # hiera_b+'s head dim
    (2, 5, 7, 5, 3),         # tiny, every tile a remainder, dv != d
    (1, 1, 300, 13, 20),     # one query row
    (2, 33, 1, 16, 8),       # one key: the softmax is exactly 1
])
def test_attention_ragged_shapes(width, nb, nq, nk, d, dv):
    compiled = check(_plain(nb, nq, nk, d, dv, scale=d ** -0.5), WIDTHS[width], atol=2e-6)
    assert _kinds(compiled) == ["llvm.attention"]


@pytest.mark.parametrize("width", sorted(WIDTHS))
@pytest.mark.parametrize("n,heads,d", [(150, 2, 96), (77, 3, 64), (40, 1, 128)])
def test_attention_on_a_packed_qkv_projection(width, n, heads, d):
    compiled = check(_packed(n, heads, d, scale=d ** -0.5), WIDTHS[width], atol=2e-6)
    assert _kinds(compiled) == ["llvm.attention"]
    k = compiled.plan.kernels[0]
    assert k.n_operand_ptrs == 1  # q, k and v read in place from the one projection


def test_attention_with_large_scores_stays_finite():
    # scale 8 on N(0, 1) operands: scores of several hundred, e^(s - max) underflows for
    # most keys; the running max and the float64 row sums must keep every row finite
    compiled = check(_plain(2, 23, 150, 32, 16, scale=8.0), LLVM, rtol=1e-4, atol=1e-5)
    assert _kinds(compiled) == ["llvm.attention"]


def test_thin_channel_remainders_are_balanced():
    # a 2-channel last tile has 4 accumulators (latency-bound): 6 + 2 becomes 4 + 4
    assert attention.tail_split(56, 6) == [4, 4] and attention.tail_split(128, 6) == [4, 4]
    assert attention.tail_split(7, 6) == [4, 3]
    assert attention.tail_split(64, 6) == [] and attention.tail_split(96, 6) == []
    assert attention.tail_split(5, 6) == []  # fewer channels than a tile: one tile as is


def test_block_rows_follow_the_register_file():
    """AVX2 (16 registers): 2-vector blocks, 6 keys per score tile; AVX-512 (32): 4 x 6."""
    from rlx.backends.common.spec import AttentionSpec

    spec = AttentionSpec((4, 4096, 96), (4, 4096, 96), (4, 4096, 96), None, 0.1)
    avx2 = attention.plan(spec, vector_config(target_for("cpu-avx2")))
    assert (avx2.rows, avx2.kt[avx2.nv_full], avx2.dt[avx2.nv_full]) == (16, 6, 6)
    avx512 = attention.plan(spec, vector_config(target_for("cpu-avx512")))
    assert (avx512.rows, avx512.kt[avx512.nv_full]) == (64, 6)
    # accumulators + operand vectors + a broadcast and a temporary fit AVX2's 16 registers
    assert avx2.kt[2] * 2 + 2 + 2 <= 16
