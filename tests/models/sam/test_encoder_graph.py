"""The encoder/neck HIR builders: structure, weight names, rel-pos tables, lowering.

Cheap tests (graphs are built, small ones run on the reference interpreter);
the numerical parity against the official model lives in the parity files.
"""

import numpy as np
import pytest
import torch

from tests.support import official_sam  # first: installs the torchvision shim

from models.sam.config import CONFIGS, expected_state_dict_shapes, small_config
from models.sam.debug import DebugOptions
from models.sam.encoder import build_encoder, build_neck, rel_pos_table
from rlx.backends.reference import run_graph
from rlx.ir import GraphBuilder
from rlx.passes import PassOptions, default_pipeline
from rlx.passes.manager import run_passes
from rlx.runtime.compiler import lower
from rlx.runtime.profile import PRESETS
from segment_anything.modeling.image_encoder import get_rel_pos
from tests.models.sam.fixtures_encoder import metrics, small_input

OFF = DebugOptions()


# ---- relative-position tables ---------------------------------------------------------------

def _table_graph(length, channels, q, k):
    b = GraphBuilder("rel")
    w = b.weight("rel_pos", (length, channels))
    b.output(rel_pos_table(b, w, q, k))
    return b.build()


def _exact_rel_pos(table, q, k):
    """get_rel_pos in float64: linear resize (align_corners=False), then the index rule."""
    length, dist = table.shape[0], 2 * max(q, k) - 1
    t = table.astype(np.float64)
    if length != dist:
        src = np.maximum((np.arange(dist) + 0.5) * (length / dist) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), length - 1)
        i1 = np.minimum(i0 + 1, length - 1)
        frac = (src - i0)[:, None]
        t = t[i0] * (1.0 - frac) + t[i1] * frac
    sq, sk = max(k / q, 1.0), max(q / k, 1.0)
    idx = np.arange(q)[:, None] * sq - np.arange(k)[None, :] * sk + (k - 1) * sk
    return t[idx.astype(np.int64)]


@pytest.mark.parametrize("q, k, length", [
    (14, 14, 27),   # windowed block, no resize
    (64, 64, 127),  # global block, no resize
    (16, 16, 27),   # table shorter than needed: linear upsampling
    (64, 64, 27),   # a windowed table used globally (RLX_SAM_DEBUG_FORCE_GLOBAL)
    (5, 5, 27),     # longer than needed: downsampling
    (4, 8, 15),     # q != k: scaled coordinates
    (8, 4, 9),      # q != k and a resize
    (1, 1, 5),
])
def test_rel_pos_table_matches_official_get_rel_pos(q, k, length):
    rng = np.random.default_rng(q * 100 + k)
    table = rng.standard_normal((length, 6)).astype(np.float32)
    ref = get_rel_pos(q, k, torch.from_numpy(table)).numpy()
    g = _table_graph(length, 6, q, k)
    got = run_graph(g, [], {"rel_pos": table})[0]
    assert got.shape == ref.shape == (q, k, 6)
    if length == 2 * max(q, k) - 1:
        assert np.array_equal(got, ref)  # a pure gather: bit-exact
    else:
        # torch computes the source coordinate in float32 (errors ~4e-6 here); rlx's
        # interpolation weights come from float64, so rlx is the closer one to exact.
        exact = _exact_rel_pos(table, q, k)
        assert np.abs(got - exact).max() <= 5e-7
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [27, 11])
def test_rel_pos_table_folds_into_derived_weights(length):
    g = _table_graph(length, 4, 14, 14)
    lowered = run_passes(g, default_pipeline(PassOptions()))
    assert lowered.nodes == []  # every op became a derived weight, computed at bind time
    ops = {n.op for n in lowered.derived}
    assert "gather" in ops and "arange" in ops
    assert ("resize_bilinear" in ops) == (length != 27)
    table = np.random.default_rng(0).standard_normal((length, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(lowered, [], {"rel_pos": table})[0],
                                  run_graph(g, [], {"rel_pos": table})[0])


def test_encoder_rel_pos_work_is_folded_out_of_the_per_image_graph():
    c = small_config()
    for debug in (OFF, DebugOptions(force_global=True), DebugOptions(zero_relh=True)):
        lowered, _ = lower(build_encoder(c, debug), PRESETS["reference"])
        per_image = {n.op for n in lowered.nodes}
        assert not per_image & {"arange", "gather", "resize_bilinear", "const", "cast"}, per_image
        derived = {n.op for n in lowered.derived}
        assert "gather" in derived
        assert ("resize_bilinear" in derived) == debug.force_global


# ---- weights and structure ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "small"])
def test_subgraph_weights_are_the_official_image_encoder_state_dict(name):
    c = CONFIGS.get(name) or small_config()
    expected = {k: v for k, v in expected_state_dict_shapes(c).items()
                if k.startswith("image_encoder.")}
    enc, neck = build_encoder(c, OFF), build_neck(c)
    declared = {k: v.shape for g in (enc, neck) for k, v in g.weights.items()}
    assert declared == expected
    assert not set(enc.weights) & set(neck.weights)
    g = c.image_embedding_size
    assert enc.inputs[0].shape == (1, 3, c.image_size, c.image_size)
    assert enc.outputs[0].shape == neck.inputs[0].shape == (1, g, g, c.encoder_embed_dim)
    assert neck.outputs[0].shape == (1, c.out_chans, g, g)


def test_vit_b_block_kinds():
    enc = build_encoder("vit_b", OFF)
    counts = enc.op_counts()
    assert counts["attention"] == 12 and counts["gelu"] == 12
    assert counts["window_partition"] == counts["window_unpartition"] == 8  # 12 - 4 global
    assert counts["layer_norm"] == 24 and counts["linear"] == 48 and counts["conv2d"] == 1
    wp = [n for n in enc.nodes if n.op == "window_partition"]
    assert all(n.output.shape == (25, 14, 14, 768) for n in wp)  # 64 -> 70: 5x5 windows
    att = [n.output.shape for n in enc.nodes if n.op == "attention"]
    assert att.count((300, 196, 64)) == 8 and att.count((12, 4096, 64)) == 4
    gelu = [n for n in enc.nodes if n.op == "gelu"]
    assert all(n.attrs["approximate"] == "none" for n in gelu)
    ln = [n for n in build_neck("vit_b").nodes if n.op == "layer_norm"]
    assert [n.attrs["axis"] for n in ln] == [1, 1] and all(n.attrs["eps"] == 1e-6 for n in ln)


def test_debug_options_change_the_graph():
    c = small_config()
    assert build_encoder(c, DebugOptions(depth=2)).op_counts()["attention"] == 2
    no_rel = build_encoder(c, DebugOptions(no_relpos=True))
    assert not any("rel_pos" in k for k in no_rel.weights)
    assert all(n.inputs[3] is None for n in no_rel.nodes if n.op == "attention")
    glob = build_encoder(c, DebugOptions(force_global=True))
    assert "window_partition" not in glob.op_counts()
    zero = build_encoder(c, DebugOptions(zero_relh=True))
    # the table is multiplied by 0, every rel-pos op still runs
    muls = [n for n in zero.nodes if n.op == "mul" and n.inputs[0].name.endswith("rel_pos_h")]
    assert len(muls) == c.encoder_depth
    assert all(n.inputs[3] is not None for n in zero.nodes if n.op == "attention")


# ---- lowering keeps the meaning ---------------------------------------------------------------

def test_every_pipeline_stage_computes_the_same_small_encoder():
    """Run the small encoder after each pass on the reference interpreter."""
    c = small_config()
    weights = official_sam.state_dict_numpy(official_sam.build_official(c, seed=3))
    x = small_input(seed=3)
    hir = build_encoder(c, OFF)
    ref = run_graph(hir, [x], weights)[0]
    options = PassOptions(lower_attention=True, verify=True)
    graph = hir
    for name in default_pipeline(options):
        graph = run_passes(graph, [name], options)
        got = run_graph(graph, [x], weights)[0]
        m, r = metrics(got, ref)
        assert r <= 1e-6, f"after {name}: max|d|={m:.2e} relL2={r:.2e}"
    ops = set(graph.op_counts())
    assert not ops & {"conv2d", "linear", "window_partition", "window_unpartition", "attention"}
