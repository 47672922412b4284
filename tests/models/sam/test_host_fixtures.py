"""The reference fixtures themselves: shim, re-drawn official models, images."""

import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from models.sam.config import small_config
from tests.support import official_sam, synthetic_images, torchvision_shim


# ----- torchvision shim -------------------------------------------------------

def test_shim_installed_and_idempotent():
    assert torchvision_shim.installed()
    before = {k: v for k, v in sys.modules.items() if k.startswith("torchvision")}
    torchvision_shim.install()
    after = {k: v for k, v in sys.modules.items() if k.startswith("torchvision")}
    assert before == after
    from torchvision.transforms.functional import resize, to_pil_image

    assert resize is torchvision_shim.resize and to_pil_image is torchvision_shim.to_pil_image


def test_shim_resize_is_pillow_bilinear():
    img = synthetic_images.make_image(37, 53, seed=3)
    pil = torchvision_shim.to_pil_image(img)
    out = np.asarray(torchvision_shim.resize(pil, (20, 29)))
    ref = np.asarray(Image.fromarray(img).resize((29, 20), Image.BILINEAR))
    assert out.shape == (20, 29, 3) and np.array_equal(out, ref)


@pytest.mark.parametrize(
    "call",
    [
        lambda: torchvision_shim.to_pil_image(torch.zeros(3, 4, 4, dtype=torch.uint8)),
        lambda: torchvision_shim.to_pil_image(np.zeros((4, 4, 3), np.float32)),
        lambda: torchvision_shim.to_pil_image(np.zeros((4, 4), np.uint8)),
        lambda: torchvision_shim.to_pil_image(np.zeros((4, 4, 3), np.uint8), mode="RGB"),
        lambda: torchvision_shim.resize(Image.new("RGB", (4, 4)), 8),
        lambda: torchvision_shim.resize(Image.new("RGB", (4, 4)), (8, 8), antialias=True),
        lambda: torchvision_shim.resize(torch.zeros(1, 3, 4, 4), (8, 8)),
        lambda: __import__("torchvision.ops.boxes", fromlist=["x"]).batched_nms(None, None, None, 0.5),
    ],
)
def test_shim_refuses_everything_else(call):
    with pytest.raises(NotImplementedError, match="torchvision"):
        call()


# ----- re-drawn official models ------------------------------------------------

def test_redraw_is_deterministic_and_seed_dependent():
    a = official_sam.state_dict_numpy(official_sam.build_official(small_config(), seed=5))
    b = official_sam.state_dict_numpy(official_sam.build_official(small_config(), seed=5))
    c = official_sam.state_dict_numpy(official_sam.build_official(small_config(), seed=6))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(not np.array_equal(a[k], c[k]) for k in a)


def test_every_tensor_redrawn_at_documented_scale(small_sam):
    sd = official_sam.state_dict_numpy(small_sam)
    for key, value in sd.items():
        assert np.all(np.isfinite(value)), key
        assert np.std(value) > 0 or value.size == 1, f"{key} left constant"
    # Tensors a default init leaves at 0 or 1 are now random.
    for key in ("image_encoder.pos_embed", "image_encoder.blocks.0.attn.rel_pos_h",
                "image_encoder.blocks.1.attn.rel_pos_w", "image_encoder.neck.1.bias"):
        assert np.abs(sd[key]).max() > 0.05, key
    assert abs(sd["image_encoder.blocks.0.norm1.weight"].mean() - 1.0) < 0.1
    assert 0.05 < sd["image_encoder.blocks.0.norm1.weight"].std() < 0.2
    w = sd["image_encoder.blocks.0.mlp.lin2.weight"]  # fan_in 256
    assert abs(w.std() * math.sqrt(w.shape[1]) - 1.0) < 0.05
    head_dim = small_config().encoder_head_dim
    rel = sd["image_encoder.blocks.1.attn.rel_pos_h"]
    assert abs(rel.std() * math.sqrt(head_dim) / official_sam.REL_POS_SCALE - 1.0) < 0.2
    assert abs(sd["image_encoder.pos_embed"].std() / official_sam.POS_EMBED_STD - 1.0) < 0.1
    # Pixel normalisation is the real one, not drawn.
    assert small_sam.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])


def test_vit_b_activations_stay_order_one(vit_b_build):
    full, elapsed = vit_b_build
    assert sum(p.numel() for p in full.parameters()) == 93_735_472

    # Run the official ViT-B modules with these weights on a 224x224 crop: a
    # 14x14 token grid (one window; the global blocks interpolate their rel-pos
    # tables, as the official get_rel_pos does) keeps the 12-block forward cheap
    # while the per-token statistics are those of the full model.
    enc = full.image_encoder
    x = torch.from_numpy(synthetic_images.make_image(224, 224, seed=2)).permute(2, 0, 1)[None]
    with torch.no_grad():
        tokens = enc.patch_embed(full.preprocess(x.float())[..., :224, :224])
        tokens = tokens + enc.pos_embed[:, :14, :14]
        for blk in enc.blocks:
            tokens = blk(tokens)
        emb = enc.neck(tokens.permute(0, 3, 1, 2))
    assert torch.isfinite(emb).all() and torch.isfinite(tokens).all()
    assert 0.1 < float(emb.std()) < 10.0
    assert 0.1 < float(tokens.std()) < 10.0, f"residual stream std {float(tokens.std()):.2f} after 12 blocks"


def test_small_predictor_gives_non_degenerate_masks(small_sam):
    predictor = official_sam.official_predictor(small_sam)
    predictor.set_image(synthetic_images.make_image(180, 240, seed=4))
    masks, iou, low = predictor.predict(
        point_coords=np.array([[60.0, 50.0], [200.0, 150.0]]), point_labels=np.array([1, 0])
    )
    assert masks.shape == (3, 180, 240) and low.shape == (3, 64, 64) and iou.shape == (3,)
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(iou))
    frac = masks.mean(axis=(1, 2))
    assert np.all((frac > 0.01) & (frac < 0.99)), f"foreground fractions {frac}"
    assert 0.05 < float(np.std(low)) < 30


def test_checkpoint_round_trip(tmp_path, small_sam):
    path = official_sam.save_official_checkpoint(small_sam, tmp_path / "sam_small.pth")
    state = torch.load(path, map_location="cpu", weights_only=True)
    fresh = official_sam.build_official(small_config(), seed=99)
    fresh.load_state_dict(state, strict=True)
    ref = small_sam.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in fresh.state_dict().items())


def test_unknown_parameter_is_refused():
    model = official_sam.build_official(small_config(), seed=0)
    model.mask_decoder.extra = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(RuntimeError, match="mask_decoder.extra"):
        official_sam.redraw_parameters(model, seed=0)


def test_config_the_official_classes_cannot_express_is_refused():
    with pytest.raises(ValueError, match="decoder_layer_norm_eps"):
        official_sam.build_official_modules(small_config(decoder_layer_norm_eps=1e-6))


# ----- synthetic images -----------------------------------------------------------

def test_synthetic_images_are_deterministic_and_structured(image_files):
    a = synthetic_images.make_image(480, 640, seed=1)
    assert a.shape == (480, 640, 3) and a.dtype == np.uint8
    assert np.array_equal(a, synthetic_images.make_image(480, 640, seed=1))
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 1000
    files = image_files  # written by synthetic_images.write_test_images
    assert {"rgb_480x640.png", "rgb_700x300.jpg", "gray.png", "palette.png", "rgba.png", "la.png"} <= set(files)
    modes = {n: Image.open(p).mode for n, p in files.items()}
    assert modes["gray.png"] == "L" and modes["palette.png"] == "P"
    assert modes["rgba.png"] == "RGBA" and modes["la.png"] == "LA"
    assert Image.open(files["rgb_700x300.png"]).size == (300, 700)
