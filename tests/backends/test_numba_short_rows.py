"""numba elementwise kernels whose innermost dim is short (rows span several trailing dims).

A depth-to-space shuffle ends in a dim of 2; such kernels walk blocks of
whole rows (`codegen.inner_block_dims`) instead of two-element chunks. These
cases check the index bookkeeping (odometer over the outer dims, per-row
views, operands that vary along only some of the row dims, several tasks
per thread) against the reference interpreter.
"""

from __future__ import annotations

import pytest

from rlx.backends.numba import codegen
from rlx.ir import GraphBuilder
from rlx.runtime.profile import PRESETS
from tests.backends.test_numba_ops import NUMBA, check

ONE_THREAD = PRESETS["numba"].replace(threads=1)


def _kernels(compiled):
    return [k for k in compiled.plan.kernels if k is not None]


@pytest.mark.parametrize("profile", [NUMBA, ONE_THREAD], ids=["2 threads", "1 thread"])
def test_depth_to_space_shuffle(profile):
    def build(b):
        x = b.input("x", (3, 8, 2, 2, 33, 17))
        y = b.transpose(x, perm=(0, 1, 4, 2, 5, 3))  # [3, 8, 33, 2, 17, 2]
        b.output(b.reshape(y, shape=(3, 8, 66, 34)))
        return {}

    compiled = check(build, profile)
    (k,) = _kernels(compiled)
    assert k.nest.shape[-1] == 2 and codegen.inner_block_dims(k.nest) > 1
    assert k.n_tasks == codegen.elementwise_tasks(k.nest) > 1


def test_pixel_shuffle_of_a_gemm_result_with_channel_last():
    """The layout of SAM's token-order mask logits: (h, w, kh, kw, kh2, kw2, m) -> image."""
    def build(b):
        x = b.input("x", (1, 9, 7, 2, 2, 2, 2, 3))
        y = b.transpose(x, perm=(0, 7, 1, 3, 5, 2, 4, 6))
        b.output(b.reshape(y, shape=(1, 3, 36, 28)))
        return {}

    check(build)


def test_broadcast_operands_inside_the_row_dims():
    """Operands vary along the outer dims only, the row dims only, or a mix of both."""
    def build(b):
        x = b.input("x", (5, 70, 3, 2))
        per_row = b.input("per_row", (5, 70, 1, 1))
        per_col = b.input("per_col", (3, 1))
        mixed = b.input("mixed", (5, 1, 1, 2))
        y = b.add(b.mul(x, per_row), per_col)
        b.output(b.sub(y, b.exp(mixed)))
        return {}

    compiled = check(build)
    assert any(codegen.inner_block_dims(k.nest) > 1 for k in _kernels(compiled)
               if hasattr(k, "nest"))


def test_rows_longer_than_a_task_block_and_a_single_row():
    def build(b):
        x = b.input("x", (2, 700, 3))  # 2100 elements per row > ROW_BLOCK
        b.output(b.transpose(b.relu(x), perm=(1, 0, 2)))
        return {}

    check(build)

    def build_tiny(b):
        x = b.input("x", (1, 3, 2))
        b.output(b.transpose(x, perm=(0, 2, 1)))
        return {}

    check(build_tiny)


def test_bool_output_and_two_outputs_in_row_blocks():
    def build(b):
        x = b.input("x", (6, 40, 2, 3))
        y = b.transpose(x, perm=(0, 2, 1, 3))
        b.output(b.greater(y, 0.0), b.neg(y))
        return {}

    check(build)


def test_gemm_epilogue_in_row_blocks_is_not_split_by_gemm_rows():
    """A residual read through a transpose keeps the epilogue nest 3-D with a short
    innermost dim (row blocks): the GEMM must not interleave it with its row blocks."""
    def build(b):
        a = b.input("a", (120, 32))
        r = b.input("r", (10, 12, 4))
        w = b.weight("w", (32, 4))
        y = b.reshape(b.matmul(a, w), shape=(12, 10, 4))
        b.output(b.add(y, b.transpose(r, perm=(1, 0, 2))))
        return {}

    compiled = check(build)
    (gemm,) = [k for k in _kernels(compiled) if k.info.kind == "numba.gemm"]
    assert codegen.inner_block_dims(gemm.epilogue.nest) > 1
    assert gemm.tasks_per_row is None


@pytest.mark.parametrize("n", [7, 8, 64, 100, 136, 300])
def test_norms_over_rows_with_tails(n):
    """Row statistics of short rows and of tails after 128-element chunks (8-lane sums)."""
    def build(b):
        x = b.input("x", (37, n))
        w, bias = b.weight("w", (n,)), b.weight("b", (n,))
        b.output(b.gelu(b.layer_norm(b.add(x, 3.0), w, bias, axis=1, eps=1e-6),
                        approximate="none"),
                 b.softmax(b.mul(x, 4.0), axis=1))
        return {}

    check(build, rtol=1e-5, atol=2e-6)
