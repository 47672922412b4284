"""``rlx serve``: server-side time per click against ``SamPredictor.predict`` alone.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.bench_serve \\
        --model vit_b --threads 2 --size 1500x2000 --clicks 30 --repeat 5

One process, one compiled model, one image (synthetic, ``--size`` HxW) encoded
once for the predictor and once for the server. Per repeat, interleaved:

* ``predict``: ``SamPredictor.predict`` for every click of the list (bool
  masks at the image size: the work a click needs, nothing sent anywhere);
* ``server``: the same clicks as ``POST /api/images/{id}/masks`` to a real
  uvicorn server on a loopback port (in a thread of this process, sharing the
  compiled model), timed two ways: ``server_side`` is the ``Server-Timing``
  the route reports (request reaching the route -> JSON body with the PNGs
  ready: JSON parsing, validation, prediction, PNG + base64 encoding) and
  ``round_trip`` is what the client sees (adds HTTP, loopback, JSON decode).

The first click of each block is a warm-up and not counted (the prompt
graph's image-side stage re-runs when the embedding changes between the two
systems). Reported: medians over all counted clicks, the spread of the
per-repeat medians, and the ratios to ``predict``; the issue's target is
server_side <= 1.5x predict. Weights are synthetic (the time does not depend
on them). The machine may be shared: the script says how busy it was.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
import warnings


def _parse_size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size must be HxW, got {text!r}") from None
    return h, w


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _start_server(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.05)
    return server, t, f"http://127.0.0.1:{sock.getsockname()[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h", "small"])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="1500x2000", help="image HxW (default 1500x2000)")
    ap.add_argument("--clicks", type=int, default=30, help="clicks per block (default 30)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved blocks per system")
    ap.add_argument("--single", action="store_true", help="one mask per click (default: 3)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args(argv)

    import numpy as np
    import httpx

    from models.sam import SamPredictor, build_sam
    from models.sam.serve import SegmentService, create_app
    from rlx.runtime.profile import resolve_profile
    from tests.support.synthetic_images import make_image
    from PIL import Image
    import io

    h, w = _parse_size(args.size)
    profile = resolve_profile(args.profile).replace(threads=args.threads)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = build_sam(args.model, profile=profile)
    print(f"model {args.model} (synthetic weights), profile {profile.name} "
          f"({profile.backend}), {args.threads} threads: built in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)
    image = make_image(h, w, seed=7)
    predictor = SamPredictor(sam)
    t0 = time.perf_counter()
    predictor.set_image(image)
    print(f"predictor.set_image {h}x{w}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    service = SegmentService(sam)
    service.warm_up()
    server, thread, url = _start_server(create_app(service))
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    client = httpx.Client(timeout=600)
    r = client.post(f"{url}/api/images", files={"file": ("bench.png", buf.getvalue())})
    r.raise_for_status()
    image_id = r.json()["id"]
    print(f"server upload + encode: {r.json()['encode_ms'] / 1e3:.1f} s", file=sys.stderr)

    rng = np.random.default_rng(0)
    clicks = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(args.clicks)]
    multimask = not args.single

    def block_predict():
        out = []
        for k, (x, y) in enumerate([clicks[0]] + clicks):
            t = time.perf_counter()
            predictor.predict(np.array([[x, y]]), np.array([1]), multimask_output=multimask)
            if k:
                out.append((time.perf_counter() - t) * 1e3)
        return out

    parts = {"decode_ms": [], "png_ms": []}

    def block_server():
        side, trip = [], []
        for k, (x, y) in enumerate([clicks[0]] + clicks):
            body = {"points": [[x, y, 1]], "multimask": multimask}
            t = time.perf_counter()
            r = client.post(f"{url}/api/images/{image_id}/masks", json=body)
            r.raise_for_status()
            answer = r.json()
            dt = (time.perf_counter() - t) * 1e3
            if k:
                trip.append(dt)
                for key in parts:
                    parts[key].append(answer[key])
                side.append(float(r.headers["server-timing"].split("dur=")[1]))
        return side, trip

    per = {"predict": [], "server_side": [], "round_trip": []}
    allv = {"predict": [], "server_side": [], "round_trip": []}
    loads = []
    for rep in range(args.repeat):
        loads.append(_loadavg())
        order = (block_predict, block_server) if rep % 2 == 0 else (block_server, block_predict)
        for fn in order:
            res = fn()
            if fn is block_predict:
                per["predict"].append(statistics.median(res))
                allv["predict"] += res
            else:
                side, trip = res
                per["server_side"].append(statistics.median(side))
                per["round_trip"].append(statistics.median(trip))
                allv["server_side"] += side
                allv["round_trip"] += trip
        print(f"repeat {rep + 1}/{args.repeat}: predict {per['predict'][-1]:.1f} ms, "
              f"server-side {per['server_side'][-1]:.1f} ms, round trip "
              f"{per['round_trip'][-1]:.1f} ms (load {loads[-1]:.2f})", file=sys.stderr)
    client.close()
    server.should_exit = True
    thread.join(timeout=10)
    service.close()

    med = {k: statistics.median(v) for k, v in allv.items()}
    spread = {k: (min(v), max(v)) for k, v in per.items()}
    report = {
        "model": args.model, "profile": profile.name, "backend": profile.backend,
        "threads": args.threads, "image": [h, w], "clicks_per_block": args.clicks,
        "repeat": args.repeat, "masks_per_click": 3 if multimask else 1,
        "median_ms": med, "per_repeat_median_ms": per,
        "server_parts_median_ms": {k: statistics.median(v) for k, v in parts.items()},
        "ratio_to_predict": {k: med[k] / med["predict"] for k in ("server_side", "round_trip")},
        "loadavg_1min": loads, "cpu_count": os.cpu_count(),
    }
    print(f"\nSAM {args.model}, {args.threads} threads, {h}x{w} image, "
          f"{report['masks_per_click']} mask(s) per click, {args.clicks} clicks x {args.repeat} "
          "interleaved repeats (medians; [min, max] of the per-repeat medians)")
    for k, label in (("predict", "SamPredictor.predict alone"),
                     ("server_side", "server: HTTP request in -> PNG JSON out"),
                     ("round_trip", "client round trip over loopback")):
        lo, hi = spread[k]
        ratio = "" if k == "predict" else f"  {med[k] / med['predict']:.2f}x predict"
        print(f"  {label:<42} {med[k]:7.1f} ms  [{lo:.1f}, {hi:.1f}]{ratio}")
    print(f"  inside the server: prediction {report['server_parts_median_ms']['decode_ms']:.1f} ms, "
          f"PNG encoding {report['server_parts_median_ms']['png_ms']:.1f} ms (medians)")
    print(f"  1-min load average during the run: {min(loads):.2f}-{max(loads):.2f} "
          f"on {os.cpu_count()} CPUs (other processes share the machine)")
    if args.json:
        from rlx.utils.fs import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
