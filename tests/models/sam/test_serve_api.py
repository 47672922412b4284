"""``rlx serve``'s HTTP API, in process (Starlette's test client), on the small SAM.

Every endpoint, every refusal of issue 17 (413 / 400 / 404 / 422 naming the
field, a 500 that leaves the server running), masks equal to
``SamPredictor.predict`` for the same prompt (and, once, to the official
predictor), ``refine``, LRU eviction by count and by memory, and concurrent
clients on two images -- including a click that must not wait for another
image's encoder. The browser side is `test_serve_browser.py`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageFile
from starlette.testclient import TestClient

from models.sam import SamPredictor, build_sam, small_config
from models.sam.debug import DebugOptions
from models.sam.serve import SegmentService, ServeLimits, create_app
from models.sam.serve.cli import is_loopback
from models.sam.serve.embeddings import EmbeddingCache, ImageEntry
from models.sam.serve.png import mask_png
from tests.models.sam.fixtures_encoder import small_checkpoint, small_official
from tests.support import official_sam, synthetic_images

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
H, W = 150, 200


@pytest.fixture(scope="module")
def sam():
    return build_sam(small_config(), checkpoint=small_checkpoint(), profile="reference",
                     debug=DebugOptions())


@pytest.fixture(scope="module")
def service(sam):
    svc = SegmentService(sam, ServeLimits(max_upload_bytes=2_000_000, max_pixels=1_000_000))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def png_bytes(array, mode=None, fmt="PNG") -> bytes:
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def upload(client, data: bytes, name="img.png"):
    return client.post("/api/images", files={"file": (name, data, "image/png")})


@pytest.fixture(scope="module")
def images():
    return [synthetic_images.make_image(H, W, seed=s) for s in (31, 32)]


@pytest.fixture(scope="module")
def uploaded(client, images):
    ids = []
    for img in images:
        r = upload(client, png_bytes(img))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["width"] == W and body["height"] == H and body["encode_ms"] > 0
        ids.append(body["id"])
    return ids


@pytest.fixture(scope="module")
def predictors(sam, images):
    out = []
    for img in images:
        p = SamPredictor(sam)
        p.set_image(img)
        out.append(p)
    return out


def decode_mask(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.size == (W, H)
        return np.asarray(im.convert("L")) > 127


def check_error(r, status, field=None, text=None):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == status and body["error"]
    if field is not None:
        assert body["field"] == field, body
    if text is not None:
        assert text in body["error"], body
    return body


# ---- health, page ---------------------------------------------------------------------------


def test_health_names_model_profile_and_weights(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["model"] == "small"
    assert h["profile"] == "reference" and h["backend"] == "reference" and h["device"]
    assert h["synthetic"] is False and h["warning"] is None


def test_health_announces_synthetic_weights():
    with pytest.warns(Warning, match="SYNTHETIC"):
        sam = build_sam(small_config(), profile="reference", debug=DebugOptions())
    svc = SegmentService(sam)
    try:
        h = TestClient(create_app(svc)).get("/api/health").json()
    finally:
        svc.close()
    assert h["synthetic"] is True and "SYNTHETIC" in h["warning"]


def test_page_and_static_files_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in r.text and "/static/style.css" in r.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    check_error(client.get("/static/../cli.py"), 404)
    check_error(client.get("/api/nothing"), 404)


# ---- masks: equal to SamPredictor.predict ----------------------------------------------------

PROMPTS = [
    {"points": [[60, 50, 1]], "multimask": True},
    {"points": [[60, 50, 1], [150.5, 110, 0]], "multimask": False},
    {"points": [[120, 90]], "box": [20, 10, 180, 140], "multimask": False},
    {"box": [0, 0, W, H], "multimask": True},
]


def _predict(predictor, prompt, mask_input=None):
    pts = prompt.get("points") or []
    coords = np.array([p[:2] for p in pts], float) if pts else None
    labels = np.array([p[2] if len(p) == 3 else 1 for p in pts]) if pts else None
    box = np.array(prompt["box"], float) if prompt.get("box") is not None else None
    return predictor.predict(coords, labels, box, mask_input,
                             multimask_output=prompt.get("multimask", True))


@pytest.mark.parametrize("k", range(len(PROMPTS)))
def test_masks_equal_sam_predictor(client, uploaded, predictors, k):
    prompt = PROMPTS[k]
    r = client.post(f"/api/images/{uploaded[0]}/masks", json=prompt)
    assert r.status_code == 200, r.text
    assert r.headers["server-timing"].startswith("total;dur=")
    body = r.json()
    assert set(body) == {"masks", "best", "decode_ms", "png_ms"}
    assert all(set(m) == {"png", "score", "area"} for m in body["masks"])
    masks, scores, _ = _predict(predictors[0], prompt)
    assert len(body["masks"]) == len(masks) == (3 if prompt["multimask"] else 1)
    for got, want, score in zip(body["masks"], masks, scores):
        m = decode_mask(got["png"])
        np.testing.assert_array_equal(m, want)
        assert got["area"] == int(want.sum())
        assert got["score"] == float(score)
    assert body["best"] == int(np.argmax(scores))
    assert body["decode_ms"] > 0
    assert any(0 < m.mean() < 1 for m in masks)  # the comparison is not all-empty


def test_masks_match_the_official_predictor(client, uploaded, images):
    official = official_sam.official_predictor(small_official())
    official.set_image(images[1])
    masks, iou, _ = official.predict(point_coords=np.array([[70.0, 40.0]]),
                                     point_labels=np.array([1]), multimask_output=True)
    body = client.post(f"/api/images/{uploaded[1]}/masks",
                       json={"points": [[70, 40, 1]], "multimask": True}).json()
    for got, want, score in zip(body["masks"], masks, iou):
        agreement = float((decode_mask(got["png"]) == want).mean())
        assert agreement >= 0.999, agreement
        assert abs(got["score"] - float(score)) <= 1e-4


def test_refine_feeds_back_the_previous_best_low_res_mask(sam, client, images):
    r = upload(client, png_bytes(images[0]))
    iid = r.json()["id"]
    check_error(client.post(f"/api/images/{iid}/masks",
                            json={"points": [[60, 50, 1]], "refine": True}), 422, "refine")
    p = SamPredictor(sam)
    p.set_image(images[0])
    first = {"points": [[60, 50, 1]], "multimask": True}
    _, scores, logits = _predict(p, first)
    assert client.post(f"/api/images/{iid}/masks", json=first).status_code == 200
    second = {"points": [[60, 50, 1], [100, 120, 0]], "multimask": False}
    want_masks, want_scores, _ = _predict(p, second, logits[np.argmax(scores)][None])
    plain, _, _ = _predict(p, second)
    body = client.post(f"/api/images/{iid}/masks", json={**second, "refine": True}).json()
    np.testing.assert_array_equal(decode_mask(body["masks"][0]["png"]), want_masks[0])
    assert body["masks"][0]["score"] == float(want_scores[0])
    assert not np.array_equal(want_masks[0], plain[0])  # the mask input did change the answer


# ---- segment everything -------------------------------------------------------------------------

EVERYTHING = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
              "box_nms_thresh": 1.0}  # synthetic-ish weights: masks overlap, NMS keeps one


def test_everything_is_the_automatic_mask_generator_as_coco(sam, client, uploaded, predictors):
    from pycocotools import mask as mask_utils

    from models.sam import SamAutomaticMaskGenerator

    r = client.post(f"/api/images/{uploaded[0]}/everything", json=EVERYTHING)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"] == [{"id": 1, "width": W, "height": H}]
    assert body["categories"] == [{"id": 1, "name": "object"}]
    want = SamAutomaticMaskGenerator(sam, **EVERYTHING, output_mode="binary_mask",
                                     progress=False).generate_from_predictor(predictors[0])
    anns = body["annotations"]
    assert len(anns) == len(want) > 1
    for k, (a, w) in enumerate(zip(anns, want)):
        assert a["id"] == k + 1 and a["image_id"] == 1 and a["iscrowd"] == 0
        rle = a["segmentation"]
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        m = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}) > 0
        np.testing.assert_array_equal(m, w["segmentation"])
        assert a["area"] == w["area"] == int(m.sum())
        assert a["bbox"] == w["bbox"] and a["predicted_iou"] == w["predicted_iou"]
    assert body["everything_ms"] > 0


@pytest.mark.parametrize("body, field", [
    (b"{", "body"),
    (b'{"points_per_side": 0}', "points_per_side"),
    (b'{"points_per_side": 65}', "points_per_side"),
    (b'{"points_per_side": 4.5}', "points_per_side"),
    (b'{"pred_iou_thresh": 1.5}', "pred_iou_thresh"),
    (b'{"stability_score_thresh": "high"}', "stability_score_thresh"),
    (b'{"crop_n_layers": 1}', "crop_n_layers"),
])
def test_bad_everything_settings_are_422(client, uploaded, body, field):
    r = client.post(f"/api/images/{uploaded[0]}/everything", content=body,
                    headers={"content-type": "application/json"})
    check_error(r, 422, field)


def test_everything_while_another_runs_is_503_not_queued(client, uploaded, service):
    lock = service._everything_lock
    assert lock.acquire(blocking=False)
    try:
        check_error(client.post(f"/api/images/{uploaded[0]}/everything", json=EVERYTHING),
                    503, "everything", "busy")
    finally:
        lock.release()
    assert client.post(f"/api/images/{uploaded[0]}/everything", json=EVERYTHING).status_code == 200


def test_everything_on_an_unknown_id_is_404(client):
    check_error(client.post("/api/images/0123456789abcdef/everything"), 404, "id")


# ---- refusals -----------------------------------------------------------------------------------


def test_upload_over_the_size_limit_is_413(client):
    big = b"\0" * 2_100_000
    check_error(upload(client, big), 413, "file", "upload too large")

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(30):
            yield b"x" * 100_000

    r = client.post("/api/images", content=chunks(),
                    headers={"content-type": "multipart/form-data; boundary=abc"})
    check_error(r, 413, "file", "upload too large")


def test_images_over_the_pixel_limit_are_refused_before_decoding(client, monkeypatch):
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: decoded.append(1) or real_load(self))
    wide = np.zeros((1001, 1000, 3), np.uint8)  # 1.001 MP > the 1 MP limit
    check_error(upload(client, png_bytes(wide)), 413, "file", "megapixels")
    assert not decoded, "the pixels were decoded before the size check"
    # a decompression bomb: 30000 x 30000 pixels in ~100 KB (Pillow's own guard fires in open)
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 2_000_000
    check_error(upload(client, buf.getvalue()), 413, "file")


def test_bad_uploads_are_400(client):
    check_error(upload(client, b"this is text, not an image\n"), 400, "file", "not an image")
    check_error(upload(client, b""), 400, "file")
    truncated = png_bytes(synthetic_images.make_image(60, 80, seed=1))[:300]
    check_error(upload(client, truncated), 400, "file")
    sixteen = io.BytesIO()
    Image.fromarray(np.zeros((20, 30), np.uint16) + 1000).save(sixteen, format="PNG")
    check_error(upload(client, sixteen.getvalue()), 400, "file", "not supported")
    check_error(client.post("/api/images", data={"other": "x"}), 400, "file")
    check_error(client.post("/api/images", content=b"raw bytes",
                            headers={"content-type": "image/png"}), 400, "file", "multipart")


def test_a_decoder_failing_with_any_error_is_400(client, monkeypatch):
    """Pillow's format plugins can fail on crafted files with struct.error, IndexError, ..."""
    import models.sam.serve.upload as upload_module

    def crash(img):
        raise IndexError("tile extends outside the image")
    monkeypatch.setattr(upload_module, "load_image", crash)
    img = synthetic_images.make_image(40, 50, seed=3)
    check_error(upload(client, png_bytes(img)), 400, "file", "IndexError")


def test_grayscale_and_rgba_uploads_are_converted(client):
    img = synthetic_images.make_image(40, 50, seed=3)
    for mode in ("L", "RGBA"):
        r = upload(client, png_bytes(img, mode))
        assert r.status_code == 201 and r.json()["width"] == 50, r.text


def test_unknown_ids_are_404(client):
    check_error(client.post("/api/images/0123456789abcdef/masks", json={"points": [[1, 1]]}),
                404, "id")
    check_error(client.delete("/api/images/0123456789abcdef"), 404, "id")
    check_error(client.post("/api/images/../../etc/passwd/masks", json={}), 404)


BAD_PROMPTS = {
    "malformed JSON": (b'{"points": [[1, 2', "body"),
    "not an object": (b"[1, 2]", "body"),
    "unknown field": (b'{"points": [[1, 2]], "multi_mask": true}', "multi_mask"),
    "points not a list": (b'{"points": 5}', "points"),
    "point of one number": (b'{"points": [[1]]}', "points[0]"),
    "label 2": (b'{"points": [[1, 2, 1], [3, 4, 2]]}', "points[1]"),
    "string coordinate": (b'{"points": [["1", 2]]}', "points[0]"),
    "bool coordinate": (b'{"points": [[true, 2]]}', "points[0]"),
    "NaN coordinate": (b'{"points": [[NaN, 2]]}', "points[0]"),
    "point outside": (f'{{"points": [[5, 5], [{W + 1}, 5]]}}'.encode(), "points[1]"),
    "negative point": (b'{"points": [[-0.5, 5]]}', "points[0]"),
    "box outside": (f'{{"box": [0, 0, 10, {H + 3}]}}'.encode(), "box"),
    "box inverted": (b'{"box": [50, 10, 20, 30]}', "box"),
    "box of three": (b'{"box": [1, 2, 3]}', "box"),
    "multimask not bool": (b'{"points": [[1, 2]], "multimask": "yes"}', "multimask"),
    "refine not bool": (b'{"points": [[1, 2]], "refine": 1}', "refine"),
    "empty prompt": (b'{"points": [], "box": null}', "points"),
    "too many points": (json.dumps({"points": [[1, 1]] * 100}).encode(), "points"),
    "nested too deeply": (b"[" * 200_000, "body"),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_bad_prompts_are_422_naming_the_field(client, uploaded, case):
    body, field = BAD_PROMPTS[case]
    r = client.post(f"/api/images/{uploaded[1]}/masks", content=body,
                    headers={"content-type": "application/json"})
    check_error(r, 422, field)


def test_oversized_json_bodies_are_413(client, uploaded):
    big = b'{"points": [[1, 2]], "pad": "' + b"x" * 1_100_000 + b'"}'
    check_error(client.post(f"/api/images/{uploaded[0]}/masks", content=big,
                            headers={"content-type": "application/json"}), 413, "body")
    check_error(client.post(f"/api/images/{uploaded[0]}/everything", content=iter([big])),
                413, "body")


def test_a_crashing_request_is_500_and_the_server_lives_on(client, service, uploaded,
                                                           monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(service, "masks_json", boom)
    check_error(client.post(f"/api/images/{uploaded[0]}/masks", json={"points": [[5, 5]]}),
                500, None, "simulated bug")
    monkeypatch.undo()
    r = client.post(f"/api/images/{uploaded[0]}/masks", json={"points": [[5, 5]]})
    assert r.status_code == 200
    assert client.get("/api/health").status_code == 200


def test_delete_forgets_the_image(client, images):
    iid = upload(client, png_bytes(images[0])).json()["id"]
    r = client.delete(f"/api/images/{iid}")
    assert r.status_code == 200 and r.json() == {"deleted": iid}
    check_error(client.post(f"/api/images/{iid}/masks", json={"points": [[5, 5]]}), 404, "id")
    check_error(client.delete(f"/api/images/{iid}"), 404, "id")


# ---- the embedding cache ------------------------------------------------------------------------


def _entry(i, nbytes=4096):
    feats = np.zeros(nbytes // 4 - 4, np.float32)  # + 4*2*2 bytes of refine state
    return ImageEntry(id=f"im{i}", features=feats, original_size=(2, 2), input_size=(2, 2),
                      mask_size=2)


def test_cache_evicts_least_recently_used_by_count_and_by_memory():
    cache = EmbeddingCache(max_items=3, max_bytes=10 * 4096)
    for i in range(3):
        assert cache.add(_entry(i)) == []
    assert cache.get("im0") is not None  # im0 is now the most recent
    assert cache.add(_entry(3)) == ["im1"]
    assert cache.ids() == ["im2", "im0", "im3"]
    mem = EmbeddingCache(max_items=10, max_bytes=3 * 4096)
    for i in range(3):
        mem.add(_entry(i))
    assert mem.nbytes == 3 * 4096
    assert mem.add(_entry(3, nbytes=2 * 4096)) == ["im0", "im1"]
    assert mem.ids() == ["im2", "im3"] and mem.nbytes == 3 * 4096
    assert mem.remove("im2") and not mem.remove("im2") and mem.nbytes == 2 * 4096
    with pytest.raises(ValueError):
        mem.add(_entry(9, nbytes=4 * 4096))
    assert mem.stats()["evictions"] == 2


def test_server_evicts_by_count(sam, images):
    svc = SegmentService(sam, ServeLimits(cache_images=2))
    try:
        c = TestClient(create_app(svc))
        ids = [upload(c, png_bytes(images[i % 2])).json()["id"] for i in range(2)]
        assert c.post(f"/api/images/{ids[0]}/masks", json={"points": [[5, 5]]}).status_code \
            == 200  # ids[0] used last: ids[1] is the one to go
        ids.append(upload(c, png_bytes(images[0])).json()["id"])
        check_error(c.post(f"/api/images/{ids[1]}/masks", json={"points": [[5, 5]]}), 404)
        for i in (0, 2):
            assert c.post(f"/api/images/{ids[i]}/masks",
                          json={"points": [[5, 5]]}).status_code == 200
        h = c.get("/api/health").json()["cache"]
        assert h["images"] == 2 and h["evictions"] == 1
    finally:
        svc.close()


def test_server_evicts_by_memory(sam, images):
    c = sam.config
    one = 4 * c.prompt_embed_dim * c.image_embedding_size ** 2 + 4 * c.mask_input_size ** 2
    svc = SegmentService(sam, ServeLimits(cache_bytes=int(1.5 * one)))
    try:
        client = TestClient(create_app(svc))
        a = upload(client, png_bytes(images[0])).json()["id"]
        b = upload(client, png_bytes(images[1])).json()["id"]
        check_error(client.post(f"/api/images/{a}/masks", json={"points": [[5, 5]]}), 404)
        assert client.post(f"/api/images/{b}/masks", json={"points": [[5, 5]]}).status_code == 200
    finally:
        svc.close()
    with pytest.raises(Exception, match="cannot hold one"):
        SegmentService(sam, ServeLimits(cache_bytes=one - 1))


# ---- concurrency --------------------------------------------------------------------------------


def test_concurrent_clicks_on_two_images_get_their_own_masks(client, uploaded, predictors):
    prompts = [{"points": [[20 + 17 * k, 15 + 9 * k, 1]], "multimask": k % 2 == 0}
               for k in range(6)]
    expected = {(i, k): _predict(predictors[i], prompts[k])[0]
                for i in range(2) for k in range(len(prompts))}
    jobs = [(i, k) for _ in range(2) for i in range(2) for k in range(len(prompts))]

    def click(job):
        i, k = job
        r = client.post(f"/api/images/{uploaded[i]}/masks", json=prompts[k])
        assert r.status_code == 200, r.text
        return job, [decode_mask(m["png"]) for m in r.json()["masks"]]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(click, jobs))
    assert len(results) == len(jobs)
    for (i, k), masks in results:
        want = expected[(i, k)]
        assert len(masks) == len(want)
        for got, w in zip(masks, want):
            np.testing.assert_array_equal(got, w)
    # the two images really give different answers for the same prompt
    assert any(not np.array_equal(expected[(0, k)], expected[(1, k)]) for k in range(6))


def test_a_click_does_not_wait_for_another_images_encoder(client, service, uploaded,
                                                          predictors, images):
    """While the encoder is busy (its lock held), a click on an encoded image is answered."""
    result = {}

    def slow_upload():
        result["upload"] = upload(client, png_bytes(images[1]))

    def click():
        result["click"] = client.post(f"/api/images/{uploaded[0]}/masks", json=PROMPTS[0])

    uploader = threading.Thread(target=slow_upload, daemon=True)
    clicker = threading.Thread(target=click, daemon=True)
    service._encoder_lock.acquire()
    try:
        uploader.start()
        clicker.start()
        clicker.join(timeout=120)
        clicked = not clicker.is_alive()
        upload_waiting = "upload" not in result
    finally:
        service._encoder_lock.release()
        clicker.join(timeout=120)  # no request may outlive the test, pass or fail
        uploader.join(timeout=120)
    assert clicked, "the click waited for the encoder of another image"
    assert upload_waiting, "the upload did not wait for the (busy) encoder"
    r = result["click"]
    assert r.status_code == 200
    masks, _, _ = _predict(predictors[0], PROMPTS[0])
    np.testing.assert_array_equal(decode_mask(r.json()["masks"][0]["png"]), masks[0])
    assert result["upload"].status_code == 201


# ---- pieces -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (37, 53), (64, 64), (5, 8)])
def test_mask_png_round_trips(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    for mask in (rng.random(shape) > 0.5, np.zeros(shape, bool), np.ones(shape, bool)):
        with Image.open(io.BytesIO(mask_png(mask))) as im:
            assert im.size == (shape[1], shape[0]) and im.mode == "1"
            np.testing.assert_array_equal(np.asarray(im), mask)


def test_loopback_detection():
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.org"):
        assert not is_loopback(host)


# ---- the command line ---------------------------------------------------------------------------


def rlx(*args, timeout=120):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def test_serve_bad_options_exit_2_with_one_line(tmp_path, busy_port):
    cases = [
        (["--port", "http"], "malformed --port"),
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--model", "vit_x"], "unknown --model 'vit_x'"),
        (["--checkpoint", str(tmp_path / "none.pth")], "checkpoint not found"),
        (["--max-upload-mb", "-3"], "--max-upload-mb must be positive"),
        (["--cache-images", "two"], "malformed --cache-images"),
        (["--profile", "bogus"], "unknown profile 'bogus'"),
        (["--port", str(busy_port)], "cannot listen on 127.0.0.1"),
    ]
    for args, message in cases:
        r = rlx("serve", "--model", "small", *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rlx serve: error: "), r.stderr
        assert message in lines[0], lines[0]


def test_serve_warns_when_binding_beyond_loopback(busy_port):
    # the port is taken, so the command stops right after the warning: nothing is served
    r = rlx("serve", "--model", "small", "--host", "0.0.0.0", "--port", str(busy_port))
    assert r.returncode == 2
    assert "NO authentication" in r.stderr and "cannot listen on 0.0.0.0" in r.stderr


def test_an_upload_prepares_its_prompt_graphs_image_stage_in_the_background(sam, images,
                                                                           monkeypatch):
    """The newest upload's image-only prompt work runs in the background, so its first
    click runs only the click stage; with RLX_SAM_PREFETCH=0 nothing is started."""
    from models.sam.prompt_graph import CLICK_BUCKET
    from models.sam.serve.prompts import parse_mask_request
    from rlx.runtime import background

    svc = SegmentService(sam)
    try:
        svc.compile_buckets([CLICK_BUCKET])
        click = svc.decoder.buckets[CLICK_BUCKET]
        request = parse_mask_request(b'{"points": [[60, 50, 1]]}', W, H)
        for image in images:
            entry, _ = svc.add_image(image)
            assert background.wait(300)
            assert click._kept is not None and click._keys[0][0] is entry.features
            runs = click.slow_runs
            json.loads(svc.masks_json(entry, request))
            assert click.slow_runs == runs  # the click found the image's stage done
        monkeypatch.setenv("RLX_SAM_PREFETCH", "0")
        entry, _ = svc.add_image(images[0])
        assert background.wait(300)
        assert click._keys[0][0] is not entry.features
    finally:
        svc.close()
