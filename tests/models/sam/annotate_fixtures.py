"""A tiny image folder, prompts and a small official checkpoint for the ``rlx annotate`` tests.

Six images: RGB PNG and JPEG, grayscale, RGBA, one in a sub-folder, one
corrupt file, plus one whose prompt falls outside it (a per-image error found
only once the image is read). Small sizes and the small SAM config keep each
run to seconds.
"""

import json
import os
import subprocess
import sys

import numpy as np

from tests.support import synthetic_images

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

#: name -> (height, width, Pillow mode or None)
IMAGES = {
    "a.png": (120, 160, None),
    "b.jpg": (96, 128, None),
    "gray.png": (100, 90, "L"),
    "rgba.png": (90, 130, "RGBA"),
    "sub/c.png": (140, 100, None),
    "outside.png": (64, 64, None),
}
CORRUPT = "corrupt.png"

PROMPTS = {
    "a.png": [{"points": [[40, 30]]},                                 # lone click: multimask
              {"points": [[40, 30], [120, 90]], "labels": [1, 0]},
              {"box": [10, 10, 100, 90]}],
    "b.jpg": [{"box": [0, 0, 128, 96], "points": [[64, 48]]}],
    "gray.png": [{"points": [[20, 20]]}, {"box": [5, 5, 60, 80]}],
    "rgba.png": [{"points": [[60, 40]]}],
    "sub/c.png": [{"box": [20, 30, 80, 120]}],
    "outside.png": [{"points": [[10, 10]]}, {"points": [[70, 10]]}],  # x=70 > width 64
    CORRUPT: [{"points": [[5, 5]]}],
}


def write_dataset(d):
    """Write the images and the prompt file into ``d``; returns (src folder, prompts path)."""
    src = d / "images"
    (src / "sub").mkdir(parents=True)
    for i, (name, (h, w, mode)) in enumerate(IMAGES.items()):
        synthetic_images.write_image(str(src / name), synthetic_images.make_image(h, w, seed=i),
                                     mode=mode)
    (src / CORRUPT).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    prompts = d / "prompts.json"
    prompts.write_text(json.dumps({"images": PROMPTS}))
    return src, prompts


def rlx(*args, timeout=600, **popen):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, **popen)


def decode(ann):
    from pycocotools import mask as mask_utils

    rle = dict(ann["segmentation"])
    rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def strip_volatile(coco):
    """The output without what legitimately differs between runs (date, engine)."""
    coco = json.loads(json.dumps(coco))
    for k in ("date_created", "engine"):
        coco["info"].pop(k, None)
    return coco


def official_masks(official_predictor, image_path, prompts):
    """Per prompt: the official predictor's mask under the same selection rule as ours."""
    from PIL import Image

    with Image.open(image_path) as im:
        image = np.asarray(im.convert("RGB"))
    official_predictor.set_image(image)
    out = []
    for p in prompts:
        pts = np.array(p["points"], dtype=np.float64) if "points" in p else None
        labels = (np.array(p.get("labels", [1] * len(p["points"]))) if "points" in p else None)
        box = np.array(p["box"], dtype=np.float64) if "box" in p else None
        single = pts is not None and len(pts) == 1 and box is None
        masks, iou, _ = official_predictor.predict(point_coords=pts, point_labels=labels,
                                                   box=box, multimask_output=single)
        best = int(np.argmax(iou))
        out.append((masks[best], float(iou[best])))
    return out
