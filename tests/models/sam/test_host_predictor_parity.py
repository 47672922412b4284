"""The host-side pipeline end to end against SamPredictor.predict.

The official predictor is run with a recording wrapper around its mask
decoder, so we see exactly what the host side must produce for the compiled
decoder (sparse and dense prompt embeddings, image positional encoding) and
what it does with the decoder's output (postprocessing to the original size).
"""

import numpy as np
import pytest
import torch

from models.sam import prompt_encoding as pe
from models.sam.config import small_config
from models.sam.image import preprocess
from models.sam.postprocess import postprocess_masks, threshold
from models.sam.transforms import apply_boxes, apply_coords
from tests.support import official_sam, synthetic_images


class _RecordingDecoder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        self.calls.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()})
        self.calls[-1]["low_res"] = out[0].detach().clone()
        return out


@pytest.fixture(scope="module")
def recorded():
    sam = official_sam.build_official(small_config(), seed=3)
    weights = official_sam.state_dict_numpy(sam)
    recorder = _RecordingDecoder(sam.mask_decoder)
    sam.mask_decoder = recorder
    predictor = official_sam.official_predictor(sam)
    image = synthetic_images.make_image(700, 300, seed=9)
    predictor.set_image(image)
    return sam, predictor, recorder, weights, image


PROMPTS = {
    "one_click": dict(point_coords=np.array([[80.0, 150.0]]), point_labels=np.array([1])),
    "clicks": dict(point_coords=np.array([[80.0, 150.0], [250.0, 600.0], [10.0, 690.0]]),
                   point_labels=np.array([1, 0, 1])),
    "box": dict(box=np.array([30.0, 60.0, 200.0, 400.0])),
    "box_and_clicks": dict(point_coords=np.array([[100.0, 200.0], [150.0, 350.0]]),
                           point_labels=np.array([1, 0]), box=np.array([30.0, 60.0, 200.0, 400.0])),
}


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_host_side_matches_predictor(recorded, name):
    sam, predictor, recorder, weights, image = recorded
    prompt = PROMPTS[name]
    masks, iou, low = predictor.predict(**prompt, multimask_output=True, return_logits=True)
    call = recorder.calls[-1]
    original = image.shape[:2]
    size = small_config().image_size
    grid = small_config().image_embedding_size

    coords = labels = boxes = None
    if "point_coords" in prompt:
        coords = apply_coords(prompt["point_coords"], original, size)[None]
        labels = prompt["point_labels"][None]
    if "box" in prompt:
        boxes = apply_boxes(prompt["box"], original, size)
    sparse = pe.sparse_embeddings(coords, labels, boxes, weights, input_image_size=size)
    ref_sparse = call["sparse_prompt_embeddings"].numpy()
    assert sparse.shape == ref_sparse.shape
    assert np.abs(sparse - ref_sparse).max() <= 1e-5

    assert np.array_equal(pe.no_mask_dense(weights, (grid, grid)), call["dense_prompt_embeddings"].numpy())
    assert np.abs(pe.dense_pe(weights[pe.GAUSSIAN_KEY], (grid, grid)) - call["image_pe"].numpy()).max() <= 1e-5

    _, input_size, original_size = preprocess(image, img_size=size)
    assert tuple(input_size) == tuple(predictor.input_size) and original_size == original
    ours = postprocess_masks(call["low_res"].numpy(), input_size, original_size, size)[0]
    assert ours.shape == masks.shape == (3,) + original
    assert np.abs(ours - masks).max() <= 1e-4
    decided = np.abs(masks) > 1e-4
    assert np.array_equal(threshold(ours)[decided], (masks > 0)[decided])
