"""SamConfig and expected_state_dict_shapes against the official modules."""

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from models.sam.config import CONFIGS, SamConfig, expected_state_dict_shapes, get_config, small_config
from tests.support.official_sam import build_official_modules, sam_model_registry


@functools.lru_cache(maxsize=None)
def _meta_registry(name):
    """The registry's model on the meta device (shapes only; read-only use)."""
    with torch.device("meta"):
        return sam_model_registry[name]()


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _assert_same_layout(expected, actual):
    missing = sorted(set(actual) - set(expected))
    extra = sorted(set(expected) - set(actual))
    assert not missing and not extra, f"missing from config: {missing[:5]}, not official: {extra[:5]}"
    wrong = {k: (expected[k], actual[k]) for k in actual if expected[k] != actual[k]}
    assert not wrong, f"shape mismatches (expected, official): {dict(list(wrong.items())[:5])}"
    assert list(expected) == list(actual), "key order differs from the official state dict"


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_expected_shapes_match_official_registry(name):
    _assert_same_layout(expected_state_dict_shapes(name), _shapes(_meta_registry(name)))


def test_expected_shapes_match_materialised_vit_b(vit_b_build):
    # A real (non-meta) official ViT-B, as a checkpoint writer would see it.
    model, _ = vit_b_build
    _assert_same_layout(expected_state_dict_shapes(CONFIGS["vit_b"]), _shapes(model))
    # 93,735,472 parameters is SAM ViT-B's published size; +256 for the Fourier buffer.
    assert sum(p.numel() for p in model.parameters()) == 93_735_472
    assert sum(math.prod(s) for s in expected_state_dict_shapes("vit_b").values()) == 93_735_472 + 256


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_config_builds_same_modules_as_registry(name):
    with torch.device("meta"):
        ours = build_official_modules(CONFIGS[name])
    assert _shapes(ours) == _shapes(_meta_registry(name))


def test_small_config_matches_official_classes(small_sam):
    c = small_config()
    _assert_same_layout(expected_state_dict_shapes(c), _shapes(small_sam))
    _assert_same_layout(expected_state_dict_shapes("small"), _shapes(small_sam))


def _describe(sam):
    """Structural facts read back from constructed official modules."""
    enc, pe, dec = sam.image_encoder, sam.prompt_encoder, sam.mask_decoder
    blocks = list(enc.blocks)
    tr = dec.transformer
    return dict(
        image_size=enc.img_size,
        patch_size=enc.patch_embed.proj.kernel_size[0],
        in_chans=enc.patch_embed.proj.in_channels,
        encoder_embed_dim=enc.patch_embed.proj.out_channels,
        encoder_depth=len(blocks),
        encoder_num_heads=blocks[0].attn.num_heads,
        window_sizes=[b.window_size for b in blocks],
        encoder_mlp_dim=blocks[0].mlp.lin1.out_features,
        qkv_bias=blocks[0].attn.qkv.bias is not None,
        use_rel_pos=blocks[0].attn.use_rel_pos,
        use_abs_pos=enc.pos_embed is not None,
        encoder_layer_norm_eps=blocks[0].norm1.eps,
        out_chans=enc.neck[0].out_channels,
        layer_norm_2d_eps={enc.neck[1].eps, enc.neck[3].eps, pe.mask_downscaling[1].eps,
                           pe.mask_downscaling[4].eps, dec.output_upscaling[1].eps},
        encoder_gelu=[type(b.mlp.act) for b in blocks] == [nn.GELU] * len(blocks)
        and blocks[0].mlp.act.approximate == "none",
        prompt_embed_dim=pe.embed_dim,
        image_embedding_size=pe.image_embedding_size,
        input_image_size=pe.input_image_size,
        mask_in_chans=pe.mask_downscaling[3].out_channels,
        num_point_embeddings=pe.num_point_embeddings,
        decoder_depth=tr.depth,
        decoder_num_heads=tr.num_heads,
        decoder_mlp_dim=tr.mlp_dim,
        attention_downsample_rate=tr.embedding_dim // tr.final_attn_token_to_image.internal_dim,
        decoder_layer_norm_eps={m.eps for m in tr.modules() if isinstance(m, nn.LayerNorm)},
        decoder_mlp_act=type(tr.layers[0].mlp.act),
        num_multimask_outputs=dec.num_multimask_outputs,
        iou_head_depth=dec.iou_prediction_head.num_layers,
        iou_head_hidden_dim=dec.iou_prediction_head.layers[0].out_features,
        hypernetwork_mlp_depth=dec.output_hypernetworks_mlps[0].num_layers,
        # float32 buffers: compare the float32 values of both sides.
        pixel_mean=tuple(sam.pixel_mean.flatten().numpy().tolist()),
        pixel_std=tuple(sam.pixel_std.flatten().numpy().tolist()),
        mask_threshold=sam.mask_threshold,
        image_format=sam.image_format,
    )


def _describe_config(c: SamConfig):
    g = c.image_embedding_size
    return dict(
        image_size=c.image_size,
        patch_size=c.patch_size,
        in_chans=c.in_chans,
        encoder_embed_dim=c.encoder_embed_dim,
        encoder_depth=c.encoder_depth,
        encoder_num_heads=c.encoder_num_heads,
        window_sizes=[c.block_window_size(i) for i in range(c.encoder_depth)],
        encoder_mlp_dim=c.encoder_mlp_dim,
        qkv_bias=c.qkv_bias,
        use_rel_pos=c.use_rel_pos,
        use_abs_pos=c.use_abs_pos,
        encoder_layer_norm_eps=c.encoder_layer_norm_eps,
        out_chans=c.out_chans,
        layer_norm_2d_eps={c.layer_norm_2d_eps},
        encoder_gelu=c.encoder_activation == "gelu",
        prompt_embed_dim=c.prompt_embed_dim,
        image_embedding_size=(g, g),
        input_image_size=(c.image_size, c.image_size),
        mask_in_chans=c.mask_in_chans,
        num_point_embeddings=c.num_point_embeddings,
        decoder_depth=c.decoder_depth,
        decoder_num_heads=c.decoder_num_heads,
        decoder_mlp_dim=c.decoder_mlp_dim,
        attention_downsample_rate=c.attention_downsample_rate,
        decoder_layer_norm_eps={c.decoder_layer_norm_eps},
        decoder_mlp_act={"relu": nn.ReLU, "gelu": nn.GELU}[c.decoder_mlp_activation],
        num_multimask_outputs=c.num_multimask_outputs,
        iou_head_depth=c.iou_head_depth,
        iou_head_hidden_dim=c.iou_head_hidden_dim,
        hypernetwork_mlp_depth=c.hypernetwork_mlp_depth,
        pixel_mean=tuple(np.asarray(c.pixel_mean, np.float32).tolist()),
        pixel_std=tuple(np.asarray(c.pixel_std, np.float32).tolist()),
        mask_threshold=c.mask_threshold,
        image_format=c.image_format,
    )


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_config_values_match_registry_modules(name):
    official = _describe(_meta_registry(name))
    ours = _describe_config(CONFIGS[name])
    diff = {k: (ours[k], official[k]) for k in official if ours[k] != official[k]}
    assert not diff, f"(config, official) differ: {diff}"
    # The facts the brief pins down explicitly.
    c = CONFIGS[name]
    assert (c.window_size, c.patch_size, c.image_size, c.mlp_ratio, c.out_chans) == (14, 16, 1024, 4.0, 256)
    assert (c.encoder_layer_norm_eps, c.layer_norm_2d_eps, c.decoder_layer_norm_eps) == (1e-6, 1e-6, 1e-5)


def test_small_config_values_match_its_modules(small_sam):
    assert _describe(small_sam) == _describe_config(small_config())


def test_registry_configs_values():
    assert {n: (c.encoder_embed_dim, c.encoder_depth, c.encoder_num_heads, c.encoder_global_attn_indexes)
            for n, c in CONFIGS.items()} == {
        "vit_b": (768, 12, 12, (2, 5, 8, 11)),
        "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
        "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
    }


def test_small_config_keeps_every_code_path_live():
    c = small_config()
    grid = c.image_embedding_size
    assert grid % c.window_size != 0, "windowed blocks must need padding"
    windows = [c.block_window_size(i) for i in range(c.encoder_depth)]
    assert 0 in windows and c.window_size in windows, "need both global and windowed blocks"
    assert {c.block_rel_pos_len(i) for i in range(c.encoder_depth)} == {2 * c.window_size - 1, 2 * grid - 1}
    assert c.decoder_depth >= 2 and c.num_multimask_outputs == 3
    assert c.prompt_embed_dim // c.attention_downsample_rate // c.decoder_num_heads >= 2


def test_derived_sizes():
    c = CONFIGS["vit_b"]
    assert (c.image_embedding_size, c.mask_input_size, c.encoder_head_dim, c.encoder_mlp_dim) == (64, 256, 64, 3072)
    assert (c.num_mask_tokens, c.decoder_cross_attn_dim, c.num_pos_feats) == (4, 128, 128)
    assert c.block_window_size(2) == 0 and c.block_window_size(3) == 14
    assert c.block_rel_pos_len(2) == 127 and c.block_rel_pos_len(0) == 27


def test_config_is_frozen_and_hashable():
    c = CONFIGS["vit_b"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.encoder_depth = 3
    assert hash(c) == hash(dataclasses.replace(c))
    assert get_config("vit_b") is c and get_config(c) is c


@pytest.mark.parametrize(
    "overrides, culprit",
    [
        ({"encoder_num_heads": 5}, "encoder_num_heads"),
        ({"image_size": 1000}, "patch_size"),
        ({"encoder_global_attn_indexes": (1, 9)}, "encoder_global_attn_indexes"),
        ({"out_chans": 64}, "out_chans"),
        ({"decoder_num_heads": 3}, "decoder_num_heads"),
        ({"mask_in_chans": 6}, "mask_in_chans"),
    ],
)
def test_invalid_config_names_the_field(overrides, culprit):
    with pytest.raises(ValueError, match=culprit):
        small_config(**overrides)


def test_unknown_config_name():
    with pytest.raises(ValueError, match="vit_x"):
        get_config("vit_x")
