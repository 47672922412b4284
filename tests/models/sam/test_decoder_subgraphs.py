"""Each prompt-side subgraph against the official PyTorch module, on random inputs.

Subgraphs: the mask downscaling stack, the dense positional encoding, the
two-way transformer, the output upscaling, the hypernetwork + IoU heads, and
the whole "prompt -> masks" bucket graph against ``MaskDecoder.predict_masks``
fed by the official ``PromptEncoder``. Each runs with the small config and
the real decoder dimensions (the ViT-B/L/H decoders are identical; the
weights come from a re-drawn official ViT-B), on every available backend.
"""

import numpy as np
import pytest
import torch

from models.sam import prompt_encoding as pe
from models.sam.config import CONFIGS, small_config
from models.sam.decoder import (
    build_mlp_heads,
    build_prompt_mask_downscale,
    build_two_way_transformer,
    build_upscale,
    dense_positional_encoding,
)
from models.sam.prompt_graph import build_prompt_to_masks
from rlx.ir import GraphBuilder
from rlx.runtime.compiler import compile_graph
from tests.models.sam.decoder_fixtures import (
    PROFILES,
    assert_close,
    random_inputs,
    small_official,
    t,
)
from tests.support import official_sam


_WEIGHTS = {}


def _case(request, name):
    """(config, official model, prompt/decoder weights as numpy) for "small" or "vit_b"."""
    if name == "small":
        config, model = small_config(), small_official()
    else:
        config, model = CONFIGS["vit_b"], request.getfixturevalue("vit_b_build")[0]
    if name not in _WEIGHTS:
        _WEIGHTS[name] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()
                          if k.startswith(("prompt_encoder.", "mask_decoder."))}
    return config, model, _WEIGHTS[name]


@pytest.fixture(scope="module", params=["small", "vit_b"])
def case(request):
    return _case(request, request.param)


@pytest.fixture(params=PROFILES)
def profile(request):
    return request.param


def _run(graph, profile, weights, inputs):
    return compile_graph(graph, profile, weights)(*inputs)


@torch.no_grad()
def test_mask_downscale(case, profile):
    c, model, w = case
    s = c.mask_input_size
    # Mask prompts are logits of a previous prediction: O(10) values.
    (mask,) = random_inputs([(1, 1, s, s)], seed=1, scale=8.0)
    (got,) = _run(build_prompt_mask_downscale(c), profile, w, [mask])
    ref = model.prompt_encoder.mask_downscaling(t(mask)).numpy()
    assert got.shape == (1, c.prompt_embed_dim, c.image_embedding_size, c.image_embedding_size)
    assert_close(got, ref, f"{c.name} mask downscaling [{profile}]")


@torch.no_grad()
def test_dense_positional_encoding(case, profile):
    c, model, w = case
    b = GraphBuilder("dense_pe")
    b.output(dense_positional_encoding(b, c))
    compiled = compile_graph(b.build(), profile, w)
    # Weight-only: folded into a derived weight, no per-call kernels but the output copy.
    assert not any(n.op in ("sin", "cos", "matmul", "arange") for n in compiled.graph.nodes)
    (got,) = compiled()
    g, d = c.image_embedding_size, c.prompt_embed_dim
    ref = model.prompt_encoder.get_dense_pe().numpy().reshape(1, d, g * g).transpose(0, 2, 1)
    assert_close(got, ref, f"{c.name} dense PE [{profile}]", rel=1e-5)
    host = pe.dense_pe(w[pe.GAUSSIAN_KEY], (g, g)).reshape(1, d, g * g).transpose(0, 2, 1)
    assert_close(got, host, f"{c.name} dense PE vs host prompt_encoding", rel=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("config_name,num_tokens", [("small", 7), ("small", 10), ("vit_b", 9)])
def test_two_way_transformer(request, profile, config_name, num_tokens):
    c, model, w = _case(request, config_name)
    d, g = c.prompt_embed_dim, c.image_embedding_size
    emb, pos, points = random_inputs([(1, d, g, g), (1, d, g, g), (1, num_tokens, d)], seed=2)
    q, k = _run(build_two_way_transformer(c, num_tokens), profile, w, [emb, pos, points])
    rq, rk = model.mask_decoder.transformer(t(emb), t(pos), t(points))
    assert_close(q, rq.numpy(), f"{c.name} two-way transformer queries N={num_tokens} [{profile}]")
    assert_close(k, rk.numpy(), f"{c.name} two-way transformer keys N={num_tokens} [{profile}]")


@torch.no_grad()
def test_upscale(case, profile):
    c, model, w = case
    d, g = c.prompt_embed_dim, c.image_embedding_size
    (x,) = random_inputs([(1, d, g, g)], seed=3)
    compiled = compile_graph(build_upscale(c), profile, w)
    # The transposed convolutions were lowered by the general pass (matmul + depth-to-space).
    assert "conv_transpose2d" in {n.op for n in compiled.hir.nodes}
    assert "conv_transpose2d" not in {n.op for n in compiled.graph.nodes}
    (got,) = compiled(x)
    ref = model.mask_decoder.output_upscaling(t(x)).numpy()
    assert got.shape == (1, d // 8, 4 * g, 4 * g)
    assert_close(got, ref, f"{c.name} output upscaling [{profile}]")


@torch.no_grad()
def test_mlp_heads(case, profile):
    c, model, w = case
    m = c.num_mask_tokens
    (tokens,) = random_inputs([(1, 1 + m, c.prompt_embed_dim)], seed=4)
    hyper, iou = _run(build_mlp_heads(c), profile, w, [tokens])
    dec = model.mask_decoder
    tt = t(tokens)
    ref_hyper = torch.stack([dec.output_hypernetworks_mlps[i](tt[:, 1 + i]) for i in range(m)],
                            dim=1).numpy()
    ref_iou = dec.iou_prediction_head(tt[:, 0]).numpy()
    assert_close(hyper, ref_hyper, f"{c.name} hypernetwork MLPs [{profile}]")
    assert_close(iou, ref_iou, f"{c.name} IoU head [{profile}]")


def _official_prompt(model, c, kind, rng):
    """(sparse, dense) from the official PromptEncoder, and our host sparse embedding."""
    s = c.image_size
    coords = labels = boxes = masks = None
    if kind in ("points", "box_points"):
        coords = rng.uniform(0, s, size=(1, 3, 2)).astype(np.float32)
        labels = np.array([[1, 0, 1]])
    if kind in ("box", "box_points", "box_mask"):
        x0, y0 = rng.uniform(0, s / 2, size=2)
        boxes = np.array([[x0, y0, x0 + s / 3, y0 + s / 4]], dtype=np.float32)
    if kind in ("mask", "box_mask"):
        masks = (8.0 * rng.standard_normal((1, 1, c.mask_input_size, c.mask_input_size))
                 ).astype(np.float32)
    with torch.no_grad():
        sparse_t, dense_t = model.prompt_encoder(
            points=(t(coords), t(labels)) if coords is not None else None,
            boxes=t(boxes) if boxes is not None else None,
            masks=t(masks) if masks is not None else None)
    return sparse_t, dense_t, masks


# Every prompt kind at the small size; the real width once with and once without a mask
# (test_predict_parity runs every kind end to end again).
BUCKETS = [("small", k) for k in ("points", "box", "box_points", "mask", "box_mask")] + [
    ("vit_b", "box_points"), ("vit_b", "box_mask")]


@torch.no_grad()
@pytest.mark.parametrize("config_name,kind", BUCKETS)
def test_prompt_to_masks_bucket(request, profile, config_name, kind):
    c, model, w = _case(request, config_name)
    rng = np.random.default_rng(7)
    sparse_t, dense_t, mask = _official_prompt(model, c, kind, rng)
    (emb,) = random_inputs([(1, c.prompt_embed_dim, c.image_embedding_size,
                             c.image_embedding_size)], seed=8)
    n = sparse_t.shape[1]
    graph = build_prompt_to_masks(c, n, mask is not None)
    inputs = [emb] + ([sparse_t.numpy()] if n else []) + ([mask] if mask is not None else [])
    compiled = compile_graph(graph, profile, w)
    masks, iou = compiled(*inputs)
    ref_masks, ref_iou = model.mask_decoder.predict_masks(
        t(emb), model.prompt_encoder.get_dense_pe(), sparse_t, dense_t)
    assert masks.shape == (1, c.num_mask_tokens, c.low_res_mask_size, c.low_res_mask_size)
    assert_close(masks, ref_masks.numpy(), f"{c.name} bucket {graph.name} logits [{profile}]")
    assert_close(iou, ref_iou.numpy(), f"{c.name} bucket {graph.name} IoU [{profile}]")
    # The dense PE and the no-mask embedding are weight-only: folded at bind time.
    folded_from = {v.name for node in compiled.graph.derived for v in node.inputs if v is not None}
    assert pe.GAUSSIAN_KEY in folded_from
    assert ("prompt_encoder.no_mask_embed.weight" in folded_from) == (mask is None)
    per_call_inputs = {v.name for node in compiled.graph.nodes for v in node.inputs
                       if v is not None}
    assert pe.GAUSSIAN_KEY not in per_call_inputs
    assert not any(node.op in ("sin", "cos", "arange") for node in compiled.graph.nodes)


def test_bucket_graph_inputs_are_what_varies_per_prompt():
    c = small_config()
    g, d, s = c.image_embedding_size, c.prompt_embed_dim, c.mask_input_size
    graph = build_prompt_to_masks(c, 3, True)
    assert [(v.name, v.shape) for v in graph.inputs] == [
        ("image_embedding", (1, d, g, g)), ("sparse", (1, 3, d)), ("mask_input", (1, 1, s, s))]
    graph = build_prompt_to_masks(c, 0, True)
    assert [v.name for v in graph.inputs] == ["image_embedding", "mask_input"]
    assert [v.shape for v in graph.outputs] == [(1, c.num_mask_tokens, s, s),
                                                (1, c.num_mask_tokens)]
    # Every weight of the graph is a prompt-encoder or mask-decoder state-dict key.
    expected = official_sam.state_dict_numpy(small_official()).keys()
    assert set(graph.weights) <= set(expected)


COMPILED_PROFILES = [p for p in PROFILES if p != "reference"]

_CACHE_PROBE = """
import json, sys
from models.sam.config import small_config
from models.sam.prompt_graph import PromptDecoder
from tests.models.sam.decoder_fixtures import small_weights
compiled = PromptDecoder(small_config(), small_weights(), sys.argv[1]).bucket(3, True)
report = compiled.report
rebuilt = [k.info.name for k in compiled.kernels  # both stages of the staged bucket
           if k.info.extra.get("compiled", True) and not k.info.from_cache]
print(json.dumps({"from_cache": report.from_cache, "cached": report.cached_kernels,
                  "kernels": report.kernels, "fallback": report.fallback_kernels,
                  "rebuilt": rebuilt}))
"""


def test_a_compiled_backend_exists():
    """The numba backend has landed; its absence would silently shrink every parity test."""
    assert "numba" in COMPILED_PROFILES


@pytest.mark.parametrize("profile", COMPILED_PROFILES)
def test_bucket_kernels_go_through_the_kernel_cache(profile, cache_dir):
    """A bucket compiled here is loaded from the on-disk kernel cache by a new process."""
    import json
    import os
    import subprocess
    import sys

    from models.sam.prompt_graph import PromptDecoder
    from tests.models.sam.decoder_fixtures import small_weights

    first = PromptDecoder(small_config(), small_weights(), profile).bucket(3, True)
    assert first.report.fallback_kernels == 0  # every node of the graph runs compiled
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    env = dict(os.environ, RLX_CACHE_DIR=cache_dir,
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _CACHE_PROBE, profile], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout.strip().splitlines()[-1])
    assert again["kernels"] == first.report.kernels and again["fallback"] == 0
    if not again["from_cache"]:
        pytest.fail(f"{profile}: {again['kernels']} kernels, {again['cached']} from the cache; "
                    f"rebuilt: {', '.join(again['rebuilt'])}")


PROMPT_SUBGRAPH_NAMES = ["prompt_mask_downscale", "two_way_transformer", "upscale", "mlp_heads",
                         "prompt_to_masks"]


def test_prompt_subgraphs_are_registered_and_benchable(vit_b_build):
    """``rlx dump-ir/bench sam-vit-b --subgraph S`` works for every prompt-side subgraph."""
    from rlx.zoo import get_model

    spec = get_model("sam-vit-b")
    assert set(PROMPT_SUBGRAPH_NAMES) <= set(spec.subgraphs)
    weights = {k: v.detach().numpy() for k, v in vit_b_build[0].state_dict().items()
               if k.startswith(("prompt_encoder.", "mask_decoder."))}
    for name in PROMPT_SUBGRAPH_NAMES:
        graph = spec.build(name)
        assert graph.name == name
        outs = compile_graph(graph, "reference", weights)(*spec.inputs_for(name, seed=1))
        assert outs and all(np.isfinite(o).all() for o in outs), name
