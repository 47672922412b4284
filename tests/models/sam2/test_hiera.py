"""Hiera trunk: the configs against Meta's yaml files, and the trunk against the official ``Hiera``.

The configs are compared with what hydra composes from the installed
``sam2`` package's own config files (not with numbers copied here), and the
per-block structure with the blocks of the official ``Hiera`` built from
them. The trunk graph runs on the reference interpreter against the
official trunk with every weight re-drawn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra import compose
from hydra.utils import instantiate

from models.sam2.config import CONFIG_NAMES, canonical_name, get_config
from models.sam2.hiera import build_hiera
from rlx.backends.reference import run_graph
from rlx.errors import InputError
from tests.support.official_sam2 import config_file, official_sam2, state_dict_numpy


def _yaml(name):
    return compose(config_name=config_file(name)).model


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_matches_meta_yaml(name):
    c, y = get_config(name), _yaml(name)
    enc = y.image_encoder
    trunk = instantiate(enc.trunk)  # the official Hiera, with its own defaults for what is unset
    assert c.embed_dim == trunk.patch_embed.proj.out_channels
    assert c.channel_list == tuple(trunk.channel_list)
    assert c.window_spec == tuple(trunk.window_spec)
    assert c.global_att_blocks == tuple(trunk.global_att_blocks)
    assert c.window_pos_embed_bkg_spatial_size == tuple(trunk.pos_embed.shape[2:])
    assert c.stage_ends == tuple(trunk.stage_ends)
    assert c.q_pool_blocks == tuple(trunk.q_pool_blocks)
    ours = c.blocks()
    assert len(ours) == len(trunk.blocks)
    for spec, blk in zip(ours, trunk.blocks):
        got = (spec.dim, spec.dim_out, spec.num_heads, spec.window, spec.q_stride)
        want = (blk.dim, blk.dim_out, blk.attn.num_heads, blk.window_size,
                blk.q_stride[0] if blk.q_stride else 0)
        assert got == want, f"block {spec.index}"
        assert blk.norm1.eps == c.layer_norm_eps
    neck = enc.neck
    assert c.scalp == enc.scalp
    assert c.d_model == neck.d_model
    assert c.backbone_channel_list == tuple(neck.backbone_channel_list)
    assert c.fpn_top_down_levels == tuple(neck.fpn_top_down_levels)
    assert c.fpn_interp_model == neck.fpn_interp_model
    assert c.pos_num_feats == neck.position_encoding.num_pos_feats
    assert c.pos_temperature == neck.position_encoding.temperature
    assert c.image_size == y.image_size
    for flag in ("directly_add_no_mem_embed", "use_high_res_features_in_sam",
                 "multimask_output_in_sam", "iou_prediction_use_sigmoid", "pred_obj_scores",
                 "pred_obj_scores_mlp", "fixed_no_obj_ptr", "use_multimask_token_for_obj_ptr",
                 "use_obj_ptrs_in_encoder", "use_mlp_for_obj_ptr_proj",
                 "multimask_output_for_tracking", "multimask_min_pt_num", "multimask_max_pt_num",
                 "use_mask_input_as_output_without_sam", "num_maskmem"):
        assert getattr(c, flag) == y[flag], flag
    for flag in ("no_obj_embed_spatial", "add_tpos_enc_to_obj_ptrs", "proj_tpos_enc_in_obj_ptrs",
                 "use_signed_tpos_enc_to_obj_ptrs"):
        assert getattr(c, flag) == y.get(flag, False), flag


def test_config_names_and_sizes():
    assert canonical_name("sam2.1-hiera-t") == "sam2.1_hiera_t"
    assert canonical_name("configs/sam2.1/sam2.1_hiera_b+.yaml") == "sam2.1_hiera_b+"
    assert canonical_name("sam2.1_hiera_base_plus.pt") == "sam2.1_hiera_b+"
    assert canonical_name("sam2_hiera_large") == "sam2_hiera_l"
    c = get_config("sam2.1_hiera_t", 256)
    assert c.feature_sizes == (64, 32, 16) and c.image_embedding_size == 16
    with pytest.raises(InputError, match="unknown SAM 2 config 'sam3_hiera_t'"):
        get_config("sam3_hiera_t")
    with pytest.raises(InputError, match="multiple of 32"):
        get_config("sam2.1_hiera_t", 100)


@pytest.mark.parametrize("name,size", [("sam2.1_hiera_t", 128)])
def test_trunk_matches_official_hiera(name, size):
    """Every stage output (the trunk alone, NHWC), reference interpreter, re-drawn weights.

    At 128 pixels the stage-3/4 grids (8, 4) are smaller than their windows (14, 7):
    the windows are mostly zero padding, as in the official code.
    """
    model = official_sam2(name, seed=5, image_size=size)
    x = np.random.default_rng(2).standard_normal((1, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        want = [t.permute(0, 2, 3, 1).numpy() for t in model.image_encoder.trunk(torch.from_numpy(x))]
    got = run_graph(build_hiera(name, size), [x], state_dict_numpy(model))
    assert len(got) == 4
    for stage, (a, w) in enumerate(zip(got, want)):
        assert a.shape == w.shape, stage
        assert np.abs(a - w).max() <= 1e-4, stage
        assert np.linalg.norm(a - w) / np.linalg.norm(w) <= 1e-5, stage
