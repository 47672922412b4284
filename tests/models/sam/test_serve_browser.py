"""``rlx serve`` end to end in a real headless Chromium (Debian's ``chromium``, via Playwright).

A real server process (``rlx serve --model small --port 0``: the tiny test
configuration on synthetic weights, any free loopback port) and a real
browser: the sample image is uploaded through the page's file input, a
click is made on the canvas, and once the overlay is drawn the canvas must
have changed exactly where the server's mask is -- every pixel there is the
50 % blend with the mask colour, every other pixel is untouched. Then
"segment everything" must colour the image, and a screenshot is saved in the
test's temporary folder.

Chromium and Playwright are requirements of this test, not options: if
either is missing the test fails (``.ci/run`` installs Debian's chromium;
Playwright is in the ``[test]`` extra). Playwright drives the system
browser through ``executable_path``; nothing is downloaded.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from playwright.sync_api import sync_playwright  # a missing Playwright fails the test module

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SAMPLE = os.path.join(ROOT, "models", "sam", "assets", "sample.png")
CHROMIUM = os.environ.get("RLX_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TINT = np.array([30, 144, 255], dtype=np.int32)  # app.js's mask colour
START_TIMEOUT = 600  # a cold kernel cache compiles the post-processing kernels first


def _chromium() -> str:
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: the browser test needs Debian's "
                    "chromium package (apt-get install -y chromium), or RLX_TEST_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def server():
    """A running ``rlx serve`` subprocess: yields (url, stderr lines so far)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlx.cli", "serve", "--model", "small", "--profile", "reference",
         "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    err: list = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    found = {}

    def read_url():
        for line in proc.stdout:
            if line.startswith("serving on "):
                found["url"] = line.split()[2]
                return

    reader = threading.Thread(target=read_url, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    if "url" not in found:
        proc.kill()
        pytest.fail(f"rlx serve did not start (exit {proc.poll()}): {''.join(err)}")
    try:
        yield found["url"], err
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _canvas(page, selector="#view") -> np.ndarray:
    """The canvas's pixels (RGB), read losslessly through a PNG data URL."""
    url = page.eval_on_selector(selector, "c => c.toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
        return np.asarray(im.convert("RGB")).astype(np.int32)


def test_click_to_segment_in_chromium(server, tmp_path):
    url, server_err = server
    executable = _chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                    headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page_errors = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            sent = []
            page.on("request", lambda r: sent.append(r.post_data)
                    if r.url.endswith("/masks") else None)

            page.goto(url)
            page.wait_for_function(
                "document.getElementById('model-info').textContent.includes('model small')")
            banner = page.locator("#synthetic")
            assert banner.is_visible() and "SYNTHETIC" in banner.inner_text()

            # upload through the page's own file input; the page encodes, then is ready
            page.set_input_files("#file", SAMPLE)
            page.wait_for_selector("body[data-state='ready']", timeout=120_000)
            image_id = page.get_attribute("#stage", "data-image-id")
            assert image_id
            before = _canvas(page)
            with Image.open(SAMPLE) as im:
                assert before.shape == (im.height, im.width, 3)

            # one click on the canvas at image pixel (300, 200)
            box = page.locator("#marks").bounding_box()
            h, w = before.shape[:2]
            page.mouse.click(box["x"] + 300.5 * box["width"] / w,
                             box["y"] + 200.5 * box["height"] / h)
            page.wait_for_selector("#stage[data-version='1']", timeout=60_000)
            after = _canvas(page)

            # the page's request, replayed: the mask it must have drawn (the best one)
            assert len(sent) == 1
            prompt = json.loads(sent[0])
            assert prompt["points"] == [[pytest.approx(300.5, abs=1.0),
                                         pytest.approx(200.5, abs=1.0), 1]]
            answer = _post_json(f"{url}api/images/{image_id}/masks", prompt)
            png = base64.b64decode(answer["masks"][answer["best"]]["png"])
            with Image.open(io.BytesIO(png)) as im:
                mask = np.asarray(im.convert("L")) > 127
            assert 0 < mask.sum() < mask.size
            changed = (after != before).any(axis=2)
            assert not (changed & ~mask).any(), "canvas changed outside the mask"
            expected = before.copy()
            expected[mask] = (before[mask] + TINT + 1) >> 1
            np.testing.assert_array_equal(after, expected)
            assert changed.sum() >= 0.99 * mask.sum()
            cands = page.locator("#candidates button")
            assert cands.count() == len(answer["masks"]) == 3

            # segment everything: every mask in its own colour (a coarse grid and no
            # thresholds: synthetic weights rarely pass Meta's default IoU / stability bars)
            page.click("#everything-settings summary")
            page.fill("#pps", "8")
            page.fill("#iou-thresh", "0")
            page.fill("#stab-thresh", "0")
            page.fill("#nms-thresh", "1")
            with page.expect_response(lambda r: r.url.endswith("/everything"),
                                      timeout=300_000) as info:
                page.click("#everything")
            everything = info.value.json()
            page.wait_for_selector("#stage[data-version='2']", timeout=60_000)
            found = page.inner_text("#candidates")
            n = len(everything["annotations"])
            assert n > 1 and found == f"{n} objects found", found
            union = np.zeros((h, w), bool)
            for a in everything["annotations"]:
                rle = a["segmentation"]
                union |= mask_utils.decode({"size": rle["size"],
                                            "counts": rle["counts"].encode()}) > 0
            assert 0 < union.sum()
            changed = (_canvas(page) != before).any(axis=2)  # the click's mask is gone, and
            assert not (changed & ~union).any()               # the page's RLE decoding agrees
            assert changed.sum() >= 0.99 * union.sum()

            page.screenshot(path=str(tmp_path / "serve.png"))
            assert os.path.getsize(tmp_path / "serve.png") > 1000
            assert not page_errors, page_errors
        finally:
            browser.close()
    assert "Traceback" not in "".join(server_err), "".join(server_err)
