"""Printer/parser round trip: parse(print(g)) prints identically, verifies, and computes
the same thing -- for one graph per op and for the example model after every pass."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.example import build_classifier, synthetic_weights
from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder, parse, parse_file, print_graph, verify
from rlx.ir.ops import OPS
from rlx.passes import PassOptions
from rlx.passes.registry import PASSES, default_pipeline
from tests.support.opcheck import random_inputs, random_weights, sample_graph


def _roundtrip(g):
    text = print_graph(g)
    again = parse(text)
    verify(again)
    assert print_graph(again) == text
    return again


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_round_trips(op):
    g = sample_graph(op)
    again = _roundtrip(g)
    assert again.nodes[-1].op == op
    assert again.nodes[-1].attrs == g.nodes[-1].attrs
    ins, ws = random_inputs(g), random_weights(g)
    with np.errstate(all="ignore"):
        for a, b in zip(run_graph(g, ins, ws), run_graph(again, ins, ws)):
            np.testing.assert_array_equal(a, b)


def _stages():
    """(stage name, graph) for the example model as built and after each default pass."""
    g = build_classifier(batch=2)
    out = [("built", g)]
    options = PassOptions(lower_attention=True)
    for name in default_pipeline(options):
        g = PASSES[name](g, options)
        out.append((name, g))
    return out


def test_example_model_round_trips_at_every_pipeline_stage():
    w = synthetic_weights(0)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    (want,) = run_graph(build_classifier(batch=2), [x], w)
    stages = _stages()
    assert [s for s, _ in stages][1:] == default_pipeline(PassOptions())
    for stage, g in stages:
        again = _roundtrip(g)
        assert len(again.derived) == len(g.derived), stage
        (got,) = run_graph(again, [x], w)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=stage)
    assert any(g.derived for _, g in stages), "no stage had derived weights to round-trip"


def test_special_values_names_and_outputs_round_trip():
    b = GraphBuilder("odd-names.v2")
    x = b.input("in.0-a", (2, 3))
    w = b.weight("blocks.0.attn.rel_pos_h", (3,))
    with b.scope("blk-1"):
        p = b.pad(x, pads=(0, 0, 1, 1), value=-math.inf)
        q = b.pad(x, pads=(0, 0, 1, 1), value=math.inf)
        r = b.pad(x, pads=(0, 0, 1, 1), value=1e-30)
        n = b.pad(x, pads=(0, 0, 1, 1), value=math.nan)
        c = b.const(-1.5e20, "f64", (2,))
        e = b.layer_norm(x, w, None, eps=1.0000000000000002e-06)
    b.output(p, q, r, n, c, e, x, w, e)
    g = b.build()
    again = _roundtrip(g)
    assert [v.name for v in again.outputs] == [v.name for v in g.outputs]
    assert again.outputs[-1] is again.outputs[5]
    assert math.isnan(again.nodes[3].attrs["value"])
    assert again.nodes[5].attrs["eps"] == 1.0000000000000002e-06


def test_printed_text_is_stable_and_documented_form():
    b = GraphBuilder("mlp")
    x = b.input("x", (8, 16))
    w = b.weight("fc1.weight", (32, 16))
    b.output(b.linear(x, w))
    text = print_graph(b.build())
    assert text == ("graph mlp {\n"
                    "  input %x: f32[8,16]\n"
                    "  weight @fc1.weight: f32[32,16]\n"
                    "  %linear: f32[8,32] = linear(%x, @fc1.weight)\n"
                    "  output %linear\n"
                    "}\n")


def test_parser_accepts_comments_blank_lines_and_explicit_absent_operands(tmp_path):
    text = """
    # a hand-written graph
    graph hand {
      input %x: f32[2,4]      # two rows
      weight @b: f32[4]

      %y: f32[2,4] = layer_norm(%x, _, @b) {eps=0.001}
      %z: f32[2,4] = add(%y, %y) {}
      output %z
    }
    """
    path = tmp_path / "hand.rlx"
    path.write_text(text)
    g = parse_file(path)
    assert g.nodes[0].inputs[1] is None and g.nodes[0].attrs["eps"] == 0.001
    _roundtrip(g)
