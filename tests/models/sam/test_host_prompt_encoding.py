"""Prompt encoding (numpy) against the official PromptEncoder with re-drawn weights."""

import numpy as np
import pytest
import torch

from models.sam import prompt_encoding as pe
from models.sam.config import small_config
from rlx.errors import CheckpointError, InputError
from tests.support import official_sam

TOL = 1e-5


@pytest.fixture(scope="module")
def sam1024():
    """Official SAM whose prompt encoder has ViT-B's sizes (256-d, 64x64 grid, 1024 input).

    The image encoder is the small one (never run here), keeping the build cheap.
    """
    cfg = small_config(image_size=1024, prompt_embed_dim=256, out_chans=256)
    return official_sam.build_official(cfg, seed=11)


@pytest.fixture(scope="module")
def weights(sam1024):
    return official_sam.state_dict_numpy(sam1024)


def _official_sparse(model, coords, labels, boxes):
    points = None
    if coords is not None:
        points = (torch.as_tensor(coords, dtype=torch.float), torch.as_tensor(labels, dtype=torch.int))
    box_t = torch.as_tensor(boxes, dtype=torch.float) if boxes is not None else None
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=points, boxes=box_t, masks=None)
    return sparse.detach().numpy(), dense.detach().numpy()


def _points(b, n, seed, size=1024):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(-5, size + 5, size=(b, n, 2))  # a few just outside the frame
    labels = rng.choice([1, 0, -1], size=(b, n))
    labels[:, 0] = 1
    labels[:, -1] = 0
    return coords, labels


def _check(ours, ref):
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    err = np.abs(ours - ref).max()
    assert err <= TOL, f"max |delta| {err:.2e}"


@pytest.mark.parametrize("b, n", [(1, 1), (1, 5), (3, 4)])
def test_points_only_matches_official(sam1024, weights, b, n):
    coords, labels = _points(b, n, seed=b * 10 + n)
    ref, _ = _official_sparse(sam1024, coords, labels, None)
    ours = pe.sparse_embeddings(coords, labels, None, weights)
    assert ours.shape == (b, n + 1, 256)  # one padding point
    _check(ours, ref)


@pytest.mark.parametrize("pad", [True, False])
def test_embed_points_with_and_without_pad(sam1024, weights, pad):
    coords, labels = _points(2, 6, seed=3)
    with torch.no_grad():
        ref = sam1024.prompt_encoder._embed_points(
            torch.as_tensor(coords, dtype=torch.float), torch.as_tensor(labels, dtype=torch.int), pad=pad
        ).numpy()
    _check(pe.embed_points(coords, labels, pad, weights), ref)


def test_boxes_only_matches_official(sam1024, weights):
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 1024, size=(3, 2, 2))
    boxes = np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)
    ref, _ = _official_sparse(sam1024, None, None, boxes)
    ours = pe.sparse_embeddings(None, None, boxes, weights)
    assert ours.shape == (3, 2, 256)
    _check(ours, ref)
    _check(pe.embed_boxes(boxes, weights), ref)


def test_box_plus_points_matches_official(sam1024, weights):
    coords, labels = _points(1, 3, seed=5)
    boxes = np.array([[100.5, 200.0, 640.0, 700.25]])
    ref, _ = _official_sparse(sam1024, coords, labels, boxes)
    ours = pe.sparse_embeddings(coords, labels, boxes, weights)
    assert ours.shape == (1, 3 + 2, 256)  # no padding point when a box is given
    _check(ours, ref)


def test_no_prompt_at_all(sam1024, weights):
    ref, dense = _official_sparse(sam1024, None, None, None)
    ours = pe.sparse_embeddings(None, None, None, weights)
    assert ours.shape == ref.shape == (1, 0, 256)
    nm = pe.no_mask_dense(weights, (64, 64))
    assert nm.shape == dense.shape and np.array_equal(nm, dense)


def test_no_mask_dense_batches(sam1024, weights):
    coords, labels = _points(3, 2, seed=6)
    _, dense = _official_sparse(sam1024, coords, labels, None)
    assert np.array_equal(pe.no_mask_dense(weights, (64, 64), batch=3), dense)


def test_dense_pe_matches_official(sam1024, weights):
    ref = sam1024.prompt_encoder.get_dense_pe().numpy()
    g = weights[pe.GAUSSIAN_KEY]
    ours = pe.dense_pe(g, (64, 64))
    assert ours.shape == (1, 256, 64, 64)
    _check(ours, ref)
    # Non-square grid, against the official layer directly.
    with torch.no_grad():
        ref2 = sam1024.prompt_encoder.pe_layer((24, 40)).unsqueeze(0).numpy()
    _check(pe.dense_pe(g, (24, 40)), ref2)


def test_dense_pe_is_cached_and_read_only(weights):
    g = weights[pe.GAUSSIAN_KEY]
    a = pe.dense_pe(g, (16, 16))
    assert pe.dense_pe(g.copy(), (16, 16)) is a
    assert not a.flags.writeable
    assert pe.dense_pe(g * 2, (16, 16)) is not a


def test_fourier_encode_matches_official(sam1024, weights):
    rng = np.random.default_rng(7)
    coords = rng.uniform(0, 1, size=(4, 9, 2)).astype(np.float32)
    with torch.no_grad():
        ref = sam1024.prompt_encoder.pe_layer._pe_encoding(torch.from_numpy(coords)).numpy()
    _check(pe.fourier_encode(coords, weights[pe.GAUSSIAN_KEY]), ref)


def test_small_config_image_size(small_sam):
    w = official_sam.state_dict_numpy(small_sam)
    coords, labels = _points(2, 3, seed=8, size=256)
    boxes = np.array([[10.0, 20.0, 200.0, 250.0], [0.0, 0.0, 255.0, 255.0]])
    ref, _ = _official_sparse(small_sam, coords, labels, boxes)
    _check(pe.sparse_embeddings(coords, labels, boxes, w, input_image_size=256), ref)
    ref_dense = small_sam.prompt_encoder.get_dense_pe().numpy()
    _check(pe.dense_pe(w[pe.GAUSSIAN_KEY], (16, 16)), ref_dense)


def test_float64_coordinates_are_cast_like_the_predictor(sam1024, weights):
    # The predictor passes float64 apply_coords output through torch.as_tensor(dtype=float32).
    coords = np.array([[[123.456789012, 987.654321098]]], dtype=np.float64)
    labels = np.array([[1]])
    ref, _ = _official_sparse(sam1024, coords, labels, None)
    _check(pe.sparse_embeddings(coords, labels, None, weights), ref)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda w: pe.embed_points(np.zeros((1, 2, 2)), np.array([[1, 2]]), True, w), ["labels", "2"]),
        (lambda w: pe.embed_points(np.zeros((2, 2)), np.array([[1, 1]]), True, w), ["[B, N, 2]", "(2, 2)"]),
        (lambda w: pe.embed_points(np.zeros((1, 2, 2)), np.array([1, 1]), True, w), ["labels", "(2,)"]),
        (lambda w: pe.embed_points(np.full((1, 1, 2), np.nan), np.array([[1]]), True, w), ["NaN"]),
        (lambda w: pe.embed_boxes(np.zeros((2, 3)), w), ["[B, 4]", "(2, 3)"]),
        (lambda w: pe.sparse_embeddings(np.zeros((1, 1, 2)), None, None, w), ["together"]),
        (lambda w: pe.sparse_embeddings(np.zeros((2, 1, 2)), np.ones((2, 1)), np.zeros((3, 4)), w), ["batch"]),
        (lambda w: pe.fourier_encode(np.zeros((3, 3)), w[pe.GAUSSIAN_KEY]), ["(3, 3)"]),
    ],
)
def test_bad_prompts_raise_input_error(weights, call, words):
    with pytest.raises(InputError) as info:
        call(weights)
    for word in words:
        assert word in str(info.value)


def test_missing_or_misshapen_weights_raise_checkpoint_error(weights):
    partial = {k: v for k, v in weights.items() if k != "prompt_encoder.not_a_point_embed.weight"}
    with pytest.raises(CheckpointError, match="not_a_point_embed"):
        pe.embed_points(np.zeros((1, 1, 2)), np.ones((1, 1)), True, partial)
    bad = dict(weights)
    bad["prompt_encoder.point_embeddings.2.weight"] = np.zeros((1, 128), np.float32)
    with pytest.raises(CheckpointError, match=r"point_embeddings\.2.*\(1, 128\)"):
        pe.embed_boxes(np.zeros((1, 4)), bad)
    with pytest.raises(CheckpointError, match="positional_encoding_gaussian_matrix"):
        pe.sparse_embeddings(None, None, None, {})


def test_non_square_input_frame_normalises_x_by_width(small_sam):
    # SAM always uses a square frame; a non-square one catches an x/y swap.
    from tests.support.official_sam import PromptEncoder

    enc = PromptEncoder(embed_dim=32, image_embedding_size=(16, 24), input_image_size=(256, 384), mask_in_chans=8)
    enc.load_state_dict(small_sam.prompt_encoder.state_dict())
    w = official_sam.state_dict_numpy(small_sam)
    coords, labels = _points(2, 3, seed=12, size=256)
    boxes = np.array([[10.0, 20.0, 300.0, 250.0], [0.0, 0.0, 383.0, 255.0]])
    with torch.no_grad():
        ref = enc(points=(torch.as_tensor(coords, dtype=torch.float), torch.as_tensor(labels)),
                  boxes=torch.as_tensor(boxes, dtype=torch.float), masks=None)[0].numpy()
        ref_dense = enc.get_dense_pe().numpy()
    _check(pe.sparse_embeddings(coords, labels, boxes, w, input_image_size=(256, 384)), ref)
    _check(pe.dense_pe(w[pe.GAUSSIAN_KEY], (16, 24)), ref_dense)
