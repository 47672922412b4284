"""lower-attention: attention -> matmul, scale, rel-pos bias, softmax, matmul (when asked)."""

from __future__ import annotations

import pytest

from rlx.ir import GraphBuilder
from rlx.passes import PassOptions
from tests.support.opcheck import check_pass

ON = PassOptions(lower_attention=True)


def _attention(rel_pos: bool, nq=6, nk=6):
    b = GraphBuilder("attn")
    q = b.input("q", (3, nq, 4))
    k = b.input("k", (3, nk, 4))
    v = b.input("v", (3, nk, 5))
    extra = (b.input("rel_h", (3, nq, 2)), b.input("rel_w", (3, nq, nk // 2))) if rel_pos else ()
    b.output(b.attention(q, k, v, *extra, scale=0.35))
    return b.build()


@pytest.mark.parametrize("rel_pos", [False, True])
def test_attention_is_decomposed_when_the_options_ask(rel_pos):
    new = check_pass("lower-attention", _attention(rel_pos), ON)
    counts = new.op_counts()
    assert "attention" not in counts
    assert counts["matmul"] == 2 and counts["softmax"] == 1 and counts["mul"] == 1
    assert counts.get("add", 0) == (2 if rel_pos else 0)
    assert all(n.attrs["axis"] == 2 for n in new.nodes if n.op == "softmax")


def test_cross_attention_with_different_token_counts():
    new = check_pass("lower-attention", _attention(False, nq=3, nk=8), ON)
    assert "attention" not in new.op_counts()


def test_attention_is_kept_when_the_backend_runs_it_blocked():
    g = _attention(True)
    new = check_pass("lower-attention", g, PassOptions(lower_attention=False), exact=True)
    assert new.op_counts() == {"attention": 1}
